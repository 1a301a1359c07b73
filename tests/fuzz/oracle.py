"""When is an accepted input "garbage accepted"? Checks written independently of promptseg's readers.

A reader's result is garbage when

* the volume breaks what a :class:`~promptseg.volume.Volume` promises: an
  empty or non-numeric array, NaN/inf voxels, non-finite geometry, a spacing
  outside 1e-6 .. 1e5 mm, an origin beyond 1e9 mm, a singular direction; or
* the array disagrees with the file: its shape differs from the size the
  header declares, or (for NIfTI, NRRD and MetaImage files simple enough for
  this module to decode with NumPy alone: attached raw/gzip/zlib data, no
  intensity scaling) its values differ from the bytes in the file.

An accepted prompt document is garbage when an object has non-finite
coordinates, a label outside 1..65535, repeated labels, or a slice outside
the image. Anything this module cannot parse itself is not judged (it never
reports a problem because of its own limits).
"""

from __future__ import annotations

import gzip
import re
import struct
import zlib
from pathlib import Path
from typing import Optional

import numpy as np

_NIFTI_TYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4", 1024: "i8", 1280: "u8"}
_NRRD_TYPES = {"short": "i2", "unsigned short": "u2", "ushort": "u2", "int16": "i2", "uint16": "u2", "float": "f4",
               "double": "f8", "unsigned char": "u1", "uchar": "u1", "uint8": "u1", "int8": "i1", "int": "i4",
               "int32": "i4", "uint": "u4", "uint32": "u4", "signed char": "i1"}
_MET_TYPES = {"MET_SHORT": "i2", "MET_USHORT": "u2", "MET_UCHAR": "u1", "MET_CHAR": "i1", "MET_FLOAT": "f4",
              "MET_DOUBLE": "f8", "MET_INT": "i4", "MET_UINT": "u4"}


def volume_problem(volume) -> Optional[str]:
    """What is wrong with a volume regardless of its file, or None."""
    array = np.asarray(volume.array)
    if array.size == 0:
        return f"empty array {array.shape}"
    if array.dtype.kind not in "biuf":
        return f"non-numeric dtype {array.dtype}"
    if not (array.ndim == 3 or (array.ndim == 4 and array.shape[-1] == 3)):
        return f"array shape {array.shape} is not (z, y, x) or (z, y, x, 3)"
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        return "non-finite voxel values"
    spacing = np.asarray(volume.spacing, dtype=float)
    origin = np.asarray(volume.origin, dtype=float)
    direction = np.asarray(volume.direction, dtype=float)
    if not (np.all(np.isfinite(spacing)) and np.all(np.isfinite(origin)) and np.all(np.isfinite(direction))):
        return f"non-finite geometry: spacing {spacing}, origin {origin}, direction {direction.ravel()}"
    if np.any(spacing < 1e-6) or np.any(spacing > 1e5):
        return f"absurd spacing {spacing}"
    if np.any(np.abs(origin) > 1e9):
        return f"absurd origin {origin}"
    norms = np.linalg.norm(direction, axis=0)
    if np.any(norms == 0) or abs(np.linalg.det(direction / norms)) < 1e-3:
        return f"singular direction {direction.ravel()}"
    return None


def _compare(volume, size_xyz, data: Optional[bytes], dtype: Optional[str], order: str) -> Optional[str]:
    size = [int(s) for s in size_xyz]
    if len(size) > 3 or any(s < 1 for s in size):
        return None
    size += [1] * (3 - len(size))
    expected_shape = (size[2], size[1], size[0])
    if tuple(volume.array.shape[:3]) != expected_shape:
        return f"array shape {volume.array.shape} but the header declares (z, y, x) {expected_shape}"
    if data is None or dtype is None or volume.array.ndim != 3:
        return None
    dt = np.dtype(dtype).newbyteorder(order) if np.dtype(dtype).itemsize > 1 else np.dtype(dtype)
    count = int(np.prod(expected_shape))
    if len(data) < count * dt.itemsize:
        return f"the file holds {len(data)} bytes of voxels, fewer than the {count * dt.itemsize} declared"
    expected = np.frombuffer(data[: count * dt.itemsize], dtype=dt).reshape(expected_shape)
    if not np.array_equal(np.asarray(volume.array, dtype=float), expected.astype(float), equal_nan=True):
        return "voxel values differ from the bytes in the file"
    return None


def _nifti(path: Path, volume) -> Optional[str]:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except Exception:
            return None
    for order in "<>":
        if len(raw) >= 348 and struct.unpack(order + "i", raw[:4])[0] == 348:
            dim = struct.unpack(order + "8h", raw[40:56])
            datatype = struct.unpack(order + "h", raw[70:72])[0]
            offset = int(struct.unpack(order + "f", raw[108:112])[0])
            slope, inter = struct.unpack(order + "2f", raw[112:120])
            if not 1 <= dim[0] <= 3:
                return None
            plain = datatype in _NIFTI_TYPES and (slope in (0.0, 1.0)) and inter == 0.0
            data = raw[max(offset, 348):] if plain else None
            return _compare(volume, dim[1 : dim[0] + 1], data, _NIFTI_TYPES.get(datatype), order)
    return None


