"""Prompts: boxes, +/- points and line markers, in voxel indices.

Coordinates follow 3D Slicer's IJK voxel indices: ``x`` = column, ``y`` = row,
``z`` = slice (the first array axis). Boxes are ``(x0, y0, x1, y1)`` with
``x0 < x1`` and ``y0 < y1``, corners inclusive (a box drawn tightly around a
mask is ``(min col, min row, max col, max row)``).

An :class:`ObjectPrompt` describes one object to segment, with a label value
and a name. It holds one of:

* a prompt on one slice (box, points, line, or box + points): 2D segmentation
  of that slice, or 3D propagation up and down from it;
* boxes on several *key slices*: boxes are linearly interpolated on the slices
  between them (the MedSAM annotation workflow) and every slice in the range
  is segmented;
* a 3D box ``(x0, y0, z0, x1, y1, z1)`` (the LiteMedSAM challenge format):
  the 2D box on the middle slice, propagation limited to ``z0..z1``.

Text forms (``"x0,y0,x1,y1"``, ``"Z:x0,y0,x1,y1"``) are parsed by
:mod:`promptseg.prompts.parse`; the JSON prompt file (``docs/prompts.md``) by
:mod:`promptseg.prompts.file`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np

from ..errors import PromptError

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Point:
    """A click at column ``x``, row ``y``; ``positive`` False marks background."""

    x: float
    y: float
    positive: bool = True


@dataclass
class SlicePrompt:
    """Everything prompted on one slice: a box and/or points.

    ``line`` keeps the line marker ``(x0, y0, x1, y1)`` a box was made from
    (:func:`line_to_box`), for drawing and provenance; the models see the box.
    """

    box: Optional[Box] = None
    points: tuple[Point, ...] = ()
    line: Optional[tuple[float, float, float, float]] = None

    def point_arrays(self) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        """``(N, 2)`` float coordinates and ``(N,)`` int labels, or ``(None, None)``."""
        if not self.points:
            return None, None
        coords = np.array([[p.x, p.y] for p in self.points], dtype=np.float32)
        labels = np.array([1 if p.positive else 0 for p in self.points], dtype=np.int64)
        return coords, labels


@dataclass
class ObjectPrompt:
    """One object: where it is prompted, its label value and name.

    Attributes:
        slices: ``{z: SlicePrompt}``. One entry = a single-slice prompt; several
            entries (boxes only) = key-slice mode.
        label: value written into the label map (1..65535).
        name: human-readable name ("tumour", "liver", ...).
        z_range: ``(z0, z1)`` inclusive; when set, 3D propagation covers exactly
            this range and the automatic stop rule is off.
    """

    slices: dict[int, SlicePrompt]
    label: int = 1
    name: Optional[str] = None
    z_range: Optional[tuple[int, int]] = None

    @property
    def is_key_slices(self) -> bool:
        return len(self.slices) > 1

    @property
    def start_slice(self) -> int:
        """The slice propagation starts from (the only / the first key slice)."""
        return min(self.slices)

    @property
    def display_name(self) -> str:
        return self.name or f"object {self.label}"


def check_box_order(box: Sequence[float]) -> Box:
    x0, y0, x1, y1 = (float(v) for v in box)
    if not x0 < x1:
        raise PromptError(f"box {_fmt(box)}: needs x0 < x1")
    if not y0 < y1:
        raise PromptError(f"box {_fmt(box)}: needs y0 < y1")
    return (x0, y0, x1, y1)


def _fmt(values: Iterable[float]) -> str:
    return ",".join(f"{v:g}" for v in values)


# ---------------------------------------------------------------------------
# conversions
# ---------------------------------------------------------------------------
def line_to_box(line: Sequence[float]) -> Box:
    """Box for a line marker drawn across an object (its longest diameter).

    The object is assumed to fit the circle that has the line as diameter
    (RECIST-style long axis), so the box is that circle's bounding square,
    centred on the line's midpoint with side = line length.
    """
    x0, y0, x1, y1 = (float(v) for v in line)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = math.hypot(x1 - x0, y1 - y0) / 2
    return (cx - half, cy - half, cx + half, cy + half)


def clip_box(box: Sequence[float], shape: tuple[int, int]) -> Box:
    """Clip a box to a ``(H, W)`` slice (used for boxes derived from lines)."""
    height, width = shape
    x0, y0, x1, y1 = box
    return (max(0.0, x0), max(0.0, y0), min(width - 1.0, x1), min(height - 1.0, y1))


def box_from_mask(mask: np.ndarray) -> Box:
    """Tight box ``(min col, min row, max col, max row)`` of a non-empty 2D mask."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise PromptError("cannot make a box from an empty mask")
    return (float(cols.min()), float(rows.min()), float(cols.max()), float(rows.max()))


