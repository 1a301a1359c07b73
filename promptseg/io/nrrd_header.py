"""The NRRD header (``.nrrd`` attached or ``.nhdr`` detached), checked before ITK (teem) reads it.

teem accepts geometry promptseg cannot use: singular ``space directions``,
a spacing of 1e200 (which ITK then reports as 1 mm) or 1e-30 mm. This parser
reads the text header (the ``field: value`` lines up to the first blank
line, as the NRRD format defines it; pynrrd would do the same but is not a
dependency) and refuses:

* a missing or repeated field, a dimension outside 1..16, sizes that are not
  positive integers, an unknown type, an encoding other than raw, gzip or
  text, a missing ``endian`` for multi-byte raw/gzip data;
* non-finite or out-of-range spacings (``nan`` stays allowed: NRRD's "unknown"),
  ``space directions`` that are not finite, out of range or linearly dependent,
  a non-finite ``space origin``;
* an unknown field, or a field line longer than 1000 characters (teem writes a
  failing line into a 1 KiB buffer: a long malformed ``kinds`` or ``centers``
  line, or a misspelt field name with a long value, crashes the process);
* a ``data file`` that is a list or a file-name pattern, or not a regular file.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import ImageReadError
from .common import check_regular_file, quote
from .declared import GZIP, RAW, TEXT, DeclaredImage
from .limits import MIN_DIRECTION_DETERMINANT, origin_problem, spacing_problem

MAX_HEADER_BYTES = 1 << 20
MAX_DIMENSION = 16

_TYPES = {
    "i1": ("signed char", "int8", "int8_t"),
    "u1": ("uchar", "unsigned char", "uint8", "uint8_t"),
    "i2": ("short", "short int", "signed short", "signed short int", "int16", "int16_t"),
    "u2": ("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"),
    "i4": ("int", "signed int", "int32", "int32_t"),
    "u4": ("uint", "unsigned int", "uint32", "uint32_t"),
    "i8": ("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64", "int64_t"),
    "u8": ("ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t"),
    "f4": ("float",),
    "f8": ("double",),
}
TYPES = {name: kind for kind, names in _TYPES.items() for name in names}
ENCODINGS = {"raw": RAW, "gz": GZIP, "gzip": GZIP, "txt": TEXT, "text": TEXT, "ascii": TEXT}
#: teem's field-name synonyms
_SYNONYMS = {
    "datafile": "data file", "byteskip": "byte skip", "lineskip": "line skip", "spacedimension": "space dimension",
    "spacedirections": "space directions", "spaceorigin": "space origin", "axismins": "axis mins",
    "axismaxs": "axis maxs", "centerings": "centers", "oldmin": "old min", "oldmax": "old max",
    "sampleunits": "sample units", "spaceunits": "space units", "measurementframe": "measurement frame",
    "blocksize": "block size",
}
#: the fields teem knows (after synonyms); teem crashes while reporting some unknown or malformed long ones
FIELDS = {
    "content", "number", "type", "block size", "dimension", "space", "space dimension", "sizes", "spacings",
    "thicknesses", "axis mins", "axis maxs", "space directions", "centers", "kinds", "labels", "units", "min",
    "max", "old min", "old max", "endian", "encoding", "line skip", "byte skip", "sample units", "space units",
    "space origin", "measurement frame", "data file",
}
#: longest field line passed to teem (it formats a failing line into a 1 KiB buffer)
MAX_FIELD_LINE = 1000
_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_VECTOR = re.compile(r"\(\s*([^()]*?)\s*\)")


def _fail(path: Path, reason: str):
    return ImageReadError(f"cannot read {path}: invalid NRRD header: {reason}")


def _header_lines(path: Path) -> tuple[list[str], int, bool]:
    """The header lines, the byte length of the header (incl. the blank line) and whether a blank line ended it."""
    with open(path, "rb") as handle:
        raw = handle.read(MAX_HEADER_BYTES + 1)
    if not raw.startswith(b"NRRD000") or len(raw) < 8 or not raw[7:8].isdigit():
        raise ImageReadError(f"cannot read {path}: not a NRRD file (it does not start with NRRD000x)")
    lines, position = [], 0
    while True:
        end = raw.find(b"\n", position)
        if end < 0:
            if len(raw) > MAX_HEADER_BYTES:
                raise _fail(path, f"no end of header within {MAX_HEADER_BYTES} bytes")
            tail = raw[position:].rstrip(b"\r")
            if tail:
                lines.append(tail.decode("latin-1"))
            return lines, len(raw), False
        line = raw[position:end].rstrip(b"\r")
        position = end + 1
        if not line:
            return lines, position, True
        lines.append(line.decode("latin-1"))


def _fields(lines: list[str], path: Path) -> dict[str, str]:
    fields: dict[str, str] = {}
    for number, line in enumerate(lines[1:], start=2):
        if line.startswith("#"):
            continue
        if ":=" in line.split(": ", 1)[0]:
            continue  # key:=value pair, free-form
        name, sep, value = line.partition(": ")
        if not sep:
            raise _fail(path, f"line {number} is neither 'field: value' nor a comment")
        key = re.sub(r"\s+", " ", name.strip().lower())
        key = _SYNONYMS.get(key.replace(" ", ""), key)
        if key not in FIELDS:
            raise _fail(path, f"unknown field {quote(name)} on line {number}")
        if len(line) > MAX_FIELD_LINE:
            raise _fail(path, f"field {quote(key)} on line {number} is {len(line)} characters long "
                              f"(at most {MAX_FIELD_LINE})")
        if key in fields:
            raise _fail(path, f"field {quote(key)} appears twice")
        fields[key] = value.strip()
    return fields


def _int(text: str, what: str, path: Path) -> int:
    if not re.fullmatch(r"[+-]?\d{1,18}", text.strip()):
        raise _fail(path, f"{what} {quote(text)} is not an integer")
    return int(text)


def _numbers(text: str, what: str, path: Path, allow_nan: bool = False) -> list[float]:
    values = []
    for token in text.replace(",", " ").split():
        if allow_nan and token.lower() == "nan":
            values.append(float("nan"))
        elif re.fullmatch(_NUMBER, token):
            values.append(float(token))
        else:
            raise _fail(path, f"{what} value {quote(token)} is not a finite number")
    return values


def _vectors(text: str, count: int, path: Path) -> list[list[float] | None]:
    """``(a,b,c) none (d,e,f)`` -> vectors or None, exactly ``count`` of them."""
    items: list[list[float] | None] = []
    rest = text.strip()
    while rest:
        if rest.lower().startswith("none"):
            items.append(None)
            rest = rest[4:].lstrip()
            continue
        match = _VECTOR.match(rest)
        if not match:
            raise _fail(path, f"space directions {quote(text)} are not (x,y,z) vectors or none")
        items.append(_numbers(match.group(1), "space directions", path))
        rest = rest[match.end():].lstrip()
    if len(items) != count:
        raise _fail(path, f"space directions list {len(items)} entries for {count} axes")
    return items


def _check_directions(vectors: list[list[float] | None], path: Path) -> None:
    spatial = [np.asarray(v, dtype=float) for v in vectors if v is not None]
    if not spatial:
        return
    if len({v.size for v in spatial}) != 1:
        raise _fail(path, "space direction vectors differ in length")
    matrix = np.stack(spatial, axis=1)
    scale = np.max(np.abs(matrix), axis=0)
    scale[scale == 0] = 1
    norms = scale * np.linalg.norm(matrix / scale, axis=0)  # no overflow for 1e200 mm
    problem = spacing_problem(norms)
    if problem:
        raise _fail(path, f"space directions give a {problem}")
    unit = matrix / norms
    gram = float(np.linalg.det(unit.T @ unit))
    if not gram >= MIN_DIRECTION_DETERMINANT**2:
        raise _fail(path, "space directions are linearly dependent (a singular voxel grid)")


def _check_geometry(fields: dict, dimension: int, path: Path) -> None:
    if "space directions" in fields:
        _check_directions(_vectors(fields["space directions"], dimension, path), path)
    if "spacings" in fields:
        spacings = _numbers(fields["spacings"], "spacings", path, allow_nan=True)
        if len(spacings) != dimension:
            raise _fail(path, f"spacings list {len(spacings)} values for {dimension} axes")
        known = [abs(v) for v in spacings if not np.isnan(v)]
        problem = spacing_problem(known) if known else None
        if problem:
            raise _fail(path, problem)
    if "space origin" in fields:
        match = _VECTOR.fullmatch(fields["space origin"].strip())
        if not match:
            raise _fail(path, f"space origin {quote(fields['space origin'])} is not an (x,y,z) vector")
        problem = origin_problem(_numbers(match.group(1), "space origin", path))
        if problem:
            raise _fail(path, problem)


def _data_file(fields: dict, path: Path, attached: bool) -> Path:
    name = fields.get("data file")
    if name is None:
        if not attached:
            raise _fail(path, "a detached header (.nhdr) needs a 'data file' field")
        return path
    if not name.strip():
        raise _fail(path, "the 'data file' field is empty")
    if name.split()[0] == "LIST" or len(name.split()) > 1 and "%" in name:
        raise _fail(path, "data split over several files (LIST or a file-name pattern) is not supported")
    data = Path(name)
    return data if data.is_absolute() else path.parent / data


def _skip_lines(data_path: Path, start: int, count: int, path: Path) -> int:
    """Byte position after ``count`` newlines from ``start`` (NRRD's line skip)."""
    if count == 0:
        return start
    with open(data_path, "rb") as handle:
        handle.seek(start)
        position = start
        for _ in range(count):
            line = handle.readline(MAX_HEADER_BYTES)
            if not line.endswith(b"\n"):
                raise _fail(path, f"line skip {count} passes the end of the data")
            position += len(line)
    return position


def declared_nrrd(path: Path) -> DeclaredImage:
    """Parse and check a ``.nrrd`` / ``.nhdr`` header.

    Raises:
        ImageReadError: anything listed in the module docstring.
    """
    path = Path(path)
    lines, header_bytes, ended = _header_lines(path)
    fields = _fields(lines, path)
    for required in ("type", "dimension", "sizes", "encoding"):
        if required not in fields:
            raise _fail(path, f"no '{required}' field")
    kind = TYPES.get(re.sub(r"\s+", " ", fields["type"].lower()))
    if kind is None:
        raise _fail(path, f"type {quote(fields['type'])} is not supported")
    dimension = _int(fields["dimension"], "dimension", path)
    if not 1 <= dimension <= MAX_DIMENSION:
        raise _fail(path, f"dimension {dimension} is not 1..{MAX_DIMENSION}")
    sizes = [_int(v, "size", path) for v in fields["sizes"].split()]
    if len(sizes) != dimension or any(s < 1 for s in sizes):
        raise _fail(path, f"sizes {quote(fields['sizes'])} are not {dimension} positive integers")
    encoding = ENCODINGS.get(fields["encoding"].lower())
    if encoding is None:
        raise _fail(path, f"encoding {quote(fields['encoding'])} is not supported (raw, gzip or text)")
    dtype = np.dtype(kind)
    if dtype.itemsize > 1 and encoding != TEXT:
        endian = fields.get("endian", "").lower()
        if endian not in ("little", "big"):
            raise _fail(path, f"endian {quote(fields.get('endian', ''))} is not little or big")
        dtype = dtype.newbyteorder("<" if endian == "little" else ">")
    _check_geometry(fields, dimension, path)
    byte_skip = _int(fields.get("byte skip", "0"), "byte skip", path)
    line_skip = _int(fields.get("line skip", "0"), "line skip", path)
    if byte_skip < -1 or line_skip < 0:
        raise _fail(path, f"byte skip {byte_skip} / line skip {line_skip} out of range")
    if byte_skip == -1 and encoding != RAW:
        raise _fail(path, "byte skip -1 applies to raw data only")
    attached = path.suffix.lower() == ".nrrd"
    data_path = _data_file(fields, path, attached)
    if data_path == path and not ended:
        raise _fail(path, "no blank line ends the header, so there is no attached data")
    start = header_bytes if data_path == path else 0
    if data_path != path:
        check_regular_file(data_path, f"data file of {path}:")
    start = _skip_lines(data_path, start, line_skip, path)
    if encoding == RAW:
        offset = -1 if byte_skip == -1 else start + byte_skip
        return DeclaredImage(tuple(sizes), 1, dtype, data_path, offset, RAW)
    return DeclaredImage(tuple(sizes), 1, dtype, data_path, start, encoding, skip=max(byte_skip, 0))
