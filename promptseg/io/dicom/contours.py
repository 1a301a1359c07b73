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
* :func:`polygons_to_mask` fills polygons by the even-odd rule (a voxel centre
  inside an odd number of polygons is set), so holes and islands in holes come back.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
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

    A pixel is set when its centre lies inside an odd number of polygons. Scanline
    fill over all polygons of the slice at once: each pixel-centre row is cut by
    every edge (half-open in y, so a vertex on the row counts once), the crossings
    are sorted and the centres between crossing 1 and 2, 3 and 4, ... are set.
    ``skimage.draw.polygon`` tests every pixel of the bounding box against every
    edge, which takes minutes on a body outline; this is linear in rows x edges.
    """
    rows, columns = shape
    mask = np.zeros(shape, dtype=bool)
    closed = [np.asarray(p, dtype=float) for p in polygons if len(p) >= 3]
    if not closed:
        return mask
    starts = np.concatenate(closed)
    ends = np.concatenate([np.roll(p, -1, axis=0) for p in closed])
    low, high = np.minimum(starts[:, 1], ends[:, 1]), np.maximum(starts[:, 1], ends[:, 1])
    first = np.clip(np.ceil(low), 0, rows).astype(np.int64)   # rows j with low <= j < high
    last = np.clip(np.ceil(high), 0, rows).astype(np.int64)
    counts = np.maximum(last - first, 0)
    if not counts.sum():
        return mask
    edge = np.repeat(np.arange(len(starts)), counts)
    row = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + first[edge]
    (x0, y0), (x1, y1) = starts[edge].T, ends[edge].T
    x = x0 + (row - y0) * (x1 - x0) / (y1 - y0)
    order = np.lexsort((x, row))
    row, x = row[order], x[order]
    # crossings pair up within each row (a closed polygon crosses a line an even number of times)
    begin, end = row[0::2], row[1::2]
    if begin.shape != end.shape or np.any(begin != end):
        raise ValueError("unclosed polygon: odd number of crossings on a row")
    start_col = np.clip(np.ceil(x[0::2]), 0, columns).astype(np.int64)  # centres c with x_a <= c < x_b
    stop_col = np.clip(np.ceil(x[1::2]), 0, columns).astype(np.int64)
    steps = np.zeros((rows, columns + 1), dtype=np.int32)
    np.add.at(steps, (begin, start_col), 1)
    np.add.at(steps, (begin, stop_col), -1)
    mask[:] = np.cumsum(steps, axis=1)[:, :columns] > 0
    return mask
