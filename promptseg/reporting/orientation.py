"""Radiological display orientation of a slice, from the volume's direction (as 3D Slicer and PACS show it).

A slice is the array's ``(y, x)`` plane; how it appears on screen depends on
where its voxel axes point in the patient (LPS, ITK's physical space), not on
the array order:

* axial slices (normal along S/I): the patient's right on the screen's left,
  anterior at the top;
* coronal slices (normal along A/P): the patient's right on the left, superior at the top;
* sagittal slices (normal along L/R): anterior on the left, superior at the top.

:class:`DisplayOrientation` turns a slice array and prompt coordinates into
screen order (at most a transpose and two flips; oblique directions use the
nearest of these).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

#: screen-right and screen-down as LPS vectors, by the physical axis closest to the slice normal
_SCREEN = {
    2: ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),   # axial: right -> +L, down -> +P
    1: ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),  # coronal: right -> +L, down -> I
    0: ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),  # sagittal: right -> +P, down -> I
}
_LETTERS = ("R", "L", "A", "P", "I", "S")  # -x, +x, -y, +y, -z, +z in LPS


def _letter(vector: np.ndarray) -> str:
    axis = int(np.argmax(np.abs(vector)))
    return _LETTERS[2 * axis + int(vector[axis] > 0)]


@dataclass(frozen=True)
class DisplayOrientation:
    """How to show a ``(H, W)`` slice in radiological orientation.

    Attributes:
        transpose: screen columns follow the array's rows (y) instead of its columns (x).
        flip_rows: after the transpose, the screen's rows run opposite to the array's.
        flip_cols: likewise for columns.
        left, right, top, bottom: the patient directions at the screen's edges ("R", "A", ...).
    """

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False
    left: str = ""
    right: str = ""
    top: str = ""
    bottom: str = ""

    @classmethod
    def of(cls, direction: Optional[Sequence]) -> "DisplayOrientation":
        """The orientation for a volume's 3x3 ``direction`` (columns: the x, y, z voxel axes in LPS);
        ``None`` keeps the array order."""
        if direction is None:
            return cls()
        d = np.asarray(direction, dtype=float).reshape(3, 3)
        axis_i, axis_j, normal = d[:, 0], d[:, 1], d[:, 2]
        right, down = (np.array(v) for v in _SCREEN[int(np.argmax(np.abs(normal)))])
        transpose = abs(axis_j @ right) > abs(axis_i @ right)
        across, along = (axis_j, axis_i) if transpose else (axis_i, axis_j)  # screen columns, screen rows
        flip_cols, flip_rows = bool(across @ right < 0), bool(along @ down < 0)
        screen_right = across * (-1 if flip_cols else 1)
        screen_down = along * (-1 if flip_rows else 1)
        return cls(bool(transpose), flip_rows, flip_cols, _letter(-screen_right), _letter(screen_right),
                   _letter(-screen_down), _letter(screen_down))

    @property
    def is_identity(self) -> bool:
        return not (self.transpose or self.flip_rows or self.flip_cols)

    def image(self, array: np.ndarray) -> np.ndarray:
        """A ``(H, W[, C])`` slice in screen order."""
        out = np.swapaxes(array, 0, 1) if self.transpose else array
        if self.flip_rows:
            out = out[::-1]
        if self.flip_cols:
            out = out[:, ::-1]
        return out

    def point(self, x: float, y: float, shape: tuple[int, int]) -> tuple[float, float]:
        """Screen ``(column, row)`` of the array position column ``x``, row ``y`` on a ``(H, W)`` slice."""
        height, width = shape
        u, v = (y, x) if self.transpose else (x, y)
        w, h = (height, width) if self.transpose else (width, height)
        return (w - 1 - u if self.flip_cols else u, h - 1 - v if self.flip_rows else v)

    def box(self, box: Sequence[float], shape: tuple[int, int]) -> tuple[float, float, float, float]:
        """A box ``(x0, y0, x1, y1)`` in screen coordinates (still ``x0 < x1``, ``y0 < y1``)."""
        (u0, v0), (u1, v1) = self.point(box[0], box[1], shape), self.point(box[2], box[3], shape)
        return (min(u0, u1), min(v0, v1), max(u0, u1), max(v0, v1))
