"""Helpers shared by the readers and writers: format detection and array checks.

Nothing here touches a file format's internals; the format modules
(:mod:`.sitk_image`, :mod:`.dicom`, :mod:`.npz`, :mod:`.raster`) do.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import ImageReadError

#: File suffixes read and written through SimpleITK (ITK's NIfTI, NRRD and MetaImage IOs).
SITK_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
#: MedSAM-style NumPy archives (keys ``imgs`` / ``gts`` / ``segs`` / ``spacing``).
NPZ_SUFFIXES = (".npz",)
#: 2D raster images read through Pillow.
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: Suffixes that name a single DICOM file (any other file with a DICOM preamble is read too).
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")

#: Every suffix :func:`promptseg.io.load_volume` accepts (a DICOM series folder is accepted too).
SUPPORTED_IMAGE_SUFFIXES = SITK_SUFFIXES + NPZ_SUFFIXES + RASTER_SUFFIXES + DICOM_SUFFIXES

_ALL_SUFFIXES_LONGEST_FIRST = sorted(SUPPORTED_IMAGE_SUFFIXES, key=len, reverse=True)


def supported_formats_text() -> str:
    """One line listing what can be read, for error messages and ``--help``."""
    return "supported: " + ", ".join(SUPPORTED_IMAGE_SUFFIXES) + ", or a folder holding a DICOM series"


def quote(text: str, limit: int = 40) -> str:
    """Text taken from a file, safe inside a one-line message: quoted, control characters escaped, cut at ``limit``."""
    return "'" + printable(text, limit).replace("'", "\\'") + "'"


def format_suffix(path: Path) -> str:
    """The format suffix of ``path``, lower case, compound suffixes kept (``".nii.gz"``).

    Returns the longest known suffix the name ends with, else the last suffix
    (possibly ``""``).
    """
    name = path.name.lower()
    for suffix in _ALL_SUFFIXES_LONGEST_FIRST:
        if name.endswith(suffix) and len(name) > len(suffix):
            return suffix
    return path.suffix.lower()


def has_dicom_preamble(path: Path) -> bool:
    """True if the file carries the DICOM Part 10 marker ``DICM`` at byte 128."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def one_line_sitk_error(error: BaseException) -> str:
    """Turn SimpleITK's multi-line ``RuntimeError`` text into one readable line.

    SimpleITK messages start with ``Exception thrown in SimpleITK ...: file:line:``
    and continue with ``itk::ERROR: SomeIO(0x...): reason`` lines; keep the
    reasons only.
    """
    lines = str(error).splitlines()
    if lines and lines[0].startswith("Exception thrown in SimpleITK"):
        lines = lines[1:]
    text = " ".join(lines)
    if "Unable to determine ImageIO reader" in text:
        return "not a readable image file (corrupt, truncated, or not the format its name says)"
    if "File cannot be read" in text and "MetaImageIO" in text:
        return "the image data cannot be read (truncated or corrupt, or its data file is missing)"
    teem = [line for line in lines if line.lstrip().startswith("[nrrd]")]
    if teem:  # NRRD (teem) reports a chain of "trouble" lines; the last one is the cause
        return printable(re.sub(r"^\s*\[nrrd\]\s*\w+:\s*", "", teem[-1]).strip()) or "invalid NRRD file"
    reasons = []
    for line in lines:
        line = re.sub(r"^\s*(sitk::ERROR|itk::ERROR|ITK ERROR):\s*", "", line)
        line = re.sub(r"^\w+\(0x[0-9a-fA-F]+\):\s*", "", line).strip()
        if line and line not in reasons:
            reasons.append(line)
    return printable("; ".join(reasons)) or type(error).__name__


def printable(text: str, limit: int = 300) -> str:
    """Control characters escaped and long text cut, so that a native library's message stays one line."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[:limit] + "..."


_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def check_regular_file(path, what: str = "") -> os.stat_result:
    """Raise :class:`ImageReadError` unless ``path`` is an existing regular file (symlinks followed).

    Reading a FIFO blocks until a writer appears and a device such as
    ``/dev/zero`` never ends, so both are refused before anything opens them.
    Only ``os.stat`` is called, which never blocks.

    Args:
        path: the file.
        what: what the file is, for the message (``"data file of x.mhd"``).

    Returns:
        The file's ``os.stat`` result.
    """
    label = f"{what} {path}" if what else str(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ImageReadError(f"no such file: {label}") from None
    except (OSError, ValueError) as error:  # ValueError: a NUL byte in the name
        raise ImageReadError(f"cannot read {label}: {getattr(error, 'strerror', None) or error}") from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageReadError(f"cannot read {label}: it is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
        raise ImageReadError(f"cannot read {label}: it is {kind}, not a regular file")
    return info


#: array kinds a volume may hold: bool, signed/unsigned integers, floating point
NUMERIC_KINDS = "biuf"


def check_voxels(array: np.ndarray, source: str) -> None:
    """Raise :class:`ImageReadError` if ``array`` is empty, not numeric, or holds NaN/inf.

    Args:
        array: voxel data of any shape.
        source: file name for the message.
    """
    if array.size == 0:
        raise ImageReadError(f"{source}: the image is empty (array shape {tuple(array.shape)})")
    if np.issubdtype(array.dtype, np.complexfloating):
        raise ImageReadError(f"{source}: complex-valued images are not supported ({array.dtype})")
    if array.dtype.kind not in NUMERIC_KINDS:
        raise ImageReadError(
            f"{source}: voxel values must be numbers, got dtype {array.dtype} "
            "(text, bytes, dates or records cannot be an image)"
        )
    if np.issubdtype(array.dtype, np.floating):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise ImageReadError(
                f"{source}: {bad} of {array.size} voxels are not finite (NaN or inf)"
            )


def gray_if_equal_channels(array: np.ndarray) -> np.ndarray:
    """``(..., 3)`` RGB whose three channels are identical -> ``(...)`` grayscale; else unchanged."""
    if array.ndim >= 3 and array.shape[-1] == 3:
        first = array[..., 0]
        if np.array_equal(first, array[..., 1]) and np.array_equal(first, array[..., 2]):
            return np.ascontiguousarray(first)
    return array


def label_dtype(max_value: int) -> Optional[np.dtype]:
    """Smallest unsigned dtype for label values up to ``max_value``: uint8 or uint16 (None if larger)."""
    if max_value <= np.iinfo(np.uint8).max:
        return np.dtype(np.uint8)
    if max_value <= np.iinfo(np.uint16).max:
        return np.dtype(np.uint16)
    return None
