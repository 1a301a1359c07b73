"""What an image header declares, checked before a native reader (ITK) sees the file.

The header parsers (:mod:`.nifti_header`, :mod:`.nrrd_header`,
:mod:`.metaimage_header`) turn a NIfTI, NRRD or MetaImage header into a
:class:`DeclaredImage`. :func:`check_declared` then refuses what ITK would
mishandle -- more voxels than the read budget, a data file that is not a
regular file, raw data shorter than declared -- and :func:`scan_data` streams
through the voxel data (decompressing on the fly, never holding more than a
few MiB) to prove that it is complete and, optionally, finite. The writers
use the same two calls to verify every file they produce.
"""

from __future__ import annotations

import gzip
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import ImageReadError
from .common import check_regular_file, quote
from .limits import check_allocation

_CHUNK = 1 << 22
_TRAILER_SLACK = 1 << 20

#: encodings :func:`scan_data` can stream through
RAW, GZIP, ZLIB, TEXT = "raw", "gzip", "zlib", "text"


@dataclass(frozen=True)
class DeclaredImage:
    """An image as its header describes it.

    Attributes:
        size: voxels per axis in file order (x first), e.g. ``(512, 512, 120)``.
        components: values per voxel (1 scalar, 3 RGB, ...).
        dtype: element type with byte order, as stored.
        data_path: the file holding the voxels (the header file itself when attached).
        data_offset: bytes into ``data_path`` where the voxels (RAW) or their
            compressed stream (GZIP, ZLIB) start; -1 for RAW means "the last
            ``nbytes`` of the file".
        encoding: RAW, GZIP (gzip stream; a ``.nii.gz`` is one from offset 0),
            ZLIB (zlib or gzip stream) or TEXT (numbers as text).
        skip: decoded bytes before the first voxel (a ``.nii.gz``'s vox_offset,
            NRRD's byte skip for gzip data).
        compressed_size: for ZLIB, the compressed bytes the reader consumes
            (MetaImage's ``CompressedDataSize``); None: up to the end of the file.
    """

    size: tuple[int, ...]
    components: int
    dtype: np.dtype
    data_path: Path
    data_offset: int
    encoding: str
    skip: int = 0
    compressed_size: Optional[int] = None

    @property
    def nbytes(self) -> int:
        """Bytes of voxel data the header promises."""
        total = self.dtype.itemsize * self.components
        for extent in self.size:
            total *= extent
        return total


def check_declared(declared: DeclaredImage, source: str, header_path: Path) -> None:
    """Refuse a header whose promise cannot be kept without risk.

    Checks the read budget, that a separate data file is a regular file, and
    for raw data that the file holds at least the declared bytes.

    Raises:
        ImageReadError: one line naming ``source``.
    """
    check_allocation(tuple(declared.size) + (declared.components,), declared.dtype.itemsize, source)
    if declared.data_path != header_path:
        check_regular_file(declared.data_path, f"data file of {source}:")
    if declared.encoding == RAW:
        available = declared.data_path.stat().st_size
        if declared.data_offset > 0:
            available -= declared.data_offset
        if available < declared.nbytes:
            raise ImageReadError(
                f"cannot read {source}: the file is truncated ({max(available, 0)} of "
                f"{declared.nbytes} bytes of voxel data present)"
            )


@dataclass(frozen=True)
class ScanResult:
    """What :func:`scan_data` found: bytes of voxel data present (capped) and non-finite values."""

    available: int
    nonfinite: int


def _voxel_stream(declared: DeclaredImage, handle):
    """A reader over ``handle`` positioned at the first voxel byte (decompressing where needed)."""
    if declared.encoding == RAW:
        if declared.data_offset < 0:
            handle.seek(max(declared.data_path.stat().st_size - declared.nbytes, 0))
        else:
            handle.seek(declared.data_offset)
        return handle
    handle.seek(max(declared.data_offset, 0))
    if declared.encoding == GZIP:
        stream = gzip.GzipFile(fileobj=handle, mode="rb")
    else:
        stream = _ZlibReader(handle, declared.compressed_size)
    _skip(stream, declared.skip)
    return stream


def _skip(stream, count: int) -> None:
    while count > 0:
        chunk = stream.read(min(count, _CHUNK))
        if not chunk:
            return
        count -= len(chunk)


