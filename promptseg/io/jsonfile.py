"""JSON files: reading a user's file with one-line errors and bounds, writing ours strictly and atomically.

Reading (prompts, manifests, splits): bounds are checked before the text is parsed --
the file must be a regular file (a FIFO would block), at most :data:`MAX_JSON_BYTES`,
and nest arrays/objects at most :data:`MAX_JSON_DEPTH` deep (Python's parser recurses
once per level: 100,000 ``[`` end in ``RecursionError``). JSON's non-standard ``NaN`` /
``Infinity`` literals are refused.

Writing: every JSON file promptseg writes (summaries, run records, split files,
training records) goes through :func:`write_json`, so all of them are standard JSON
(no ``NaN`` or ``Infinity``), indented, and replaced atomically.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any, Type

import numpy as np

from ..errors import PromptsegError
from .atomic import atomic_path

#: largest JSON file read (bytes)
MAX_JSON_BYTES = 256 * 1024**2
#: deepest nesting of arrays and objects
MAX_JSON_DEPTH = 64


def json_depth(text: str) -> int:
    """Deepest nesting of ``[`` / ``{`` in JSON ``text`` (brackets inside strings are ignored)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def parse_json(text: str, source: str, error: Type[PromptsegError] = PromptsegError):
    """Parse JSON ``text`` within :data:`MAX_JSON_DEPTH`; ``source`` names it in messages."""
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise error(f"{source}: nested {depth} levels deep (at most {MAX_JSON_DEPTH} are read)")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise error(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except ValueError as exc:
        raise error(f"{source}: not valid JSON ({exc})") from None


def read_json(path: str | Path, what: str = "file", error: Type[PromptsegError] = PromptsegError):
    """Parse a JSON file.

    Raises:
        ``error``: ``"<what> not found: <path>"``, ``"<path>: cannot read (<reason>)"``,
            ``"<path>: not valid JSON (<message> at line <n>)"``, a file that is not a
            regular file, larger than :data:`MAX_JSON_BYTES` or nested deeper than
            :data:`MAX_JSON_DEPTH`.
    """
    path = Path(path)
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{path}: cannot read (not a regular file)")
        if info.st_size > MAX_JSON_BYTES:
            raise error(f"{path}: cannot read ({info.st_size} bytes; a {what} may have at most {MAX_JSON_BYTES})")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise error(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    return parse_json(text, str(path), error)


def json_ready(value: Any, nonfinite_as_text: bool = False) -> Any:
    """``value`` with what standard JSON cannot hold replaced, recursively.

    NumPy arrays become lists and NumPy scalars Python numbers, paths become text,
    mapping keys become text, tuples become lists. A non-finite float (``inf``,
    ``-inf``, ``nan``) becomes ``None`` -- or, with ``nonfinite_as_text``, the text
    ``"inf"`` / ``"-inf"`` / ``"nan"``, which ``float()`` reads back (for records whose
    values must survive a round trip, such as an infinite HD95).
    """
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): json_ready(v, nonfinite_as_text) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v, nonfinite_as_text) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value) if nonfinite_as_text else None
    if isinstance(value, Path):
        return str(value)
    return value


def json_text(value: Any, nonfinite_as_text: bool = False) -> str:
    """:func:`json_ready` ``value`` as indented, standard JSON text ending in a newline.

    Raises:
        TypeError: ``value`` holds an object JSON cannot represent (not a number, text,
            bool, None, list, tuple, dict, path or NumPy value).
    """
    return json.dumps(json_ready(value, nonfinite_as_text), indent=2, allow_nan=False) + "\n"


def write_json(path: str | Path, value: Any, nonfinite_as_text: bool = False) -> Path:
    """Write :func:`json_text` of ``value`` to ``path`` atomically (parent folders created); returns the path."""
    path = Path(path)
    text = json_text(value, nonfinite_as_text)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return path
