"""JSON files: reading a user's file with one-line errors, writing ours strictly and atomically.

Every JSON file promptseg writes (summaries, run records, split files, training records)
goes through :func:`write_json`, so all of them are standard JSON (no ``NaN`` or
``Infinity``), indented, and replaced atomically.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Type

import numpy as np

from ..errors import PromptsegError
from .atomic import atomic_path


def read_json(path: str | Path, what: str = "file", error: Type[PromptsegError] = PromptsegError):
    """Parse a JSON file.

    Raises:
        ``error``: ``"<what> not found: <path>"``, ``"<path>: cannot read (<reason>)"`` or
            ``"<path>: not valid JSON (<message> at line <n>)"``.
    """
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


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
