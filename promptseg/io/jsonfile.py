"""Reading a user's JSON file (prompts, manifests, splits) with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Type

from ..errors import PromptsegError


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