def interpolate_key_boxes(keys: dict[int, Box]) -> dict[int, Box]:
    """Boxes on every slice between the first and last key slice, linearly interpolated."""
    zs = sorted(keys)
    out: dict[int, Box] = {}
    for z_lo, z_hi in zip(zs[:-1], zs[1:]):
        lo, hi = np.array(keys[z_lo]), np.array(keys[z_hi])
        for z in range(z_lo, z_hi + 1):
            t = (z - z_lo) / (z_hi - z_lo)
            out[z] = tuple(float(v) for v in (1 - t) * lo + t * hi)  # type: ignore[assignment]
    if len(zs) == 1:
        out[zs[0]] = keys[zs[0]]
    return out


# ---------------------------------------------------------------------------
# validation against an image
# ---------------------------------------------------------------------------
def validate(prompt: ObjectPrompt, shape: tuple[int, int, int]) -> None:
    """Raise :class:`PromptError` unless every part of ``prompt`` lies in a ``(Z, H, W)`` volume."""
    depth, height, width = shape
    who = prompt.display_name
    if not 1 <= prompt.label <= 65535:
        raise PromptError(f"{who}: label must be in 1..65535, got {prompt.label}")
    if not prompt.slices:
        raise PromptError(f"{who}: no prompt given")
    for z, sp in prompt.slices.items():
        if not 0 <= z < depth:
            raise PromptError(f"{who}: slice {z} is outside the image (slices 0..{depth - 1})")
        if sp.box is None and not sp.points:
            raise PromptError(f"{who}: slice {z} has neither a box nor points")
        if sp.box is not None:
            x0, y0, x1, y1 = check_box_order(sp.box)
            if x0 < 0 or y0 < 0 or x1 > width - 1 or y1 > height - 1:
                raise PromptError(
                    f"{who}: box {_fmt(sp.box)} on slice {z} is outside the image "
                    f"(x 0..{width - 1}, y 0..{height - 1})"
                )
        for p in sp.points:
            if not (0 <= p.x <= width - 1 and 0 <= p.y <= height - 1):
                raise PromptError(
                    f"{who}: point {p.x:g},{p.y:g} on slice {z} is outside the image "
                    f"(x 0..{width - 1}, y 0..{height - 1})"
                )
    if prompt.is_key_slices and any(sp.box is None or sp.points for sp in prompt.slices.values()):
        raise PromptError(f"{who}: key-slice mode takes one box per key slice and no points")
    if prompt.z_range is not None:
        z0, z1 = prompt.z_range
        if not (0 <= z0 <= z1 < depth):
            raise PromptError(f"{who}: z-range {z0},{z1} is outside the image (slices 0..{depth - 1})")
        if not all(z0 <= z <= z1 for z in prompt.slices):
            raise PromptError(f"{who}: the prompted slice lies outside its z-range {z0},{z1}")


#: how far (voxels) a box may reach past the image's edge and be clipped instead of refused: ``x1 = width``
#: is the edge of the last column, a natural way to say "to the edge"
EDGE_TOLERANCE = 1.0


def fit_to_image(prompt: ObjectPrompt, shape: tuple[int, int, int]) -> tuple[ObjectPrompt, list[str]]:
    """Clip boxes that reach at most :data:`EDGE_TOLERANCE` voxels past the image's edge.

    Args:
        prompt: the object.
        shape: ``(Z, H, W)`` of the volume.

    Returns:
        ``(prompt, notes)``: the prompt itself when nothing changed, else a copy
        with clipped boxes, and one note per clipped box. Boxes further outside
        are left for :func:`validate` to refuse.
    """
    _, height, width = shape
    notes: list[str] = []
    slices = {}
    for z, sp in prompt.slices.items():
        box = sp.box
        if box is not None:
            x0, y0, x1, y1 = box
            inside = x0 >= 0 and y0 >= 0 and x1 <= width - 1 and y1 <= height - 1
            near = (x0 >= -EDGE_TOLERANCE and y0 >= -EDGE_TOLERANCE and x1 <= width - 1 + EDGE_TOLERANCE
                    and y1 <= height - 1 + EDGE_TOLERANCE)
            if not inside and near:
                clipped = clip_box(box, (height, width))
                if clipped[0] < clipped[2] and clipped[1] < clipped[3]:
                    notes.append(f"{prompt.display_name}: box {_fmt(box)} on slice {z} reaches past the image's edge; "
                                 f"clipped to {_fmt(clipped)} (x 0..{width - 1}, y 0..{height - 1})")
                    box = clipped
        slices[z] = SlicePrompt(box=box, points=sp.points, line=sp.line)
    if not notes:
        return prompt, notes
    return ObjectPrompt(slices, label=prompt.label, name=prompt.name, z_range=prompt.z_range), notes