def _text_header(raw: bytes, end: int) -> dict[str, str]:
    """``key: value`` / ``Key = Value`` lines before ``end``; the first occurrence of a key wins."""
    fields: dict[str, str] = {}
    for line in raw[:end].decode("latin-1").splitlines():
        match = re.match(r"\s*([^=:]+?)\s*(?::=|:|=)\s?(.*)$", line)
        if match:
            fields.setdefault(match.group(1).strip(), match.group(2).strip())
    return fields


def _nrrd(path: Path, volume) -> Optional[str]:
    raw = path.read_bytes()
    end = raw.find(b"\n\n")
    if end < 0:
        return None
    # teem reads field names (and endian / encoding words) case-insensitively
    fields = {key.lower(): value for key, value in reversed(list(_text_header(raw, end).items()))}
    try:
        sizes = [int(v) for v in fields["sizes"].split()]
    except (KeyError, ValueError):
        return None
    simple = (path.suffix == ".nrrd" and "data file" not in fields and "datafile" not in fields and fields.get("byte skip", "0") == "0"
              and fields.get("line skip", "0") == "0" and fields.get("type") in _NRRD_TYPES)
    data = raw[end + 2:]
    if simple and fields.get("encoding", "").lower() in ("gzip", "gz"):
        try:
            data = gzip.decompress(data)
        except Exception:
            return None
    elif fields.get("encoding", "").lower() != "raw":
        simple = False
    order = ">" if fields.get("endian", "").lower() == "big" else "<"
    return _compare(volume, sizes, data if simple else None, _NRRD_TYPES.get(fields.get("type", "")), order)


def _true(text: str) -> bool:
    """A MetaIO boolean: MetaIO looks at the first character only."""
    return text[:1] in ("T", "t", "1")


def _metaimage(path: Path, volume) -> Optional[str]:
    raw = path.read_bytes()
    marker = raw.find(b"ElementDataFile")
    end = raw.find(b"\n", marker) if marker >= 0 else -1
    if end < 0:
        return None
    fields = _text_header(raw, end)
    try:
        sizes = [int(v) for v in fields["DimSize"].split()]
    except (KeyError, ValueError):
        return None
    channels = fields.get("ElementNumberOfChannels", "1")
    simple = (fields.get("ElementDataFile") == "LOCAL" and fields.get("ElementType") in _MET_TYPES
              and channels == "1" and _true(fields.get("BinaryData", "True")))
    data = raw[end + 1:]
    if simple and _true(fields.get("CompressedData", "")):
        try:
            data = zlib.decompress(data)
        except Exception:
            return None
    order = ">" if _true(fields.get("BinaryDataByteOrderMSB", "")) or _true(fields.get("ElementByteOrderMSB", "")) else "<"
    return _compare(volume, sizes, data if simple else None, _MET_TYPES.get(fields.get("ElementType", "")), order)


def _png(path: Path, volume) -> Optional[str]:
    raw = path.read_bytes()
    if raw[:8] != b"\x89PNG\r\n\x1a\n" or raw[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", raw[16:24])
    if tuple(volume.array.shape[1:3]) != (height, width):
        return f"array shape {volume.array.shape} but the PNG header declares {width} x {height}"
    return None


def _npz(path: Path, volume, labels: bool) -> Optional[str]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            key = next((k for k in (("gts", "segs") if labels else ("imgs",)) if k in archive.files), None)
            if key is None:
                return "accepted an archive without the expected key"
            data = archive[key]
    except Exception:
        return None
    if data.size != volume.array.size and data.size != volume.array.size * 3:
        return f"array of {volume.array.size} values from a key of shape {data.shape}"
    if data.size == volume.array.size and not np.array_equal(
            np.asarray(data, dtype=float).ravel(), np.asarray(volume.array, dtype=float).ravel(), equal_nan=True):
        return "voxel values differ from the archive's array"
    return None


def file_problem(path: Path, volume, labels: bool = False) -> Optional[str]:
    """What is wrong with ``volume`` read from ``path``, or None (see the module docstring)."""
    problem = volume_problem(volume)
    if problem:
        return problem
    name = path.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            return _nifti(path, volume)
        if name.endswith(".nrrd"):
            return _nrrd(path, volume)
        if name.endswith(".mha"):
            return _metaimage(path, volume)
        if name.endswith(".png"):
            return _png(path, volume)
        if name.endswith(".npz"):
            return _npz(path, volume, labels)
    except (struct.error, ValueError, OSError, KeyError, IndexError):
        return None
    return None


def prompts_problem(objects, shape: tuple[int, int, int]) -> Optional[str]:
    """What is wrong with accepted object prompts on an image of ``shape`` (z, y, x), or None."""
    labels = [obj.label for obj in objects]
    if len(set(labels)) != len(labels):
        return f"repeated labels {labels}"
    for obj in objects:
        if not 1 <= obj.label <= 65535:
            return f"label {obj.label}"
        for z, sp in obj.slices.items():
            if not 0 <= z < shape[0]:
                return f"slice {z} outside 0..{shape[0] - 1}"
            values = list(sp.box or ()) + [c for p in sp.points for c in (p.x, p.y)]
            if not all(np.isfinite(v) for v in values):
                return f"non-finite coordinates {values}"
    return None
