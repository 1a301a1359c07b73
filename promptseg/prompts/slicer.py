"""Prompts from 3D Slicer markups files (``.mrk.json``), in the physical coordinates they carry.

What becomes what (objects are labelled 1, 2, ... in file order, named after their markup):

* an **ROI** (box) -> a box prompt: the voxels whose centres lie inside the ROI
  (:func:`~promptseg.prompts.world.index_box`; an ROI oblique to the volume gives
  the bounding box of its corners in voxel space). An ROI one slice thick is a box
  on that slice, propagated freely; a thicker one is a 3D box (``box3d``): the box on
  its middle slice, propagation limited to its slices. Parts outside the image are
  clipped, with a note;
* a **Line** -> a line prompt (RECIST long axis) on the slice of its two points;
* a **Fiducial** (point list) -> + points, or - points when the list's name, or the
  point's own label, says so (``background``, ``negative``, ``exclude``, ``outside``,
  ``bg``, ``neg``, or a label starting with ``-``). Without ROIs or lines, all points
  make one object on their (shared) slice; otherwise each point joins the box or line
  on its slice whose box holds it (else the one whose centre is nearest);
* other markup types (angles, curves, planes) are skipped with a note.

Positions are read in the file's ``coordinateSystem`` (``LPS``, the default Slicer
writes, or ``RAS``) and ``coordinateUnits`` (mm or um), and turned into voxel indices
with the volume's origin, spacing and direction (:mod:`promptseg.prompts.world`), so
oblique volumes work too. Control points whose ``positionStatus`` is not ``defined``
are ignored.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import PromptError
from ..volume import Volume
from .model import ObjectPrompt, Point, SlicePrompt, check_unique_labels, make_object
from .world import box_corners, check_space, index_box, one_slice, physical_to_index, to_lps

#: a point list or point label with one of these words holds background (-) points
NEGATIVE_NAME = re.compile(r"(?i)(^|[^a-z])(background|negative|exclude|outside|bg|neg)([^a-z]|$)")


def is_markups(doc: Any) -> bool:
    """True for a decoded Slicer markups document (``{"@schema": ..., "markups": [...]}``)."""
    return isinstance(doc, dict) and isinstance(doc.get("markups"), list) and (
        "markups" in str(doc.get("@schema", "")).lower() or "objects" not in doc)


def _scale(markup: dict, where: str) -> float:
    units = markup.get("coordinateUnits", "mm")
    if isinstance(units, list) and units:
        units = units[0]
    units = str(units).strip().lower()
    if units not in ("mm", "um"):
        raise PromptError(f"{where}: coordinateUnits {units!r}: expected mm or um")
    return 1e-3 if units == "um" else 1.0


def _vector(value, count: int, where: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise PromptError(f"{where}: expected {count} numbers") from None
    if array.size != count or not np.isfinite(array).all():
        raise PromptError(f"{where}: expected {count} finite numbers")
    return array


def _defined_points(markup: dict, where: str) -> list[tuple[np.ndarray, str]]:
    points = markup.get("controlPoints") or []
    if not isinstance(points, list):
        raise PromptError(f"{where}: controlPoints must be a list")
    out = []
    for n, point in enumerate(points):
        if not isinstance(point, dict) or point.get("positionStatus", "defined") != "defined":
            continue
        out.append((_vector(point.get("position"), 3, f"{where}: control point {n}"), str(point.get("label", ""))))
    return out


class _Reader:
    def __init__(self, volume: Volume, source: str) -> None:
        self.volume, self.source = volume, source
        self.notes: list[str] = []
        depth, height, width = volume.shape
        self.limits = ((0, width - 1), (0, height - 1), (0, depth - 1))

    def lps(self, markup: dict, points, where: str) -> np.ndarray:
        space = check_space(markup.get("coordinateSystem", "LPS"))
        if space == "IJK":
            raise PromptError(f"{where}: coordinateSystem must be LPS or RAS")
        return to_lps(np.asarray(points, dtype=float) * _scale(markup, where), space)

    def roi(self, markup: dict, where: str, label: int, name: str) -> ObjectPrompt:
        if "center" in markup:
            center = _vector(markup["center"], 3, f"{where}: center")
        else:
            points = _defined_points(markup, where)
            if not points:
                raise PromptError(f"{where}: the ROI has no center")
            center = points[0][0]
        size = _vector(markup.get("size"), 3, f"{where}: size")
        axes = _vector(markup.get("orientation", np.eye(3).ravel()), 9, f"{where}: orientation").reshape(3, 3)
        corners = self.lps(markup, box_corners(center, np.abs(size), axes), where)
        ranges = index_box(self.volume, corners)
        clipped = tuple((max(lo, a), min(hi, b)) for (lo, hi), (a, b) in zip(ranges, self.limits))
        if any(lo > hi for lo, hi in clipped):
            raise PromptError(f"{where}: the ROI covers no voxel centre of the image (voxels x {ranges[0][0]}..{ranges[0][1]}, "
                              f"y {ranges[1][0]}..{ranges[1][1]}, z {ranges[2][0]}..{ranges[2][1]}; the image has "
                              f"x 0..{self.limits[0][1]}, y 0..{self.limits[1][1]}, z 0..{self.limits[2][1]})")
        if clipped != ranges:
            self.notes.append(f"{where}: the ROI reaches outside the image; clipped to voxels x {clipped[0][0]}..{clipped[0][1]}, "
                              f"y {clipped[1][0]}..{clipped[1][1]}, z {clipped[2][0]}..{clipped[2][1]}")
        (i0, i1), (j0, j1), (k0, k1) = clipped
        if i0 == i1 or j0 == j1:
            raise PromptError(f"{where}: the ROI holds a single row or column of voxels in its slices; draw it wider")
        if k0 == k1:
            return make_object(slice=k0, box=(i0, j0, i1, j1), label=label, name=name)
        return make_object(box3d=(i0, j0, k0, i1, j1, k1), label=label, name=name)

    def line(self, markup: dict, where: str, label: int, name: str) -> ObjectPrompt:
        points = _defined_points(markup, where)
        if len(points) != 2:
            raise PromptError(f"{where}: a line needs 2 defined control points, it has {len(points)}")
        ijk = physical_to_index(self.volume, self.lps(markup, [p for p, _ in points], where))
        z = one_slice(ijk[:, 2], where)
        return make_object(slice=z, line=tuple(float(v) for v in ijk[:, :2].ravel()), label=label, name=name,
                           image_shape=self.volume.shape[1:])

    def points(self, markup: dict, where: str) -> list[tuple[int, Point]]:
        negative_list = bool(NEGATIVE_NAME.search(str(markup.get("name", ""))))
        out = []
        defined = _defined_points(markup, where)
        if not defined:
            return out
        ijk = physical_to_index(self.volume, self.lps(markup, [p for p, _ in defined], where))
        for (_, text), (i, j, k) in zip(defined, ijk):
            z = one_slice([k], f"{where}: point {text or ''}".rstrip())
            negative = negative_list or text.strip().startswith("-") or bool(NEGATIVE_NAME.search(text))
            out.append((z, Point(float(i), float(j), positive=not negative)))
        return out


def _attach(objects: list[ObjectPrompt], points: list[tuple[int, Point]], source: str) -> None:
    for z, point in points:
        candidates = [o for o in objects if z in o.slices]
        if not candidates:
            raise PromptError(f"{source}: a point on slice {z} is on no box or line of the file (their slices: "
                              f"{', '.join(str(o.start_slice) for o in objects)})")

        def distance(obj: ObjectPrompt) -> tuple[int, float]:
            x0, y0, x1, y1 = obj.slices[obj.start_slice].box
            inside = x0 <= point.x <= x1 and y0 <= point.y <= y1
            return (0 if inside else 1, (point.x - (x0 + x1) / 2) ** 2 + (point.y - (y0 + y1) / 2) ** 2)

        target = min(candidates, key=distance)
        sp = target.slices[target.start_slice]
        target.slices[target.start_slice] = SlicePrompt(box=sp.box, points=sp.points + (point,), line=sp.line)


def parse_markups(doc: Any, volume: Volume, source: str = "markups") -> tuple[list[ObjectPrompt], list[str]]:
    """Objects from a decoded Slicer markups document (see the module docstring for the rules).

    Returns:
        ``(objects, notes)``: the objects in voxel indices of ``volume``, and what was
        clipped or skipped.

    Raises:
        PromptError: not a markups document, a malformed markup, nothing usable, or
            points that cannot be placed.
    """
    if not is_markups(doc):
        raise PromptError(f"{source}: not a 3D Slicer markups file (expected {{\"@schema\": ..., \"markups\": [...]}})")
    reader = _Reader(volume, source)
    objects: list[ObjectPrompt] = []
    points: list[tuple[int, Point]] = []
    for n, markup in enumerate(doc["markups"]):
        if not isinstance(markup, dict):
            raise PromptError(f"{source}: markups.{n} is not an object")
        kind = str(markup.get("type", ""))
        name = str(markup.get("name") or "") or None
        where = f"{source}: markups.{n} ({kind}{' ' + repr(name) if name else ''})"
        label = len(objects) + 1
        if kind == "ROI":
            objects.append(reader.roi(markup, where, label, name or f"ROI {label}"))
        elif kind == "Line":
            objects.append(reader.line(markup, where, label, name or f"line {label}"))
        elif kind == "Fiducial":
            points.extend(reader.points(markup, where))
        else:
            reader.notes.append(f"{where}: skipped (promptseg reads ROIs, lines and point lists)")
    if points and objects:
        _attach(objects, points, source)
    elif points:
        z = one_slice([p[0] for p in points], f"{source}: the points")
        if not any(p.positive for _, p in points):
            raise PromptError(f"{source}: only background (-) points; add at least one + point, an ROI or a line")
        objects.append(make_object(slice=z, points=tuple(p for _, p in points), label=1, name="points"))
    if not objects:
        raise PromptError(f"{source}: no ROI, line or point to prompt with")
    check_unique_labels(objects)
    return objects, reader.notes


def load_markups(path, volume: Volume) -> tuple[list[ObjectPrompt], list[str]]:
    """:func:`parse_markups` of a ``.mrk.json`` file."""
    from ..io.jsonfile import read_json

    return parse_markups(read_json(Path(path), "markups file", PromptError), volume, source=str(path))


def write_markups_roi(path, volume: Volume, box3d, name: Optional[str] = "ROI", space: str = "RAS") -> Path:
    """Write a Slicer ROI that covers the voxels of ``box3d`` ``(x0, y0, z0, x1, y1, z1)`` (edges on voxel
    edges, axes along the volume's), as 3D Slicer saves one -- what a user draws around those voxels."""
    from ..io.jsonfile import write_json

    x0, y0, z0, x1, y1, z1 = box3d
    low, high = np.array([x0, y0, z0], float) - 0.5, np.array([x1, y1, z1], float) + 0.5
    center_ijk = (low + high) / 2
    center = volume.index_to_physical(*center_ijk)
    axes = np.asarray(volume.direction, dtype=float)
    size = (high - low) * np.asarray(volume.spacing, dtype=float)
    if check_space(space) == "RAS":
        flip = np.diag([-1.0, -1.0, 1.0])
        center, axes = flip @ center, flip @ axes
    for k in range(3):  # each axis pointing along its dominant positive direction, as Slicer draws boxes
        if axes[int(np.argmax(np.abs(axes[:, k]))), k] < 0:
            axes[:, k] = -axes[:, k]
    center, axes, size = np.round(center, 6), np.round(axes, 9) + 0.0, np.round(size, 6)
    doc = {
        "@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/"
                   "Schema/markups-schema-v1.0.3.json#",
        "markups": [{"type": "ROI", "coordinateSystem": space, "coordinateUnits": "mm", "name": name,
                     "roiType": "Box", "center": [float(v) for v in center],
                     "orientation": [float(v) for v in axes.ravel()], "size": [float(v) for v in size],
                     "controlPoints": [{"id": "1", "label": name, "position": [float(v) for v in center],
                                        "positionStatus": "defined"}]}],
    }
    return write_json(path, doc)
