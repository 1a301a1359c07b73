"""The NIfTI-1 / NIfTI-2 header, checked before ITK reads the file.

ITK's NIfTI reader (nifti_io) trusts the header: a non-finite ``srow`` makes
it loop forever while it orthogonalises the matrix, a NaN ``srow`` becomes a
NaN origin, and NaN/inf voxels are silently replaced by 0. So the fields ITK
acts on are parsed here from the fixed binary layout (nibabel would parse them
too, but is not a dependency) and refused when they cannot describe a scan:

* ``sizeof_hdr`` 348 (NIfTI-1) or 540 (NIfTI-2), either byte order, magic
  ``n+1`` / ``n+2`` (single file: a ``.nii`` whose voxels live in a separate
  ``.img`` is refused);
* ``dim[0]`` in 1..7 and ``dim[1..dim[0]]`` >= 1, a supported ``datatype``
  whose ``bitpix`` agrees;
* finite ``pixdim``, quaternion, qoffset and ``srow`` values, a
  non-singular sform when ``sform_code`` > 0, known xform codes;
* finite ``scl_slope`` / ``scl_inter`` that cannot overflow float32;
* ``vox_offset`` inside the file.

:func:`declared_nifti` returns the :class:`~.declared.DeclaredImage` the rest
of the pipeline checks (read budget, completeness, finite voxels).
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import ImageReadError
from .declared import GZIP, RAW, DeclaredImage

#: NIfTI datatype code -> (numpy element type, values per voxel)
DATATYPES = {
    2: ("u1", 1), 4: ("i2", 1), 8: ("i4", 1), 16: ("f4", 1), 64: ("f8", 1),
    256: ("i1", 1), 512: ("u2", 1), 768: ("u4", 1), 1024: ("i8", 1), 1280: ("u8", 1),
    128: ("u1", 3), 2304: ("u1", 4),
}
_UNSUPPORTED = {1: "1-bit", 32: "complex64", 1792: "complex128", 1536: "float128", 2048: "complex256"}
#: qform_code / sform_code values defined by NIfTI (0 unknown .. 5 template)
XFORM_CODES = range(0, 6)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
#: nifti_io stores vox_offset in an int
_MAX_OFFSET = 2**31 - 1


def _is_gzip(path: Path) -> bool:
    """True if the file starts with the gzip magic (ITK's zlib reads either form whatever the name says)."""
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _read_head(path: Path, compressed: bool) -> bytes:
    try:
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as handle:
            return handle.read(544)
    except (OSError, EOFError, zlib.error) as error:
        raise ImageReadError(f"cannot read {path}: not a readable gzip file ({error})") from None


def _layout(head: bytes, path: Path):
    """(version, byte order) from ``sizeof_hdr``."""
    for order in ("<", ">"):
        if len(head) >= 4:
            size = struct.unpack(order + "i", head[:4])[0]
            if size == 348 and len(head) >= 348:
                return 1, order
            if size == 540 and len(head) >= 540:
                return 2, order
    raise ImageReadError(
        f"cannot read {path}: not a NIfTI file (the header does not start with "
        "sizeof_hdr 348 or 540, or the file is shorter than its header)"
    )


def _fields(head: bytes, version: int, order: str) -> dict:
    """The header fields ITK uses, by name (floats as Python floats)."""
    u = lambda fmt, offset: struct.unpack_from(order + fmt, head, offset)  # noqa: E731
    if version == 1:
        return {
            "magic": head[344:348], "dim": u("8h", 40), "datatype": u("h", 70)[0], "bitpix": u("h", 72)[0],
            "pixdim": u("8f", 76), "vox_offset": u("f", 108)[0], "scl": u("2f", 112),
            "qform_code": u("h", 252)[0], "sform_code": u("h", 254)[0],
            "quatern": u("6f", 256), "srow": u("12f", 280), "header_size": 348,
        }
    return {
        "magic": head[4:12], "datatype": u("h", 12)[0], "bitpix": u("h", 14)[0], "dim": u("8q", 16),
        "pixdim": u("8d", 104), "vox_offset": u("q", 168)[0], "scl": u("2d", 176),
        "qform_code": u("i", 344)[0], "sform_code": u("i", 348)[0],
        "quatern": u("6d", 352), "srow": u("12d", 400), "header_size": 540,
    }


def _finite(values, name: str, path: Path) -> None:
    if not all(math.isfinite(v) for v in values):
        shown = ", ".join(f"{v:g}" for v in values)
        raise ImageReadError(f"cannot read {path}: the NIfTI header's {name} ({shown}) is not finite")


def _check_magic(fields: dict, version: int, path: Path) -> None:
    magic = fields["magic"]
    if version == 1 and magic == b"ni1\x00":
        raise ImageReadError(
            f"cannot read {path}: its header says the voxels are in a separate .img file "
            "(a .hdr/.img pair); convert it to a single .nii file"
        )
    expected = b"n+1\x00" if version == 1 else b"n+2\x00\r\n\x1a\n"
    if magic != expected:
        raise ImageReadError(
            f"cannot read {path}: not a NIfTI-{version} file (magic {bytes(magic)!r}, expected {expected!r})"
        )


def _dims(fields: dict, path: Path) -> tuple[int, ...]:
    dim = fields["dim"]
    if not 1 <= dim[0] <= 7:
        raise ImageReadError(f"cannot read {path}: the NIfTI header's dim[0] is {dim[0]}, not 1..7")
    size = tuple(int(d) for d in dim[1 : dim[0] + 1])
    if any(d < 1 for d in size):
        raise ImageReadError(f"cannot read {path}: the NIfTI header declares an empty or negative size {size}")
    return size


def _element(fields: dict, path: Path) -> tuple[np.dtype, int]:
    code = fields["datatype"]
    if code in _UNSUPPORTED:
        raise ImageReadError(f"cannot read {path}: {_UNSUPPORTED[code]} NIfTI data are not supported")
    if code not in DATATYPES:
        raise ImageReadError(f"cannot read {path}: unknown NIfTI datatype {code}")
    kind, components = DATATYPES[code]
    dtype = np.dtype(kind)
    if fields["bitpix"] != dtype.itemsize * 8 * components:
        raise ImageReadError(
            f"cannot read {path}: the NIfTI header's bitpix {fields['bitpix']} does not match "
            f"datatype {code} ({dtype.itemsize * 8 * components} bits)"
        )
    return dtype, components


def _check_transforms(fields: dict, ndim: int, path: Path) -> None:
    _finite(fields["pixdim"][: ndim + 1], "pixdim", path)
    _finite(fields["quatern"], "quaternion / qoffset", path)
    _finite(fields["srow"], "srow_x/y/z", path)
    for name in ("qform_code", "sform_code"):
        if fields[name] not in XFORM_CODES:
            raise ImageReadError(f"cannot read {path}: the NIfTI header's {name} {fields[name]} is not 0..5")
    if fields["sform_code"] > 0:
        matrix = np.asarray(fields["srow"], dtype=float).reshape(3, 4)[:, :3]
        norms = np.linalg.norm(matrix, axis=0)
        if np.any(norms == 0) or abs(float(np.linalg.det(matrix / np.where(norms == 0, 1, norms)))) < 1e-3:
            raise ImageReadError(
                f"cannot read {path}: the NIfTI sform matrix {np.round(matrix, 6).tolist()} is singular"
            )


def _check_scaling(fields: dict, dtype: np.dtype, path: Path) -> None:
    slope, inter = fields["scl"]
    _finite((slope, inter), "scl_slope / scl_inter", path)
    if slope == 0 or (slope == 1 and inter == 0):
        return
    info = np.finfo(dtype) if dtype.kind == "f" else np.iinfo(dtype)
    largest = max(abs(float(info.min)), abs(float(info.max)))
    if abs(slope) * largest + abs(inter) > _FLOAT32_MAX:
        raise ImageReadError(
            f"cannot read {path}: the NIfTI scaling (scl_slope {slope:g}, scl_inter {inter:g}) "
            f"overflows float32 for {dtype} data"
        )


def declared_nifti(path: Path) -> DeclaredImage:
    """Parse and check a ``.nii`` / ``.nii.gz`` header.

    Returns:
        The declared image: size in file order (x first), element type,
        and where the voxels are (``vox_offset`` into the file, or into the
        decompressed stream for ``.nii.gz``).

    Raises:
        ImageReadError: anything listed in the module docstring.
    """
    path = Path(path)
    compressed = _is_gzip(path)
    head = _read_head(path, compressed)
    version, order = _layout(head, path)
    fields = _fields(head, version, order)
    _check_magic(fields, version, path)
    size = _dims(fields, path)
    dtype, components = _element(fields, path)
    _check_transforms(fields, len(size), path)
    _check_scaling(fields, dtype, path)
    offset = fields["vox_offset"]
    if not math.isfinite(offset) or offset < 0 or offset > _MAX_OFFSET:
        raise ImageReadError(f"cannot read {path}: the NIfTI header's vox_offset {offset:g} is invalid")
    offset = max(int(offset), fields["header_size"])
    dtype = dtype.newbyteorder(order) if dtype.itemsize > 1 else dtype
    if compressed:
        return DeclaredImage(size, components, dtype, path, 0, GZIP, skip=offset)
    return DeclaredImage(size, components, dtype, path, offset, RAW)
