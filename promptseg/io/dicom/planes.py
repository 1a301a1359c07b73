"""Slice planes of a DICOM series: voxel index <-> patient coordinates, slice by slice.

Contours live in patient coordinates (mm, LPS). A point at column ``x`` and
row ``y`` of slice ``z`` is::

    P = IPP[z] + x * column_spacing * row_direction + y * row_spacing * column_direction

with ``row_direction`` = Image Orientation (Patient)[0:3] (the direction of
increasing column index), ``column_direction`` = IOP[3:6], and Pixel Spacing =
``[row_spacing, column_spacing]`` (DICOM stores the row spacing, the y step,
first). Each slice uses its own Image Position (Patient), so a series with
uneven slice spacing is mapped as DICOM describes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Optional

import numpy as np

from ...errors import DicomError
from ...volume import Volume
from .provenance import DicomProvenance

#: Largest in-plane spacing (relative) or direction-cosine difference between a volume and its provenance.
_GRID_TOLERANCE = 1e-3


@dataclass(frozen=True)
class SlicePlanes:
    """The planes of a series' slices, in array z order.

    Attributes:
        positions: ``(n, 3)`` Image Position (Patient) per slice, mm.
        row_direction: unit vector of increasing column index (x).
        column_direction: unit vector of increasing row index (y).
        spacing_xy: (column spacing, row spacing), mm -- x then y.
    """

    positions: np.ndarray
    row_direction: np.ndarray
    column_direction: np.ndarray
    spacing_xy: tuple[float, float]

    @cached_property
    def normal(self) -> np.ndarray:
        """Unit normal of the slices (row direction x column direction)."""
        normal = np.cross(self.row_direction, self.column_direction)
        return normal / np.linalg.norm(normal)

    @cached_property
    def depths(self) -> np.ndarray:
        """Each slice's position along :attr:`normal`, mm."""
        return self.positions @ self.normal

    @cached_property
    def slice_gap(self) -> float:
        """Smallest distance between neighbouring slices along the normal (1 mm for one slice)."""
        depths = np.sort(self.depths)
        gaps = np.diff(depths)
        gaps = gaps[gaps > 1e-6]
        return float(gaps.min()) if gaps.size else 1.0

    def to_patient(self, z: int, xy: np.ndarray) -> np.ndarray:
        """Patient coordinates ``(n, 3)`` of in-plane indices ``xy`` ``(n, 2)`` = (column, row) on slice ``z``."""
        xy = np.asarray(xy, dtype=float)
        return (
            self.positions[z]
            + np.outer(xy[:, 0] * self.spacing_xy[0], self.row_direction)
            + np.outer(xy[:, 1] * self.spacing_xy[1], self.column_direction)
        )

    @cached_property
    def _inverse(self) -> np.ndarray:
        """``(2, 3)`` exact inverse of the in-plane mapping, even for slightly non-orthogonal stored cosines."""
        basis = np.stack([self.row_direction * self.spacing_xy[0], self.column_direction * self.spacing_xy[1]], axis=1)
        return np.linalg.pinv(basis)

    def to_index(self, points: np.ndarray) -> tuple[Optional[int], np.ndarray, float]:
        """Locate planar patient ``points`` ``(n, 3)`` on the slices.

        Returns:
            ``(z, xy, distance)``: the slice whose plane is nearest (None when it
            is farther than a tenth of the slice gap, at least 0.01 mm), in-plane
            indices ``(n, 2)`` (column, row) on that slice, and the largest
            distance of a point from that plane in mm.
        """
        points = np.asarray(points, dtype=float).reshape(-1, 3)
        offsets = points @ self.normal
        depths = self.depths
        z = int(np.argmin(np.abs(depths - offsets.mean())))
        distance = float(np.abs(offsets - depths[z]).max())
        xy = (points - self.positions[z]) @ self._inverse.T
        tolerance = max(0.01, 0.1 * self.slice_gap)
        return (z if distance <= tolerance else None), xy, distance


def _planes_from(provenance: DicomProvenance) -> SlicePlanes:
    orientation = np.asarray(provenance.image_orientation, dtype=float)
    row_direction = orientation[:3] / np.linalg.norm(orientation[:3])
    column_direction = orientation[3:] / np.linalg.norm(orientation[3:])
    row_spacing, column_spacing = provenance.pixel_spacing
    return SlicePlanes(
        positions=np.asarray(provenance.image_positions, dtype=float),
        row_direction=row_direction,
        column_direction=column_direction,
        spacing_xy=(float(column_spacing), float(row_spacing)),
    )


def slice_planes(reference: Volume, purpose: str = "this") -> SlicePlanes:
    """The slice planes of ``reference``, a volume read from a DICOM series.

    Args:
        reference: volume with :attr:`~promptseg.volume.Volume.dicom` provenance.
        purpose: what needs it, for the error message (e.g. ``"an RTSTRUCT"``).

    Raises:
        DicomError: no provenance, or the volume's grid no longer matches its
            DICOM slices (resampled, cropped or reoriented after reading).
    """
    provenance = reference.dicom
    if provenance is None:
        raise DicomError(
            f"{purpose} needs the DICOM series it was segmented on as reference "
            "(a volume read from a DICOM folder or file, not NIfTI/NRRD)"
        )
    if provenance.num_slices != reference.num_slices:
        raise DicomError(
            f"the reference volume has {reference.num_slices} slices but its DICOM provenance "
            f"{provenance.num_slices}: it was changed after reading"
        )
    planes = _planes_from(provenance)
    spacing_ok = np.allclose(planes.spacing_xy, reference.spacing[:2], rtol=_GRID_TOLERANCE, atol=1e-6)
    axes_ok = np.allclose(planes.row_direction, reference.direction[:, 0], atol=_GRID_TOLERANCE) and np.allclose(
        planes.column_direction, reference.direction[:, 1], atol=_GRID_TOLERANCE
    )
    if not (spacing_ok and axes_ok):
        raise DicomError(
            "the reference volume's grid no longer matches its DICOM slices (resampled or reoriented "
            "after reading): use the volume as read from the series"
        )
    return planes
