"""2D raster images (PNG, JPEG, TIFF, BMP) through Pillow.

A raster image becomes a one-slice volume: grayscale ``(1, H, W)`` keeping its
dtype (uint8, uint16, int32 or float32), colour ``(1, H, W, 3)`` uint8 (alpha
dropped; RGB whose channels are all equal becomes grayscale). A multi-page
TIFF becomes ``(pages, H, W[, 3])``. Rasters carry no usable geometry:
spacing 1 mm, origin 0, identity direction, ``metadata["stored_geometry"] == ()``.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from ..errors import ImageReadError, ImageWriteError
from ..volume import Volume
from .common import check_voxels, gray_if_equal_channels, printable
from .limits import check_allocation

_RGB_WITH_EXTRA = ("RGBA", "RGBa", "RGBX")
_PLAIN = ("L", "I", "F", "RGB")


def _native(array: np.ndarray) -> np.ndarray:
    """Native byte order (Pillow gives big-endian arrays for ``I;16B``)."""
    if array.dtype.byteorder not in ("=", "|"):
        return array.astype(array.dtype.newbyteorder("="))
    return array


def frame_to_array(frame: Image.Image, labels: bool = False) -> np.ndarray:
    """One Pillow frame -> ``(H, W)`` or ``(H, W, 3)``.

    Args:
        frame: a loaded Pillow image.
        labels: keep palette indices (mode ``P``) and bilevel 0/1 (mode ``1``)
            as label values instead of converting them to colours / 0/255.
    """
    mode = frame.mode
    if mode == "1":
        array = np.asarray(frame, dtype=np.uint8)
        return array if labels else array * np.uint8(255)
    if mode == "P" and labels:
        return np.asarray(frame)
    if mode.startswith("I;16"):
        return _native(np.asarray(frame))
    if mode in _PLAIN:
        return np.asarray(frame)
    if mode in _RGB_WITH_EXTRA:
        return np.asarray(frame)[..., :3]
    if mode in ("LA", "La"):
        return np.asarray(frame)[..., 0]
    return np.asarray(frame.convert("RGB"))


#: what Pillow's (pure-Python) format plugins raise on a corrupt file; each means "cannot decode"
_DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, TypeError, EOFError, struct.error,
                  IndexError, KeyError, ZeroDivisionError, OverflowError, Image.DecompressionBombError)
#: bytes per value of the Pillow modes a frame can have after :func:`frame_to_array`
_MODE_BYTES = {"I": 4, "F": 4, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}


def _frame_bytes(frame: Image.Image) -> int:
    """Upper bound of the bytes one decoded frame takes (before Pillow decodes it)."""
    width, height = frame.size
    bands = max(len(frame.getbands()), 1)
    return width * height * bands * _MODE_BYTES.get(frame.mode, 1)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_png_chunks(path: Path) -> None:
    """Raise unless every PNG chunk fits in the file.

    Pillow reads a chunk by its declared length in one call, so a 4 GiB length
    in a 100-byte file makes it allocate 4 GiB; walking the chunk headers
    (8 bytes each) first turns that into a one-line error.
    """
    size = path.stat().st_size
    with open(path, "rb") as handle:
        if handle.read(8) != _PNG_SIGNATURE:
            return  # not a PNG: Pillow identifies it (or refuses it) by its content
        position = 8
        while position + 8 <= size:
            header = handle.read(8)
            length, kind = struct.unpack(">I4s", header)
            if position + 12 + length > size:
                raise ImageReadError(
                    f"cannot read {path}: truncated or corrupt PNG (chunk {printable(kind.decode('latin-1'))} "
                    f"at byte {position} claims {length} bytes, {max(size - position - 12, 0)} remain)"
                )
            if kind == b"IEND":
                return
            position += 12 + length
            handle.seek(position)


def _frames(image: Image.Image, path: Path, labels: bool) -> list[np.ndarray]:
    """Decode every frame, checking the read budget before each one is decoded."""
    frames, total = [], 0
    for frame in ImageSequence.Iterator(image):
        total += _frame_bytes(frame)
        check_allocation((total,), 1, str(path))
        frame.load()
        frames.append(np.array(frame_to_array(frame, labels)))
    return frames


def read_raster(path, labels: bool = False) -> Volume:
    """Read a PNG / JPEG / TIFF / BMP file as a one-slice volume (one slice per TIFF page).

    Args:
        path: image file.
        labels: read palette indices / bilevel values as labels (see :func:`frame_to_array`).

    Returns:
        Volume ``(pages, H, W)`` or ``(pages, H, W, 3)``, spacing ``(1, 1, 1)``.

    Raises:
        ImageReadError: not an image Pillow can decode, truncated or corrupt file,
            pages of different sizes, non-finite values, more pixels than the read
            budget or Pillow's decompression-bomb limit.
    """
    path = Path(path)
    check_png_chunks(path)
    try:
        with Image.open(path) as image:
            frames = _frames(image, path, labels)
    except Image.DecompressionBombError as error:
        raise ImageReadError(
            f"cannot read {path}: Pillow refuses it as a possible decompression bomb ({error})"
        ) from None
    except _DECODE_ERRORS as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ImageReadError(f"cannot read {path}: {printable(reason, 160)}") from None
    if not frames:
        raise ImageReadError(f"cannot read {path}: the file holds no image")
    shapes = {(f.shape, f.dtype.str) for f in frames}
    if len(shapes) != 1:
        raise ImageReadError(
            f"{path}: the {len(frames)} pages differ in size or pixel type ({sorted(shapes)[:4]}); "
            "cannot stack them into a volume"
        )
    array = np.stack(frames)
    check_voxels(array, str(path))
    if array.ndim == 4:
        array = gray_if_equal_channels(array)
    metadata = {"source": str(path), "stored_geometry": ()}
    return Volume(array, metadata=metadata)


def check_png_slices(destination, num_slices: int) -> None:
    """Raise :class:`ImageWriteError` unless ``num_slices`` is 1 (PNG holds one 2D slice)."""
    if num_slices != 1:
        raise ImageWriteError(
            f"cannot write {destination}: PNG holds one 2D slice, this volume has "
            f"{num_slices} slices; use .nii.gz, .nrrd, .mha or .npz"
        )


def write_png(target: Path, array: np.ndarray, destination: Path) -> None:
    """Write one slice ``(1, H, W)`` (uint8/uint16) or ``(1, H, W, 3)`` (uint8) as PNG.

    Args:
        target: file to write (the temporary file of an atomic write).
        array: data with exactly one slice.
        destination: the final path, for messages.

    Raises:
        ImageWriteError: more than one slice, or a dtype PNG cannot hold exactly.
    """
    check_png_slices(destination, array.shape[0])
    data = array[0]
    allowed = (np.uint8,) if data.ndim == 3 else (np.uint8, np.uint16)
    if data.dtype.type not in allowed:
        names = " or ".join(np.dtype(t).name for t in allowed)
        raise ImageWriteError(
            f"cannot write {destination}: PNG stores {names} "
            f"{'RGB' if data.ndim == 3 else 'grayscale'} data exactly, not {data.dtype}"
        )
    Image.fromarray(np.ascontiguousarray(data)).save(target, format="PNG")
