"""Prompts typed as text (command line, forms): ``"x0,y0,x1,y1"``, ``"x,y,0"``, ``"Z:x0,y0,x1,y1"``, ...

:func:`objects_from_options` holds the rules for which prompt options combine into
one object (the ``segment`` command's ``--box`` / ``--point`` / ``--line`` /
``--box3d`` / ``--key-box`` / ``--prompts``), so every front end -- the CLI, the web
server, the DICOM node -- applies the same rules.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

from ..errors import PromptError
from .model import Box, ObjectPrompt, Point, check_box_order, make_object

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


def parse_key_box(text: str) -> tuple[int, Box]:
    """``"Z:x0,y0,x1,y1"`` -> ``(Z, box)``: a box on key slice ``Z``."""
    z_text, sep, box_text = str(text).partition(":")
    if not sep or not z_text.strip().lstrip("-").isdigit():
        raise PromptError(f"--key-box {text!r}: expected Z:x0,y0,x1,y1")
    return int(z_text), parse_box(box_text)


def objects_from_options(
    *,
    num_slices: int,
    image_shape: tuple[int, int],
    box: Optional[str] = None,
    points: Sequence[str] = (),
    line: Optional[str] = None,
    slice: Optional[int] = None,
    box3d: Optional[str] = None,
    key_boxes: Sequence[str] = (),
    z_range: Optional[str] = None,
    prompt_file: Optional[str] = None,
    label: int = 1,
    name: Optional[str] = None,
) -> list[ObjectPrompt]:
    """The objects a set of text prompt options describes (the ``segment`` command's rules).

    One object from ``box`` / ``points`` / ``line`` on ``slice`` (slice 0 of a 2D
    image by default), or from ``box3d``, or from two or more ``key_boxes``; or
    several objects from ``prompt_file``. Options that do not combine are refused.

    Args:
        num_slices: slices of the image (to default ``slice`` for 2D images and name the range).
        image_shape: ``(H, W)`` of a slice (clips a line's box).
        box, points, line, slice, box3d, key_boxes, z_range: the text forms of
            :func:`parse_box`, :func:`parse_point`, :func:`parse_line`, :func:`parse_box3d`,
            :func:`parse_key_box` and :func:`parse_range`.
        prompt_file: a JSON prompt file (``docs/prompts.md``).
        label, name: of the single object.

    Raises:
        PromptError: one line naming the options that clash or the text that does not parse.
    """
    single = any([box, points, line, box3d, key_boxes])
    if prompt_file:
        from .file import load_prompt_file  # imports pydantic: only for a prompt file

        if single:
            raise PromptError("give either --prompts FILE or --box/--point/--line/--box3d/--key-box, not both")
        if z_range:
            raise PromptError("--z-range applies to a single prompt; put \"z_range\" into the prompt file instead")
        return load_prompt_file(prompt_file, image_shape=image_shape)
    if not single:
        raise PromptError("no prompt: give --box, --point, --line, --box3d, --key-box, --prompts or --prompt-from")
    rng = parse_range(z_range) if z_range else None
    if box3d:
        if box or points or line or key_boxes or slice is not None:
            raise PromptError("--box3d carries its own slices: do not combine it with --box/--point/--line/--slice")
        if rng:
            raise PromptError("--box3d already sets the z-range")
        return [make_object(box3d=parse_box3d(box3d), label=label, name=name)]
    if key_boxes:
        if box or points or line:
            raise PromptError("--key-box cannot be combined with --box/--point/--line")
        return [make_object(key_boxes=dict(parse_key_box(text) for text in key_boxes), label=label, name=name)]
    z = slice
    if z is None:
        if num_slices == 1:
            z = 0
        else:
            raise PromptError(f"say which slice the prompt is on: --slice Z (0..{num_slices - 1})")
    return [
        make_object(
            slice=z,
            box=parse_box(box) if box else None,
            points=tuple(parse_point(p) for p in points),
            line=parse_line(line) if line else None,
            z_range=rng,
            label=label,
            name=name,
            image_shape=image_shape,
        )
    ]