class _ZlibReader:
    """Minimal ``read(n)`` over a zlib or gzip stream (MetaImage accepts both headers)."""

    def __init__(self, handle, limit: Optional[int]) -> None:
        self._handle = handle
        self._left = limit  # compressed bytes the format lets its reader consume (None: to the end)
        self._inflater = zlib.decompressobj(47)  # 32 + 15: detect a zlib or gzip header
        self._pending = b""

    def read(self, size: int) -> bytes:
        while len(self._pending) < size and not self._inflater.eof:
            want = _CHUNK if self._left is None else min(_CHUNK, self._left)
            compressed = self._handle.read(want) if want else b""
            if self._left is not None:
                self._left -= len(compressed)
            if not compressed:
                break
            self._pending += self._inflater.decompress(compressed, max(size, _CHUNK))
            while self._inflater.unconsumed_tail and len(self._pending) < size:
                self._pending += self._inflater.decompress(self._inflater.unconsumed_tail, _CHUNK)
        out, self._pending = self._pending[:size], self._pending[size:]
        return out


_TEXT_NUMBER = re.compile(rb"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|nan|inf|infinity)", re.IGNORECASE)
#: longest number token accepted in text-encoded data (teem overflows a buffer on long tokens)
MAX_TEXT_TOKEN = 64


def _scan_text(declared: DeclaredImage, source: str) -> ScanResult:
    """Text-encoded voxels: as many well-formed number tokens as declared (teem crashes on a long token)."""
    count = declared.nbytes // declared.dtype.itemsize
    size = declared.data_path.stat().st_size
    check_allocation((max(size - max(declared.data_offset, 0), 0),), 1, source)
    with open(declared.data_path, "rb") as handle:
        handle.seek(max(declared.data_offset, 0))
        tokens = re.split(rb"[\s,]+", handle.read().strip())
    tokens = [t for t in tokens[:count] if t]
    for number, token in enumerate(tokens, start=1):
        if len(token) > MAX_TEXT_TOKEN or not _TEXT_NUMBER.fullmatch(token):
            raise ImageReadError(
                f"cannot read {source}: text-encoded value {number} is not a number ({quote(token.decode('latin-1'))})"
            )
    nonfinite = sum(1 for t in tokens if t.lower().lstrip(b"+-").startswith((b"nan", b"inf")))
    return ScanResult(len(tokens) * declared.dtype.itemsize, nonfinite)


def scan_data(declared: DeclaredImage, source: str, check_finite: bool = False) -> ScanResult:
    """Stream through the voxel data: how many bytes are there (up to the declared size), how many non-finite values.

    Decompression errors and a gzip stream cut short become
    :class:`ImageReadError`. Memory use is a few MiB whatever the image size.

    Args:
        declared: the parsed header.
        source: file name for messages.
        check_finite: count NaN/inf values (float data only).
    """
    if declared.encoding == TEXT:
        return _scan_text(declared, source)
    if declared.encoding == RAW and not check_finite:
        size = declared.data_path.stat().st_size
        present = size - declared.data_offset if declared.data_offset >= 0 else size
        return ScanResult(max(min(present, declared.nbytes), 0), 0)
    dtype = declared.dtype
    floating = check_finite and dtype.kind == "f"
    wanted = declared.nbytes
    available = nonfinite = 0
    carry = b""
    try:
        with open(declared.data_path, "rb") as handle:
            stream = _voxel_stream(declared, handle)
            while available < wanted:
                chunk = stream.read(min(_CHUNK, wanted - available))
                if not chunk:
                    break
                available += len(chunk)
                if floating:
                    chunk = carry + chunk
                    usable = len(chunk) - len(chunk) % dtype.itemsize
                    values = np.frombuffer(chunk[:usable], dtype=dtype)
                    nonfinite += int(values.size - np.count_nonzero(np.isfinite(values)))
                    carry = chunk[usable:]
            if declared.encoding != RAW and available == wanted:
                # read on a little so the decompressor reaches the stream's end and checks its CRC
                stream.read(_TRAILER_SLACK)
    except (OSError, EOFError, zlib.error) as error:
        raise ImageReadError(
            f"cannot read {source}: truncated or corrupt compressed data ({error})"
        ) from None
    return ScanResult(available, nonfinite)


def check_complete(declared: DeclaredImage, source: str, check_finite: bool = False) -> None:
    """Raise unless the voxel data are all there (and finite, when asked).

    Raises:
        ImageReadError: truncated/corrupt data, or non-finite values.
    """
    result = scan_data(declared, source, check_finite)
    if result.available < declared.nbytes:
        raise ImageReadError(
            f"cannot read {source}: the file is truncated ({result.available} of "
            f"{declared.nbytes} bytes of voxel data present)"
        )
    if result.nonfinite:
        count = declared.nbytes // declared.dtype.itemsize
        raise ImageReadError(f"{source}: {result.nonfinite} of {count} voxels are not finite (NaN or inf)")
