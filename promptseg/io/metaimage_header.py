"""The MetaImage header (``.mha`` / ``.mhd``), checked before ITK (MetaIO) reads it.

MetaIO sizes its arrays from ``NDims`` without bounds checks: ``NDims = -1``
segfaults the process, and a truncated compressed stream is reported on
stderr but returns zero-filled voxels. This parser reads the ``Key = Value``
lines up to ``ElementDataFile`` the way MetaIO does (the key ends at the
first ``=`` or ``:``; names are case-sensitive) and refuses, before MetaIO
runs:

* a repeated key, a line without a separator, ``NDims`` outside 2..4, a
  ``DimSize`` that is not ``NDims`` positive integers, an unknown
  ``ElementType``, more than 64 channels;
* spacing, origin, direction or centre-of-rotation fields with the wrong
  number of values, non-finite values, spacing outside the accepted range
  or a singular direction matrix;
* compressed data without a ``CompressedDataSize`` or with one larger than the
  data present (MetaIO leaves voxels uninitialised when the stream does not
  end within it: :func:`~.declared.check_complete` proves that it does), a
  data file that is a list, a pattern or not a regular file.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import ImageReadError
from .common import check_regular_file, quote
from .declared import RAW, TEXT, ZLIB, DeclaredImage
from .limits import direction_problem, origin_problem, spacing_problem

MAX_HEADER_BYTES = 1 << 20
MAX_CHANNELS = 64

#: MetaIO element types -> numpy kinds (MetaIO's MET_LONG is 4 bytes)
ELEMENT_TYPES = {
    "MET_CHAR": "i1", "MET_UCHAR": "u1", "MET_SHORT": "i2", "MET_USHORT": "u2",
    "MET_INT": "i4", "MET_UINT": "u4", "MET_LONG": "i4", "MET_ULONG": "u4",
    "MET_LONG_LONG": "i8", "MET_ULONG_LONG": "u8", "MET_FLOAT": "f4", "MET_DOUBLE": "f8",
}
_VECTOR_KEYS = ("ElementSpacing", "ElementSize", "Offset", "Position", "Origin", "CenterOfRotation")
_MATRIX_KEYS = ("TransformMatrix", "Rotation", "Orientation")
_BOOLEANS = ("BinaryData", "BinaryDataByteOrderMSB", "ElementByteOrderMSB", "CompressedData")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _fail(path: Path, reason: str):
    return ImageReadError(f"cannot read {path}: invalid MetaImage header: {reason}")


def _header(path: Path) -> tuple[dict[str, str], int]:
    """Keys up to and including ``ElementDataFile``, and the byte offset just after that line."""
    with open(path, "rb") as handle:
        raw = handle.read(MAX_HEADER_BYTES)
    fields: dict[str, str] = {}
    position = 0
    while True:
        end = raw.find(b"\n", position)
        if end < 0:
            raise _fail(path, "no ElementDataFile line" if len(raw) < MAX_HEADER_BYTES
                        else f"no ElementDataFile within {MAX_HEADER_BYTES} bytes")
        line = raw[position:end].decode("latin-1").strip()
        position = end + 1
        if not line:
            continue
        match = re.match(r"([^=:]*)[=:]\s*(.*)$", line)
        if not match or not match.group(1).strip():
            raise _fail(path, f"line {quote(line)} is not 'Key = Value'")
        key, value = match.group(1).strip(), match.group(2).strip()
        if key in fields:
            raise _fail(path, f"{quote(key)} appears twice")
        fields[key] = value
        if key == "ElementDataFile":
            return fields, position


def _ints(text: str, key: str, path: Path) -> list[int]:
    tokens = text.split()
    if not all(re.fullmatch(r"[+-]?\d{1,18}", t) for t in tokens):
        raise _fail(path, f"{quote(key)} = {quote(text)} is not a list of integers")
    return [int(t) for t in tokens]


def _floats(text: str, key: str, count: int, path: Path) -> np.ndarray:
    tokens = text.split()
    if len(tokens) != count or not all(_NUMBER.fullmatch(t) for t in tokens):
        raise _fail(path, f"{key} = {quote(text)} is not {count} finite numbers")
    return np.array([float(t) for t in tokens])


def _geometry(fields: dict, ndims: int, path: Path) -> None:
    for key in _VECTOR_KEYS:
        if key in fields:
            values = _floats(fields[key], key, ndims, path)
            check = spacing_problem if key.startswith("Element") else origin_problem
            problem = check(np.abs(values) if key.startswith("Element") else values)
            if problem:
                raise _fail(path, f"{key}: {problem}")
    for key in _MATRIX_KEYS:
        if key in fields:
            # MetaIO writes the matrix row by row; ITK's direction is its transpose
            matrix = _floats(fields[key], key, ndims * ndims, path).reshape(ndims, ndims).T
            problem = direction_problem(matrix)
            if problem:
                raise _fail(path, f"{key}: {problem}")


def _element_type(fields: dict, path: Path) -> tuple[np.dtype, int]:
    name = fields.get("ElementType")
    if name not in ELEMENT_TYPES:
        raise _fail(path, f"ElementType {quote(name or '')} is not supported")
    channels = _ints(fields.get("ElementNumberOfChannels", "1"), "ElementNumberOfChannels", path)
    if len(channels) != 1 or not 1 <= channels[0] <= MAX_CHANNELS:
        raise _fail(path, f"ElementNumberOfChannels must be 1..{MAX_CHANNELS}")
    for key in _BOOLEANS:
        if key in fields and fields[key].lower() not in ("true", "false", "1", "0"):
            raise _fail(path, f"{key} = {quote(fields[key])} is not True or False")
    dtype = np.dtype(ELEMENT_TYPES[name])
    msb = any(fields.get(k, "").lower() in ("true", "1") for k in ("BinaryDataByteOrderMSB", "ElementByteOrderMSB"))
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">" if msb else "<")
    return dtype, channels[0]


def _data_location(fields: dict, path: Path, header_end: int) -> tuple[Path, int]:
    name = fields["ElementDataFile"]
    if name == "LOCAL":
        return path, header_end
    if not name or name.split()[0] == "LIST" or "%" in name:
        raise _fail(path, "data split over several files (LIST or a file-name pattern) is not supported")
    data = Path(name)
    data = data if data.is_absolute() else path.parent / data
    check_regular_file(data, f"data file of {path}:")
    skip = _ints(fields.get("HeaderSize", "0"), "HeaderSize", path)
    if len(skip) != 1 or skip[0] < -1:
        raise _fail(path, "HeaderSize must be -1 or a byte count")
    return data, skip[0]


def declared_metaimage(path: Path) -> DeclaredImage:
    """Parse and check a ``.mha`` / ``.mhd`` header.

    Raises:
        ImageReadError: anything listed in the module docstring.
    """
    path = Path(path)
    fields, header_end = _header(path)
    if fields.get("ObjectType", "Image") != "Image":
        raise _fail(path, f"ObjectType {quote(fields['ObjectType'])} is not Image")
    ndims = _ints(fields.get("NDims", ""), "NDims", path)
    if len(ndims) != 1 or not 2 <= ndims[0] <= 4:
        raise _fail(path, f"NDims = {quote(fields.get('NDims', ''))}: promptseg reads 2D and 3D images (NDims 2..4)")
    ndims = ndims[0]
    size = _ints(fields.get("DimSize", ""), "DimSize", path)
    if len(size) != ndims or any(s < 1 for s in size):
        raise _fail(path, f"DimSize = {quote(fields.get('DimSize', ''))} is not {ndims} positive integers")
    _geometry(fields, ndims, path)
    dtype, channels = _element_type(fields, path)
    data_path, offset = _data_location(fields, path, header_end)
    if fields.get("BinaryData", "True").lower() in ("false", "0"):
        return DeclaredImage(tuple(size), channels, dtype, data_path, offset, TEXT)
    if fields.get("CompressedData", "False").lower() in ("true", "1"):
        if offset < 0:
            raise _fail(path, "HeaderSize -1 cannot be combined with compressed data")
        # MetaIO inflates exactly CompressedDataSize bytes and leaves the rest of the
        # image uninitialised when the stream is longer, or when the field is missing
        compressed = _ints(fields.get("CompressedDataSize", ""), "CompressedDataSize", path)
        present = data_path.stat().st_size - offset
        if len(compressed) != 1 or not 0 < compressed[0] <= present:
            raise _fail(path, f"CompressedDataSize {quote(fields.get('CompressedDataSize', '(missing)'))} "
                              f"does not fit the {max(present, 0)} bytes present")
        return DeclaredImage(tuple(size), channels, dtype, data_path, offset, ZLIB, compressed_size=compressed[0])
    return DeclaredImage(tuple(size), channels, dtype, data_path, offset, RAW)
