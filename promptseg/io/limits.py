"""What a reader accepts before it allocates memory or trusts geometry.

* **Read budget**: the most bytes of voxel data one image may decode to
  (default 4 GiB). Every reader checks the size a header declares against it
  *before* a native library allocates the array, so a header claiming
  100000 x 100000 x 100000 voxels is a one-line error, not a ``MemoryError``
  or an out-of-memory kill. Raise it with the environment variable
  ``PROMPTSEG_MAX_IMAGE_BYTES`` (``8G``, ``512M``, ``1T`` or a byte count)
  or :func:`set_read_budget`.
* **Geometry range**: spacing in ``[MIN_SPACING_MM, MAX_SPACING_MM]``
  (1e-6 mm .. 1e5 mm, i.e. one nanometre to one hundred metres), origin
  coordinates within +-``MAX_COORDINATE_MM`` (1e9 mm), direction columns of
  unit length (1e-2 tolerance) that are linearly independent. Anything else
  (NaN, inf, zero or 1e200 mm voxels, a singular direction matrix) cannot be
  a scan and is refused the same way for every format.
"""

from __future__ import annotations

import os
import re
from typing import Optional, Sequence

import numpy as np

from ..errors import ImageReadError

MIN_SPACING_MM = 1e-6
MAX_SPACING_MM = 1e5
MAX_COORDINATE_MM = 1e9
#: a direction column's length may differ from 1 by this much
UNIT_TOLERANCE = 1e-2
#: smallest |det| of the direction matrix (columns normalised): axes must span 3D space
MIN_DIRECTION_DETERMINANT = 1e-3

BUDGET_ENV = "PROMPTSEG_MAX_IMAGE_BYTES"
DEFAULT_READ_BUDGET = 4 * 1024**3

_override: Optional[int] = None
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def _parse_bytes(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, flags=re.IGNORECASE)
    if not match:
        raise ImageReadError(
            f"{BUDGET_ENV}={text!r}: expected a size such as 8G, 512M or a number of bytes"
        )
    value = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if value <= 0:
        raise ImageReadError(f"{BUDGET_ENV}={text!r}: the read budget must be positive")
    return value


def read_budget() -> int:
    """The read budget in bytes: :func:`set_read_budget`, else ``$PROMPTSEG_MAX_IMAGE_BYTES``, else 4 GiB."""
    if _override is not None:
        return _override
    text = os.environ.get(BUDGET_ENV)
    return _parse_bytes(text) if text else DEFAULT_READ_BUDGET


def set_read_budget(nbytes: Optional[int]) -> None:
    """Set the read budget for this process (bytes); ``None`` returns to the environment/default."""
    global _override
    if nbytes is not None and int(nbytes) <= 0:
        raise ValueError("the read budget must be a positive number of bytes")
    _override = None if nbytes is None else int(nbytes)


def human_bytes(nbytes: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(nbytes) < 1024 or unit == "PiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} PiB"  # pragma: no cover


def check_allocation(shape: Sequence[int], itemsize: int, source: str) -> int:
    """Raise unless an array of ``shape`` x ``itemsize`` bytes fits the read budget; returns its size.

    Args:
        shape: the declared array shape (any order), every entry >= 0.
        itemsize: bytes per element (times the components per voxel).
        source: file name for the message.

    Raises:
        ImageReadError: the array would exceed the read budget (the message names
            ``PROMPTSEG_MAX_IMAGE_BYTES``).
    """
    nbytes = int(itemsize)
    for extent in shape:
        nbytes *= int(extent)
    budget = read_budget()
    if nbytes > budget:
        dims = " x ".join(str(int(s)) for s in shape)
        raise ImageReadError(
            f"{source}: the image would need {human_bytes(nbytes)} ({dims} elements of {itemsize} bytes), "
            f"more than the read budget of {human_bytes(budget)}; if the file is genuine and the "
            f"machine has the memory, raise {BUDGET_ENV} (e.g. {BUDGET_ENV}=16G)"
        )
    return nbytes


def spacing_problem(values: Sequence[float]) -> Optional[str]:
    """Why ``values`` (mm) are not a usable voxel spacing, or None if they are."""
    arr = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(arr)):
        return f"spacing {_fmt(arr)} is not finite"
    if np.any(arr < MIN_SPACING_MM) or np.any(arr > MAX_SPACING_MM):
        return (
            f"spacing {_fmt(arr)} mm is outside the accepted range "
            f"{MIN_SPACING_MM:g} .. {MAX_SPACING_MM:g} mm"
        )
    return None


def origin_problem(values: Sequence[float]) -> Optional[str]:
    """Why ``values`` (mm) are not a usable origin, or None."""
    arr = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(arr)):
        return f"origin {_fmt(arr)} is not finite"
    if np.any(np.abs(arr) > MAX_COORDINATE_MM):
        return f"origin {_fmt(arr)} mm lies beyond +-{MAX_COORDINATE_MM:g} mm"
    return None


def direction_problem(matrix) -> Optional[str]:
    """Why a square direction matrix (columns = voxel axes) is unusable, or None."""
    arr = np.asarray(matrix, dtype=float)
    if not np.all(np.isfinite(arr)):
        return f"direction {_fmt(arr.ravel())} is not finite"
    norms = np.linalg.norm(arr, axis=0)
    if np.any(np.abs(norms - 1) > UNIT_TOLERANCE):
        return f"direction columns have lengths {_fmt(norms)}, not 1"
    if abs(float(np.linalg.det(arr / norms))) < MIN_DIRECTION_DETERMINANT:
        return f"direction {_fmt(arr.ravel())} is singular (its voxel axes do not span the space)"
    return None


def geometry_problem(spacing, origin, direction) -> Optional[str]:
    """The first problem of spacing, origin and direction, or None when all are usable."""
    return spacing_problem(spacing) or origin_problem(origin) or direction_problem(direction)


def check_geometry(spacing, origin, direction, source: str) -> None:
    """Raise :class:`ImageReadError` naming ``source`` if the geometry is unusable (see the module docstring)."""
    problem = geometry_problem(spacing, origin, direction)
    if problem:
        raise ImageReadError(f"{source}: unusable geometry: {problem}")


def _fmt(arr: np.ndarray) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in np.ravel(arr)) + ")"
