"""Mask <-> polygon conversion on one slice, in voxel index coordinates.

Polygons are ``(n, 2)`` arrays of (x = column, y = row) indices; a pixel's
centre is at integer coordinates, its edges at half-integers.

* :func:`mask_to_polygons` traces the boundary with marching squares at level
  0.5 on the zero-padded mask (``skimage.measure.find_contours``): every
  vertex lies halfway between a pixel inside and one outside, i.e. on the
  voxel edge, so the polygon encloses exactly the mask's pixel centres.
  Foreground is 8-connected (diagonal neighbours share a contour), holes are
  separate contours. Outer boundaries are counter-clockwise in (x, y) index
  space (positive shoelace area), holes clockwise.
* :func:`polygons_to_mask` fills polygons by the even-odd rule (each polygon's
  interior XOR the others), so holes and islands in holes come back.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from skimage.draw import polygon as fill_polygon
from skimage.measure import find_contours


def signed_area(polygon: np.ndarray) -> float:
    """Shoelace area of a closed polygon ``(n, 2)``; positive when counter-clockwise in (x, y)."""
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _drop_collinear(polygon: np.ndarray) -> np.ndarray:
    """Remove vertices on a straight line between their neighbours (exact: vertices are half-integers)."""
    before = polygon - np.roll(polygon, 1, axis=0)
    after = np.roll(polygon, -1, axis=0) - polygon
    cross = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    keep = np.abs(cross) > 1e-9
    return polygon[keep] if keep.sum() >= 3 else polygon


def mask_to_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """Boundary polygons of a 2D mask ``(rows, columns)`` on the voxel edges.

    Args:
        mask: 2D boolean (or 0/1) array, one slice.

    Returns:
        Closed polygons (last vertex not repeated), each ``(n, 2)`` float
        (x = column, y = row), n >= 4; outer boundaries counter-clockwise,
        hole boundaries clockwise; empty list for an empty mask.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return []
    padded = np.pad(mask, 1).astype(np.float32)
    # positive_orientation="low": counter-clockwise around background in (row, col), which is
    # counter-clockwise around foreground once the axes are swapped to (x, y)
    contours = find_contours(padded, 0.5, fully_connected="high", positive_orientation="low")
    # (row, col) -> (x, y); drop the closing repeat and the padding
    return [np.ascontiguousarray(_drop_collinear(c[:-1, ::-1] - 1.0)) for c in contours]


def polygons_to_mask(polygons: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Fill ``polygons`` (each ``(n, 2)`` as (x, y)) on a ``(rows, columns)`` grid by the even-odd rule.

    A pixel is set when its centre lies inside an odd number of polygons.
    """
    mask = np.zeros(shape, dtype=bool)
    for points in polygons:
        points = np.asarray(points, dtype=float)
        if len(points) < 3:
            continue
        rows, cols = fill_polygon(points[:, 1], points[:, 0], shape=shape)
        mask[rows, cols] ^= True
    return mask
