"""The :class:`Volume`: an image array that carries its geometry.

Conventions (the same as SimpleITK / 3D Slicer):

* ``array`` is indexed ``(z, y, x)`` -- slice, row, column -- or
  ``(z, y, x, c)`` for colour images (``c == 3``, RGB).
* ``spacing`` and ``origin`` are in **physical (x, y, z) order**, millimetres,
  exactly as ``SimpleITK.Image.GetSpacing()`` / ``GetOrigin()`` return them.
  Use :attr:`Volume.spacing_zyx` when you need spacing in array-axis order
  (for example for distance transforms on ``array``).
* ``direction`` is the 3x3 direction-cosine matrix whose *columns* are the
  physical directions of the x, y and z voxel axes (ITK convention; ITK's flat
  tuple is this matrix in row-major order).

A 2D image is a volume with one slice (``array.shape[0] == 1``).

A volume read from DICOM carries its provenance in :attr:`Volume.dicom`
(:class:`promptseg.io.dicom.DicomProvenance`: UIDs, patient/study, each slice's
SOP Instance UID and position); :meth:`Volume.with_array` keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Optional

import numpy as np

from .errors import GeometryError

#: what a volume's array holds
KINDS = ("image", "labels")

if TYPE_CHECKING:
    from .io.dicom.provenance import DicomProvenance


def _as_triplet(values, name: str) -> tuple[float, float, float]:
    arr = np.asarray(values, dtype=float).ravel()
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise GeometryError(f"{name} must be 3 finite numbers (x, y, z), got {values!r}")
    return (float(arr[0]), float(arr[1]), float(arr[2]))


@dataclass
class Volume:
    """An image array ``(z, y, x[, c])`` with spacing, origin and direction.

    Args:
        array: voxel data, ``(z, y, x)`` or ``(z, y, x, 3)``.
        spacing: voxel size in mm, ``(x, y, z)`` order.
        origin: physical position of voxel ``(0, 0, 0)`` in mm, ``(x, y, z)``.
        direction: 3x3 direction cosines (columns = voxel axes x, y, z).
        modality: ``"CT"``, ``"MR"``, ... when known (DICOM Modality), else None.
        metadata: free-form extra information (series UID, source path, ...).
        kind: ``"image"`` (intensities) or ``"labels"`` (an integer label map: each
            value names a structure; never interpolated or intensity-normalised).
        dicom: DICOM provenance of the grid (one SOP Instance UID and position
            per slice, in array z order), or None when not read from DICOM.
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    modality: Optional[str] = None
    metadata: dict = field(default_factory=dict)
    kind: str = "image"
    dicom: Optional["DicomProvenance"] = None

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        if self.array.ndim == 4 and self.array.shape[-1] != 3:
            raise GeometryError(
                f"a 4D volume must be (z, y, x, 3) RGB, got shape {self.array.shape}"
            )
        if self.array.ndim not in (3, 4):
            raise GeometryError(
                f"a volume array must be (z, y, x) or (z, y, x, 3), got shape {self.array.shape}"
            )
        self.spacing = _as_triplet(self.spacing, "spacing")
        if min(self.spacing) <= 0:
            raise GeometryError(f"spacing must be positive, got {self.spacing}")
        self.origin = _as_triplet(self.origin, "origin")
        direction = np.asarray(self.direction, dtype=float)
        if direction.size != 9:
            raise GeometryError(f"direction must be 3x3, got {direction.shape}")
        self.direction = direction.reshape(3, 3)
        if self.modality is not None:
            self.modality = str(self.modality).upper()
        if self.kind not in KINDS:
            raise GeometryError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.kind == "labels" and self.array.dtype.kind not in "iub":
            raise GeometryError(f"a label map holds integers, got dtype {self.array.dtype}")

    # -- shape helpers ---------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """``(z, y, x)`` -- number of slices, rows, columns."""
        return tuple(int(s) for s in self.array.shape[:3])  # type: ignore[return-value]

    @property
    def num_slices(self) -> int:
        return int(self.array.shape[0])

    @property
    def is_2d(self) -> bool:
        return self.num_slices == 1

    @property
    def is_rgb(self) -> bool:
        return self.array.ndim == 4

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        """Spacing in array-axis order ``(z, y, x)``, mm."""
        return (self.spacing[2], self.spacing[1], self.spacing[0])

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (``spacing`` x * y * z mm^3 / 1000)."""
        return self.spacing[0] * self.spacing[1] * self.spacing[2] / 1000.0

    # -- geometry ---------------------------------------------------------
    def same_grid(self, other: "Volume", tol: float = 1e-4) -> bool:
        """True if ``other`` has the same shape, spacing, origin and direction."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, rtol=0, atol=tol)
            and np.allclose(self.origin, other.origin, rtol=0, atol=tol)
            and np.allclose(self.direction, other.direction, rtol=0, atol=tol)
        )

    def index_to_physical(self, x: float, y: float, z: float) -> np.ndarray:
        """Physical position (mm, x/y/z) of the voxel index ``(x=col, y=row, z=slice)``."""
        ijk = np.array([x, y, z], dtype=float) * np.array(self.spacing)
        return np.array(self.origin) + self.direction @ ijk

    def with_array(self, array: np.ndarray, **changes) -> "Volume":
        """A new volume on this grid holding ``array`` (same z, y, x shape); ``changes``
        replace other fields (e.g. ``kind="labels"``, ``modality=None``)."""
        array = np.asarray(array)
        if tuple(array.shape[:3]) != self.shape:
            raise GeometryError(
                f"array of shape {array.shape} does not fit a volume of shape {self.shape}"
            )
        return replace(self, array=array, metadata=dict(self.metadata), **changes)

    def describe(self) -> str:
        z, y, x = self.shape
        sx, sy, sz = self.spacing
        return (
            f"{x} x {y} x {z} voxels (x, y, z), spacing {sx:.4g} x {sy:.4g} x {sz:.4g} mm, "
            f"modality {self.modality or 'unknown'}"
        )
