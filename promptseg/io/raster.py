"""2D raster images (PNG, JPEG, TIFF, BMP) through Pillow.

A raster image becomes a one-slice volume: grayscale ``(1, H, W)`` keeping its
dtype (uint8, uint16, int32 or float32), colour ``(1, H, W, 3)`` uint8 (alpha
dropped; RGB whose channels are all equal becomes grayscale). A multi-page
TIFF becomes ``(pages, H, W[, 3])``. Rasters carry no usable geometry:
spacing 1 mm, origin 0, identity direction, ``metadata["stored_geometry"] == ()``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from ..errors import ImageReadError, ImageWriteError
from ..volume import Volume
from .common import check_voxels, gray_if_equal_channels

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


def read_raster(path, labels: bool = False) -> Volume:
    """Read a PNG / JPEG / TIFF / BMP file as a one-slice volume (one slice per TIFF page).

    Args:
        path: image file.
        labels: read palette indices / bilevel values as labels (see :func:`frame_to_array`).

    Returns:
        Volume ``(pages, H, W)`` or ``(pages, H, W, 3)``, spacing ``(1, 1, 1)``.

    Raises:
        ImageReadError: not an image Pillow can decode, truncated file, pages of
            different sizes, non-finite values.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            frames = []
            for frame in ImageSequence.Iterator(image):
                frame.load()
                frames.append(np.array(frame_to_array(frame, labels)))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise ImageReadError(f"cannot read {path}: {error}") from None
    shapes = {(f.shape, f.dtype.str) for f in frames}
    if len(shapes) != 1:
        raise ImageReadError(
            f"{path}: the {len(frames)} pages differ in size or pixel type ({sorted(shapes)}); "
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