def check_unique_labels(prompts: Sequence[ObjectPrompt]) -> None:
    seen: dict[int, str] = {}
    for p in prompts:
        if p.label in seen:
            raise PromptError(
                f"label {p.label} is used by both {seen[p.label]!r} and {p.display_name!r}; "
                "give each object its own label"
            )
        seen[p.label] = p.display_name


# ---------------------------------------------------------------------------
# building prompts
# ---------------------------------------------------------------------------
def make_object(
    *,
    slice: Optional[int] = None,
    box: Optional[Sequence[float]] = None,
    points: Sequence[Point] = (),
    line: Optional[Sequence[float]] = None,
    box3d: Optional[Sequence[float]] = None,
    key_boxes: Optional[dict[int, Sequence[float]]] = None,
    z_range: Optional[Sequence[int]] = None,
    label: int = 1,
    name: Optional[str] = None,
    image_shape: Optional[tuple[int, int]] = None,
) -> ObjectPrompt:
    """Build an :class:`ObjectPrompt` from the forms users type.

    Exactly one of: ``slice`` with ``box``/``points``/``line``; ``box3d``;
    ``key_boxes``. ``image_shape`` ``(H, W)`` is needed to clip a line's box.
    """
    who = name or f"object {label}"
    forms = sum([box3d is not None, key_boxes is not None, any(v is not None for v in (box, line)) or bool(points)])
    if forms == 0:
        raise PromptError(f"{who}: give a box, points, a line, a 3D box or key-slice boxes")
    if forms > 1:
        raise PromptError(f"{who}: give only one of box/points/line, box3d, key_boxes")
    if box3d is not None:
        if len(box3d) != 6:
            raise PromptError(f"{who}: a 3D box has 6 numbers x0,y0,z0,x1,y1,z1")
        x0, y0, z0, x1, y1, z1 = box3d
        if z0 != int(z0) or z1 != int(z1) or z0 > z1:
            raise PromptError(f"{who}: 3D box needs integer slices z0 <= z1")
        z_mid = int(z0 + (z1 - z0) // 2)
        sp = SlicePrompt(box=check_box_order((x0, y0, x1, y1)))
        return ObjectPrompt({z_mid: sp}, label=label, name=name, z_range=(int(z0), int(z1)))
    if key_boxes is not None:
        if len(key_boxes) < 2:
            raise PromptError(f"{who}: key-slice mode needs boxes on at least 2 slices")
        slices = {int(z): SlicePrompt(box=check_box_order(b)) for z, b in key_boxes.items()}
        return ObjectPrompt(slices, label=label, name=name)
    if slice is None:
        raise PromptError(f"{who}: say which slice the prompt is on")
    if line is not None:
        if box is not None:
            raise PromptError(f"{who}: give a box or a line, not both")
        line = tuple(float(v) for v in line)
        if len(line) != 4:
            raise PromptError(f"{who}: a line has 4 numbers x0,y0,x1,y1")
        box = line_to_box(line)
        if image_shape is not None:
            box = clip_box(box, image_shape)
    sp = SlicePrompt(box=check_box_order(box) if box is not None else None, points=tuple(points), line=line)
    rng = None
    if z_range is not None:
        rng = (int(z_range[0]), int(z_range[1]))
    return ObjectPrompt({int(slice): sp}, label=label, name=name, z_range=rng)


def prompt_to_dict(prompt: ObjectPrompt) -> dict:
    """The JSON form of an object prompt (what :func:`~promptseg.prompts.file.parse_prompt_document` reads back)."""
    out: dict = {"label": prompt.label}
    if prompt.name:
        out["name"] = prompt.name
    if prompt.is_key_slices:
        out["key_slices"] = {str(z): list(sp.box) for z, sp in sorted(prompt.slices.items())}
        return out
    (z, sp), = prompt.slices.items()
    out["slice"] = z
    if sp.line is not None:
        out["line"] = [float(v) for v in sp.line]
    elif sp.box is not None:
        out["box"] = [float(v) for v in sp.box]
    if sp.points:
        out["points"] = [[p.x, p.y, int(p.positive)] for p in sp.points]
    if prompt.z_range is not None:
        out["z_range"] = list(prompt.z_range)
    return out
