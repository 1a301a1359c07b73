"""Reading a user's JSON file (prompts, manifests, splits) with one-line errors and bounds.

Bounds, checked before the text is parsed: the file must be a regular file
(a FIFO would block), at most :data:`MAX_JSON_BYTES`, and nest arrays/objects
at most :data:`MAX_JSON_DEPTH` deep (Python's parser recurses once per level:
100,000 ``[`` end in ``RecursionError``). JSON's non-standard ``NaN`` /
``Infinity`` literals are refused.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Type

from ..errors import PromptsegError

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
