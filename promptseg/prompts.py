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

The JSON prompt file (``--prompts FILE.json``) is documented in
``docs/prompts.md``; :func:`load_prompt_file` reads it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import PromptError

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Point:
    """A click at column ``x``, row ``y``; ``positive`` False marks background."""

    x: float
    y: float
    positive: bool = True


@dataclass
class SlicePrompt:
    """Everything prompted on one slice: a box and/or points."""

    box: Optional[Box] = None
    points: tuple[Point, ...] = ()

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


# ---------------------------------------------------------------------------
# parsing of command-line strings
# ---------------------------------------------------------------------------
def _numbers(text: str, count: Sequence[int], what: str) -> list[float]:
    parts = [p for p in str(text).replace(" ", "").split(",") if p != ""]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise PromptError(f"{what} {text!r}: expected comma-separated numbers") from None
    if len(values) not in count:
        expected = " or ".join(str(c) for c in count)
        raise PromptError(f"{what} {text!r}: expected {expected} numbers, got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise PromptError(f"{what} {text!r}: numbers must be finite")
    return values


def parse_box(text: str) -> Box:
    """``"x0,y0,x1,y1"`` -> box (checked for order, not yet against an image)."""
    x0, y0, x1, y1 = _numbers(text, (4,), "box")
    return check_box_order((x0, y0, x1, y1))


def parse_box3d(text: str) -> tuple[float, float, int, float, float, int]:
    """``"x0,y0,z0,x1,y1,z1"`` (LiteMedSAM challenge order) -> 3D box."""
    x0, y0, z0, x1, y1, z1 = _numbers(text, (6,), "3D box")
    if z0 != int(z0) or z1 != int(z1):
        raise PromptError(f"3D box {text!r}: z0 and z1 must be slice indices (integers)")
    check_box_order((x0, y0, x1, y1))
    if z0 > z1:
        raise PromptError(f"3D box {text!r}: needs z0 <= z1")
    return (x0, y0, int(z0), x1, y1, int(z1))


def parse_point(text: str) -> Point:
    """``"x,y"`` (positive) or ``"x,y,1"`` / ``"x,y,0"`` (positive / negative)."""
    values = _numbers(text, (2, 3), "point")
    if len(values) == 3 and values[2] not in (0.0, 1.0):
        raise PromptError(f"point {text!r}: the third number must be 1 (inside) or 0 (outside)")
    return Point(values[0], values[1], positive=len(values) == 2 or values[2] == 1.0)


def parse_line(text: str) -> tuple[float, float, float, float]:
    """``"x0,y0,x1,y1"``: the two end points of a line marker (e.g. RECIST long axis)."""
    x0, y0, x1, y1 = _numbers(text, (4,), "line")
    if (x0, y0) == (x1, y1):
        raise PromptError(f"line {text!r}: the two end points are the same")
    return (x0, y0, x1, y1)


def parse_range(text: str) -> tuple[int, int]:
    """``"z0,z1"`` -> inclusive slice range."""
    z0, z1 = _numbers(text, (2,), "z-range")
    if z0 != int(z0) or z1 != int(z1):
        raise PromptError(f"z-range {text!r}: slices must be integers")
    if z0 > z1:
        raise PromptError(f"z-range {text!r}: needs z0 <= z1")
    return int(z0), int(z1)


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
        box = line_to_box(line)
        if image_shape is not None:
            box = clip_box(box, image_shape)
    sp = SlicePrompt(box=check_box_order(box) if box is not None else None, points=tuple(points))
    rng = None
    if z_range is not None:
        rng = (int(z_range[0]), int(z_range[1]))
    return ObjectPrompt({int(slice): sp}, label=label, name=name, z_range=rng)


# ---------------------------------------------------------------------------
# JSON prompt files
# ---------------------------------------------------------------------------
class _ObjectModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: int = Field(default=0, ge=0, le=65535)
    name: Optional[str] = None
    slice: Optional[int] = Field(default=None, ge=0)
    box: Optional[list[float]] = None
    points: list[list[float]] = Field(default_factory=list)
    line: Optional[list[float]] = None
    box3d: Optional[list[float]] = None
    key_slices: Optional[dict[int, list[float]]] = None
    z_range: Optional[list[int]] = None

    @field_validator("box", "line")
    @classmethod
    def _four(cls, v):
        if v is not None and len(v) != 4:
            raise ValueError("needs 4 numbers x0,y0,x1,y1")
        return v

    @field_validator("points")
    @classmethod
    def _pts(cls, v):
        for p in v:
            if len(p) not in (2, 3) or (len(p) == 3 and p[2] not in (0, 1)):
                raise ValueError("each point is [x, y] or [x, y, 1|0]")
        return v

    @field_validator("key_slices")
    @classmethod
    def _keys(cls, v):
        if v is not None and any(len(box) != 4 for box in v.values()):
            raise ValueError("each key-slice box needs 4 numbers x0,y0,x1,y1")
        return v

    @field_validator("z_range")
    @classmethod
    def _rng(cls, v):
        if v is not None and len(v) != 2:
            raise ValueError("needs 2 slice indices [z0, z1]")
        return v


#: most objects one prompt file may hold (one label value each)
MAX_OBJECTS = 65535


class _PromptFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    objects: list[_ObjectModel] = Field(min_length=1)


def parse_prompt_document(doc: object, image_shape: Optional[tuple[int, int]] = None, source: str = "prompts") -> list[ObjectPrompt]:
    """Validate a decoded JSON prompt document and build its objects.

    Objects without a ``label`` get the smallest label values not used by
    another object, in file order.
    """
    if isinstance(doc, dict) and isinstance(doc.get("objects"), list) and len(doc["objects"]) > MAX_OBJECTS:
        raise PromptError(f"{source}: {len(doc['objects'])} objects; a prompt file holds at most {MAX_OBJECTS} "
                          "(one label value each)")
    try:
        parsed = _PromptFile.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise PromptError(f"{source}: {where}: {err['msg']}") from None
    taken = {obj.label for obj in parsed.objects if obj.label}
    free = (v for v in range(1, 65536) if v not in taken)
    objects = []
    for i, obj in enumerate(parsed.objects):
        label = obj.label or next(free, 0)
        points = tuple(Point(p[0], p[1], len(p) == 2 or p[2] == 1) for p in obj.points)
        try:
            objects.append(
                make_object(
                    slice=obj.slice, box=obj.box, points=points, line=obj.line, box3d=obj.box3d,
                    key_boxes=obj.key_slices, z_range=obj.z_range, label=label, name=obj.name,
                    image_shape=image_shape,
                )
            )
        except PromptError as exc:
            raise PromptError(f"{source}: objects.{i}: {exc}") from None
    check_unique_labels(objects)
    return objects


def load_prompt_file(path: str | Path, image_shape: Optional[tuple[int, int]] = None) -> list[ObjectPrompt]:
    """Read a JSON prompt file (see ``docs/prompts.md``)."""
    from .io.jsonfile import read_json

    doc = read_json(path, "prompt file", PromptError)
    return parse_prompt_document(doc, image_shape=image_shape, source=str(path))


def prompt_to_dict(prompt: ObjectPrompt) -> dict:
    """The JSON form of an object prompt (what :func:`parse_prompt_document` reads back)."""
    out: dict = {"label": prompt.label}
    if prompt.name:
        out["name"] = prompt.name
    if prompt.is_key_slices:
        out["key_slices"] = {str(z): list(sp.box) for z, sp in sorted(prompt.slices.items())}
        return out
    (z, sp), = prompt.slices.items()
    out["slice"] = z
    if sp.box is not None:
        out["box"] = [float(v) for v in sp.box]
    if sp.points:
        out["points"] = [[p.x, p.y, int(p.positive)] for p in sp.points]
    if prompt.z_range is not None:
        out["z_range"] = list(prompt.z_range)
    return out
