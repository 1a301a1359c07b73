"""Prompts: boxes, +/- points, lines and key-slice boxes, in voxel indices.

- :mod:`.model` -- :class:`ObjectPrompt` and its parts, :func:`make_object`, checks
  against an image, conversions (line -> box, mask -> box, key-box interpolation);
- :mod:`.parse` -- text forms (``"x0,y0,x1,y1"``, ``"Z:x0,y0,x1,y1"``) and the rules for
  which prompt options combine (:func:`objects_from_options`);
- :mod:`.file` -- the JSON prompt file;
- :mod:`.roi` -- a box prompt from an existing RTSTRUCT ROI (imports the DICOM readers, so not re-exported here).
"""

from .model import (
    Box,
    ObjectPrompt,
    Point,
    SlicePrompt,
    box_from_mask,
    check_box_order,
    check_unique_labels,
    clip_box,
    fit_to_image,
    interpolate_key_boxes,
    line_to_box,
    make_object,
    prompt_to_dict,
    validate,
)
from .parse import (
    objects_from_options,
    parse_box,
    parse_box3d,
    parse_key_box,
    parse_line,
    parse_point,
    parse_range,
)

#: names read from :mod:`.file` on first use (it imports pydantic, which a run with prompts on the
#: command line never needs)
_FROM_FILE = ("load_prompt_file", "parse_prompt_document")


def __getattr__(name: str):
    if name in _FROM_FILE:
        from . import file

        return getattr(file, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Box",
    "ObjectPrompt",
    "Point",
    "SlicePrompt",
    "box_from_mask",
    "check_box_order",
    "check_unique_labels",
    "clip_box",
    "fit_to_image",
    "interpolate_key_boxes",
    "line_to_box",
    "load_prompt_file",
    "make_object",
    "objects_from_options",
    "parse_box",
    "parse_box3d",
    "parse_key_box",
    "parse_line",
    "parse_point",
    "parse_prompt_document",
    "parse_range",
    "prompt_to_dict",
    "validate",
]
