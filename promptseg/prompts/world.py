"""Prompts in physical coordinates (RAS or LPS, mm) turned into voxel indices with the volume's geometry.

Physical space is the patient's, in millimetres: LPS (x to the patient's Left,
y Posterior, z Superior) as DICOM and ITK use, or RAS (Right, Anterior, Superior)
as 3D Slicer shows and NIfTI tools use; RAS = LPS with x and y negated. A voxel
index ``(i, j, k)`` (column, row, slice) sits at ``origin + direction @ (spacing * ijk)``
(:meth:`~promptseg.volume.Volume.index_to_physical`), so a physical point ``p`` is
at ``ijk = (direction * spacing)^-1 (p - origin)``, continuous. The inverse works for
oblique (non axis-aligned) directions too.

A box or ROI given in physical space covers the voxels whose *centres* lie
inside it (:func:`voxel_range`): a box drawn on voxel edges, as 3D Slicer's ROI
snaps to them, gives back exactly those voxels.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..errors import PromptError
from ..volume import Volume

#: names of the spaces a prompt may be given in
SPACES = ("IJK", "LPS", "RAS")
#: slack (voxels) when deciding which voxel centres a box holds and whether points share a slice
_EPSILON = 1e-4


def check_space(space: str) -> str:
    """``"ras"`` -> ``"RAS"``; anything but IJK / LPS / RAS is a :class:`PromptError`."""
    name = str(space).strip().upper()
    if name not in SPACES:
        raise PromptError(f"space {space!r}: use one of {', '.join(SPACES)}")
    return name


def to_lps(points, space: str) -> np.ndarray:
    """``(N, 3)`` physical points of ``space`` (``"LPS"`` or ``"RAS"``) as LPS, float."""
    pts = np.asarray(points, dtype=float).reshape(-1, 3)
    if not np.isfinite(pts).all():
        raise PromptError("a physical coordinate is not a finite number")
    if check_space(space) == "RAS":
        pts = pts * np.array([-1.0, -1.0, 1.0])
    return pts


def physical_to_index(volume: Volume, points_lps) -> np.ndarray:
    """``(N, 3)`` continuous voxel indices ``(i, j, k)`` = (column, row, slice) of LPS points in mm."""
    pts = np.asarray(points_lps, dtype=float).reshape(-1, 3)
    matrix = np.asarray(volume.direction, dtype=float) @ np.diag(volume.spacing)
    try:
        inverse = np.linalg.inv(matrix)
    except np.linalg.LinAlgError:
        raise PromptError("the volume's direction matrix is singular: physical prompts cannot be placed") from None
    return (pts - np.asarray(volume.origin, dtype=float)) @ inverse.T


def world_to_index(volume: Volume, points, space: str) -> np.ndarray:
    """:func:`physical_to_index` of points given in ``space`` (``"IJK"`` passes them through)."""
    if check_space(space) == "IJK":
        return np.asarray(points, dtype=float).reshape(-1, 3)
    return physical_to_index(volume, to_lps(points, space))


def voxel_range(low: float, high: float) -> tuple[int, int]:
    """Indices of the voxel centres inside ``[low, high]`` (continuous index bounds)."""
    first, last = math.ceil(low - _EPSILON), math.floor(high + _EPSILON)
    return first, last


def one_slice(ks: Sequence[float], what: str) -> int:
    """The slice of points that must lie on one slice (within half a slice of its centre)."""
    ks = np.asarray(ks, dtype=float)
    z = int(round(float(ks.mean())))
    if np.abs(ks - z).max() > 0.5 + _EPSILON:
        raise PromptError(f"{what} spans slices {ks.min():.2f} to {ks.max():.2f} (voxel index k): "
                          "its points must lie on one slice")
    return z


def box_corners(center: Sequence[float], size: Sequence[float], axes: np.ndarray) -> np.ndarray:
    """The 8 corners ``(8, 3)`` of a box with ``center``, edge lengths ``size`` along the columns of ``axes``."""
    center, half = np.asarray(center, dtype=float), np.asarray(size, dtype=float) / 2.0
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
    return center + (signs * half) @ np.asarray(axes, dtype=float).T


def index_box(volume: Volume, corners_lps: np.ndarray) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """``((i0, i1), (j0, j1), (k0, k1))``: the voxel ranges whose centres lie inside the index-space
    bounding box of physical corners (exact for a box aligned with the volume's axes)."""
    ijk = physical_to_index(volume, corners_lps)
    low, high = ijk.min(axis=0), ijk.max(axis=0)
    return tuple(voxel_range(lo, hi) for lo, hi in zip(low, high))  # type: ignore[return-value]
