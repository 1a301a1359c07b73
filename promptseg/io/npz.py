"""MedSAM-style NumPy archives (``.npz``).

Layout (as written by MedSAM's ``pre_CT_MR.py`` / ``pre_grey_rgb.py`` and used
by the CVPR 2024 "MedSAM on Laptop" challenge):

* ``imgs`` -- the image: 2D ``(H, W)`` or ``(H, W, 3)`` (uint8 after
  pre-processing), or 3D ``(D, H, W)``. A 3D array whose last axis is 3 (or
  4) and no longer than the other two is read as 2D colour (4 -> error).
* ``gts`` -- ground-truth label map ``(H, W)`` or ``(D, H, W)``; ``segs`` --
  predicted label map, same shape (prediction archives hold only ``segs``).
* ``spacing`` -- optional voxel size in mm, in **SimpleITK (x, y, z) order**.
  Verified in bowang-lab/MedSAM ``pre_CT_MR.py``, which saves
  ``spacing=img_sitk.GetSpacing()`` next to ``imgs``/``gts`` taken from
  ``sitk.GetArrayFromImage`` (so arrays are ``(z, y, x)`` but spacing is
  ``(x, y, z)``). Note that MedSAM's ``evaluation/compute_metrics.py`` passes
  that tuple unchanged to ``compute_surface_distances`` together with the
  ``(D, H, W)`` arrays, i.e. it pairs the x spacing with the z axis; promptseg
  follows the storage convention (x, y, z), not that metric code. 2D archives
  usually have no ``spacing`` (the metric code uses 1 mm); 2 values are read
  as ``(x, y)``.

NPZ stores no origin or direction: a volume read from NPZ has origin 0 and
identity direction, and ``metadata["stored_geometry"]`` says which geometry the
file really held (``("spacing",)`` or ``()``), so label maps can be matched to
a reference image on what is actually known.
"""

from __future__ import annotations

import struct
import tokenize
import zipfile
import zlib
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import ImageReadError, ImageWriteError
from ..volume import Volume
from .common import NUMERIC_KINDS, check_voxels, gray_if_equal_channels, printable, quote
from .limits import check_allocation, spacing_problem

IMAGE_KEY = "imgs"
LABEL_KEYS = ("gts", "segs")
SPACING_KEY = "spacing"


#: what NumPy's pure-Python ``.npy`` header parser raises on a malformed header
_HEADER_ERRORS = (ValueError, SyntaxError, TypeError, tokenize.TokenError, RecursionError, EOFError,
                  struct.error, OverflowError, KeyError, UnicodeDecodeError)
#: what reading a zip member raises on corrupt data (CRC, deflate, truncation)
_DATA_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, NotImplementedError)


def _member_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> tuple[tuple, np.dtype]:
    """Shape and dtype from a member's ``.npy`` header, checked before any array is allocated.

    The header is parsed by NumPy's own functions; what they raise on a
    malformed header becomes :class:`ImageReadError`. The dtype must be numeric
    (no pickled objects, text, bytes, dates or records), the shape must fit the
    read budget, and the zip directory's uncompressed size must hold header + data.
    """
    key = info.filename[: -len(".npy")]
    if info.flag_bits & 0x1:
        raise ImageReadError(f"cannot read {path}: key {quote(key)} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ImageReadError(
            f"cannot read {path}: key {quote(key)} uses zip compression method {info.compress_type}; "
            "only stored and deflated members (as NumPy writes them) are read"
        )
    try:
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
            header_bytes = member.tell()
    except _HEADER_ERRORS + _DATA_ERRORS as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ImageReadError(f"cannot read {path}: key {quote(key)} has a malformed array header ({printable(reason, 80)})") from None
    if dtype.hasobject or dtype.kind not in NUMERIC_KINDS + "c" or dtype.fields is not None or dtype.subdtype:
        raise ImageReadError(
            f"{path}: key {quote(key)} holds {dtype} values; an image or label map must hold numbers "
            "(no pickled objects, text, bytes, dates or records)"
        )
    check_allocation(shape, dtype.itemsize, f"{path} (key {quote(key)})")
    needed = header_bytes + dtype.itemsize * int(np.prod(shape, dtype=np.int64))
    if info.file_size < needed:
        raise ImageReadError(
            f"cannot read {path}: key {quote(key)} is truncated ({info.file_size} of {needed} bytes in the archive)"
        )
    return shape, dtype


