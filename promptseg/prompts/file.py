"""The JSON prompt file (``--prompts FILE.json``, documented in ``docs/prompts.md``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import PromptError
from .model import ObjectPrompt, Point, check_unique_labels, make_object, prompt_to_dict  # noqa: F401 (re-exported)

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

    space: str = "IJK"
    objects: list[_ObjectModel] = Field(min_length=1)


#: keys of an object given in physical space (RAS/LPS): every position is ``[x, y, z]`` in mm
WORLD_KEYS = ("label", "name", "box", "box3d", "points", "line")


def _world_object(obj: object, volume, space: str, where: str) -> dict:
    """An object of a physical-space prompt file, rewritten in voxel indices (the IJK form)."""
    from .world import one_slice, world_to_index

    if not isinstance(obj, dict):
        return obj  # type: ignore[return-value]  (the schema check names the problem)
    unknown = sorted(set(obj) - set(WORLD_KEYS))
    if unknown:
        raise PromptError(f"{where}: {', '.join(unknown)} cannot be used in {space} space (positions are [x, y, z] "
                          "mm there, and the slice follows from them); allowed: " + ", ".join(WORLD_KEYS))

    def corners(key: str, count: Optional[int] = 2):
        value = obj[key]
        rows = value if isinstance(value, list) else []
        def position(r) -> bool:
            numbers = isinstance(r, list) and len(r) in (3, 4) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in r)
            return numbers and (len(r) == 3 or (key == "points" and r[3] in (0, 1)))

        if (count is not None and len(rows) != count) or not rows or not all(position(r) for r in rows):
            raise PromptError(f"{where}: {key} needs {count or 'a list of'} [x, y, z] positions in {space} mm"
                              + (" (a point may add 1 or 0)" if key == "points" else ""))
        ijk = world_to_index(volume, [r[:3] for r in rows], space)
        return ijk, rows

    out = {key: obj[key] for key in ("label", "name") if key in obj}
    slices = []
    for key in ("box", "line"):
        if key in obj:
            ijk, _ = corners(key)
            slices.append(one_slice(ijk[:, 2], f"{where}: {key}"))
            out[key] = [float(v) for v in ijk[:, :2].ravel()] if key == "line" else \
                [float(ijk[:, 0].min()), float(ijk[:, 1].min()), float(ijk[:, 0].max()), float(ijk[:, 1].max())]
    if "points" in obj:
        ijk, rows = corners("points", None)
        slices.extend(one_slice([k], f"{where}: points") for k in ijk[:, 2])
        out["points"] = [[float(i), float(j)] + ([int(r[3])] if len(r) == 4 else []) for (i, j, _), r in zip(ijk, rows)]
    if "box3d" in obj:
        ijk, _ = corners("box3d")
        low, high = ijk.min(axis=0), ijk.max(axis=0)
        out["box3d"] = [float(low[0]), float(low[1]), int(round(low[2])), float(high[0]), float(high[1]),
                        int(round(high[2]))]
    if slices:
        if len(set(slices)) > 1:
            raise PromptError(f"{where}: the box, line and points lie on different slices ({sorted(set(slices))})")
        out["slice"] = slices[0]
    return out


def parse_prompt_document(doc: object, image_shape: Optional[tuple[int, int]] = None, source: str = "prompts",
                          volume=None) -> list[ObjectPrompt]:
    """Validate a decoded JSON prompt document and build its objects.

    Objects without a ``label`` get the smallest label values not used by
    another object, in file order. A document with ``"space": "RAS"`` or ``"LPS"``
    gives positions in mm (``docs/prompts.md``); they become voxel indices with
    ``volume``'s geometry (:mod:`promptseg.prompts.world`).
    """
    if isinstance(doc, dict) and isinstance(doc.get("objects"), list) and len(doc["objects"]) > MAX_OBJECTS:
        raise PromptError(f"{source}: {len(doc['objects'])} objects; a prompt file holds at most {MAX_OBJECTS} "
                          "(one label value each)")
    if isinstance(doc, dict) and str(doc.get("space", "IJK")).strip().upper() != "IJK":
        from .world import check_space

        space = check_space(doc["space"])
        if volume is None:
            raise PromptError(f"{source}: prompts in {space} space need the image's geometry (volume=...)")
        if isinstance(doc.get("objects"), list):
            doc = {**doc, "space": "IJK", "objects": [_world_object(obj, volume, space, f"{source}: objects.{i}")
                                                      for i, obj in enumerate(doc["objects"])]}
        image_shape = image_shape or tuple(volume.shape[1:])
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


def load_prompt_file(path: str | Path, image_shape: Optional[tuple[int, int]] = None, volume=None) -> list[ObjectPrompt]:
    """Read a JSON prompt file (see ``docs/prompts.md``); physical-space files need ``volume``."""
    from ..io.jsonfile import read_json

    doc = read_json(path, "prompt file", PromptError)
    return parse_prompt_document(doc, image_shape=image_shape, source=str(path), volume=volume)


def load_prompts(path: str | Path, volume) -> tuple[list[ObjectPrompt], list[str]]:
    """Objects from a prompt file of any kind, in ``volume``'s voxel indices: promptseg's JSON prompt file
    (IJK, RAS or LPS space) or a 3D Slicer markups file (``.mrk.json``, :mod:`promptseg.prompts.slicer`).

    Returns:
        ``(objects, notes)``: notes say what was clipped or skipped.
    """
    from ..io.jsonfile import read_json
    from .slicer import is_markups, parse_markups

    doc = read_json(path, "prompt file", PromptError)
    if is_markups(doc):
        return parse_markups(doc, volume, source=str(path))
    return parse_prompt_document(doc, image_shape=tuple(volume.shape[1:]), source=str(path), volume=volume), []