def _load_arrays(path: Path, wanted: Sequence[str]) -> tuple[dict, list[str]]:
    """The arrays named in ``wanted`` that the archive holds, and all its keys.

    Only the wanted members are decompressed, each after its header passed
    :func:`_member_header`.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename[: -len(".npy")]: info for info in archive.infolist()
                       if info.filename.endswith(".npy")}
            arrays = {}
            for key in wanted:
                if key not in members:
                    continue
                _member_header(archive, members[key], path)
                with archive.open(members[key]) as member:
                    array = np.lib.format.read_array(member, allow_pickle=False)
                arrays[key] = array.astype(array.dtype.newbyteorder("="), copy=False)
            return arrays, sorted(members)
    except ImageReadError:
        raise
    except _DATA_ERRORS as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ImageReadError(
            f"cannot read {path}: not a valid NPZ archive ({type(error).__name__}: {quote(reason, 80)})"
        ) from None


def looks_like_channels(shape: tuple) -> bool:
    """True if a 3D ``imgs`` shape reads as ``(H, W, C)`` colour rather than ``(D, H, W)``.

    A trailing axis of 3 or 4 that is no longer than the other two is taken as
    colour channels (MedSAM 2D images are ``(H, W, 3)``); anything else is ``(D, H, W)``.
    """
    return len(shape) == 3 and shape[-1] in (3, 4) and shape[-1] <= min(shape[0], shape[1])


def _image_array(data: np.ndarray, path: Path) -> np.ndarray:
    """``imgs`` -> ``(z, y, x)`` or ``(1, y, x, 3)``."""
    shape = tuple(data.shape)
    if data.ndim == 2:
        return data[np.newaxis]
    if looks_like_channels(shape) and shape[-1] == 3:
        return gray_if_equal_channels(data[np.newaxis])
    if looks_like_channels(shape):
        raise ImageReadError(
            f"{path}: key '{IMAGE_KEY}' has shape {shape}, which looks like an RGBA image; "
            "expected (H, W), (H, W, 3) or (D, H, W)"
        )
    if data.ndim == 3:
        return data
    raise ImageReadError(
        f"{path}: key '{IMAGE_KEY}' has shape {shape} ({data.ndim}D); "
        "expected (H, W), (H, W, 3) or (D, H, W)"
    )


def _label_array(data: np.ndarray, key: str, path: Path) -> np.ndarray:
    """``gts`` / ``segs`` -> ``(z, y, x)``."""
    if data.ndim == 2:
        return data[np.newaxis]
    if data.ndim == 3:
        return data
    raise ImageReadError(
        f"{path}: key '{key}' has shape {tuple(data.shape)}; expected (H, W) or (D, H, W)"
    )


def _spacing(arrays: dict, path: Path) -> Optional[tuple[float, float, float]]:
    """The ``spacing`` entry as ``(x, y, z)`` mm, or None when absent."""
    if SPACING_KEY not in arrays:
        return None
    raw = arrays[SPACING_KEY]
    if raw.dtype.kind not in "iuf":
        raise ImageReadError(f"{path}: key '{SPACING_KEY}' holds {raw.dtype} values, not numbers")
    values = np.asarray(raw, dtype=float).ravel()
    if values.size == 2:
        values = np.append(values, 1.0)
    problem = spacing_problem(values) if values.size == 3 else "it does not hold 2 or 3 values"
    if problem:
        shown = np.array2string(values[:6], separator=", ", max_line_width=200)
        raise ImageReadError(
            f"{path}: key '{SPACING_KEY}' must hold 2 or 3 spacings (x, y[, z]) in mm: {problem} (got {shown})"
        )
    return (float(values[0]), float(values[1]), float(values[2]))


def read_npz(path, labels: bool = False) -> Volume:
    """Read a MedSAM NPZ archive.

    Args:
        path: ``.npz`` file.
        labels: read the label map (``gts``, else ``segs``) instead of ``imgs``.

    Returns:
        Volume ``(z, y, x)`` (2D -> one slice) or ``(1, y, x, 3)`` for an RGB
        2D image whose channels differ; spacing ``(x, y, z)`` from ``spacing``
        (1 mm where absent); ``metadata``: ``source``, ``npz_keys``,
        ``npz_key``, ``stored_geometry``.

    Raises:
        ImageReadError: not an NPZ, missing key (names the keys present),
            wrong shape (names the key and shape), bad spacing, empty or
            non-finite data.
    """
    path = Path(path)
    wanted = LABEL_KEYS if labels else (IMAGE_KEY,)
    arrays, keys = _load_arrays(path, wanted + (SPACING_KEY,))
    key = next((k for k in wanted if k in arrays), None)
    if key is None:
        raise ImageReadError(
            f"{path}: no {' or '.join(repr(k) for k in wanted)} array in this NPZ "
            f"(keys: {printable(', '.join(keys), 200) if keys else 'none'})"
        )
    data = arrays[key]
    check_voxels(data, f"{path} (key '{key}')")
    array = _label_array(data, key, path) if labels else _image_array(data, path)
    spacing = _spacing(arrays, path)
    metadata = {
        "source": str(path),
        "npz_keys": keys,
        "npz_key": key,
        "stored_geometry": ("spacing",) if spacing is not None else (),
    }
    return Volume(array, spacing or (1.0, 1.0, 1.0), metadata=metadata)


def _npz_layout(array: np.ndarray, key: str, path: Path) -> np.ndarray:
    """``(z, y, x[, 3])`` -> the MedSAM layout: one slice -> ``(H, W[, 3])``."""
    if array.shape[0] == 1:
        return array[0]
    if array.ndim == 4:
        raise ImageWriteError(
            f"cannot write {path}: an RGB volume with {array.shape[0]} slices has no MedSAM NPZ "
            "layout (RGB is 2D only)"
        )
    if key == IMAGE_KEY and looks_like_channels(tuple(array.shape)):
        raise ImageWriteError(
            f"cannot write {path}: a 3D image {array.shape} with {array.shape[-1]} columns would "
            "read back as a 2D colour image; use NIfTI, NRRD or MHA"
        )
    return array


def write_npz(
    target: Path, key: str, array: np.ndarray, spacing: Sequence[float], destination: Path
) -> None:
    """Write ``array`` ``(z, y, x[, 3])`` under ``key`` plus ``spacing`` (x, y, z) to ``target``.

    Args:
        target: file to write (the temporary file of an atomic write).
        key: ``"imgs"`` or ``"segs"``.
        array: data; a single slice is stored 2D as MedSAM does.
        spacing: ``(x, y, z)`` mm, stored as float64 in that order.
        destination: the final path, for messages.
    """
    data = _npz_layout(array, key, destination)
    with open(target, "wb") as handle:
        np.savez_compressed(
            handle, **{key: data, SPACING_KEY: np.asarray(spacing, dtype=np.float64)}
        )
