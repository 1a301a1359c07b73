"""Writing label maps (:func:`save_mask`) and images (:func:`save_volume`), always atomically.

Output formats, chosen from the suffix:

* ``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha``, ``.mhd`` -- SimpleITK, compressed,
  with spacing/origin/direction (NIfTI stores them as float32).
* ``.npz`` -- MedSAM layout: ``segs`` (masks) or ``imgs`` (images) plus
  ``spacing`` in (x, y, z) order; a one-slice volume is stored 2D ``(H, W)``.
* ``.png`` -- one slice only, uint8 / uint16 grayscale or uint8 RGB, values as-is.

Every write goes to a temporary file in the destination folder that is renamed
over the destination only when complete (:mod:`promptseg.io.atomic`).
"""

from __future__ import annotations

import stat
import zipfile
import zlib
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import SimpleITK as sitk

from ..errors import GeometryError, ImageReadError, ImageWriteError
from ..volume import Volume
from .atomic import atomic_bundle, atomic_path
from .guard import check_not_input, check_writable_parent, destination_stat
from .common import format_suffix, label_dtype, one_line_sitk_error
from .npz import IMAGE_KEY, write_npz
from .raster import check_png_slices, write_png
from .readers import grid_differences
from .declared import check_complete
from .sitk_image import parse_header, sitk_from_volume

SITK_WRITE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")
#: Suffixes :func:`save_mask` and :func:`save_volume` can write.
SUPPORTED_OUTPUT_SUFFIXES = SITK_WRITE_SUFFIXES + (".npz", ".png")


def check_destination(path, inputs: Sequence = ()) -> Path:
    """Fail early unless ``path`` can be written: its folder (or the nearest existing parent, for
    folders still to be created) is a writable folder, and ``path`` is not a folder, a device, a
    FIFO (an atomic rename would replace ``/dev/null`` itself), one of the ``inputs`` or inside an
    input folder (:func:`~promptseg.io.guard.check_not_input`: a user's input is never overwritten).

    Raises:
        ImageWriteError: one line naming the problem.
    """
    path = Path(path)
    info = destination_stat(path)
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise ImageWriteError(f"cannot write {path}: it is a folder")
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise ImageWriteError(f"cannot write {path}: it exists and is not a regular file (a device or FIFO)")
    check_not_input(path, inputs)
    check_writable_parent(path)
    return path


def check_output_path(path, num_slices: int | None = None, inputs: Sequence = ()) -> str:
    """Fail early on an output ``path`` no writer can produce; returns its format suffix.

    Raises:
        ImageWriteError: unknown suffix, ``.png`` for a volume of ``num_slices`` > 1
            (checked when ``num_slices`` is given), or a destination that cannot be
            written or is one of ``inputs`` (:func:`check_destination`).
    """
    suffix = format_suffix(Path(path))
    if suffix not in SUPPORTED_OUTPUT_SUFFIXES:
        raise ImageWriteError(
            f"cannot write {path}: unknown output format '{suffix or '(no extension)'}'; "
            f"supported: {', '.join(SUPPORTED_OUTPUT_SUFFIXES)}"
        )
    if suffix == ".png" and num_slices is not None:
        check_png_slices(path, num_slices)
    check_destination(path, inputs)
    return suffix


def _verify_sitk(temporary: Path, array: np.ndarray, path: Path) -> None:
    """The header written declares the array's size and the voxel data are all there.

    ITK's NIfTI writer reports a short write on stderr only (and the NRRD and
    MetaImage writers may leave a 0-byte file on a full disk), so every file is
    re-opened: header parsed, compressed data decompressed to the end, raw
    data measured.
    """
    declared = parse_header(temporary)
    expected = tuple(reversed(array.shape[:3]))
    components = array.shape[3] if array.ndim == 4 else 1
    found = tuple(declared.size) + ((declared.components,) if declared.components > 1 else ())
    if found[:3] != expected or int(np.prod(found)) != int(np.prod(expected)) * components:
        raise ImageWriteError(f"cannot write {path}: the file written declares size {found}, not {expected}")
    check_complete(declared, str(path))


def _write_sitk(grid: Volume, array: np.ndarray, path: Path) -> None:
    try:
        image = sitk_from_volume(grid, array)
    except (TypeError, RuntimeError, ValueError) as error:
        raise ImageWriteError(
            f"cannot write {path}: SimpleITK cannot hold {array.dtype} data ({one_line_sitk_error(error)})"
        ) from None
    context = atomic_bundle if format_suffix(path) == ".mhd" else atomic_path
    with context(path) as temporary:
        sitk.WriteImage(image, str(temporary), useCompression=True)
        _verify_sitk(temporary, array, path)


def _verify_npz(temporary: Path, key: str, array: np.ndarray, path: Path) -> None:
    """Every member's CRC is right and ``key`` holds as many values as ``array``."""
    with zipfile.ZipFile(temporary) as archive:
        bad = archive.testzip()
        if bad is not None:
            raise ImageWriteError(f"cannot write {path}: member {bad} of the archive written is corrupt")
        with archive.open(f"{key}.npy") as member:
            version = np.lib.format.read_magic(member)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape = reader(member)[0]
    if int(np.prod(shape)) != array.size:
        raise ImageWriteError(f"cannot write {path}: the archive written holds shape {shape}, not {array.shape}")


def _verify_png(temporary: Path, array: np.ndarray, path: Path) -> None:
    """The PNG written decodes to the slice's height and width."""
    from PIL import Image

    with Image.open(temporary) as image:
        image.load()
        size = image.size
    if size != (array.shape[2], array.shape[1]):
        raise ImageWriteError(f"cannot write {path}: the PNG written is {size}, not {array.shape[2]} x {array.shape[1]}")


def _write(grid: Volume, array: np.ndarray, path, npz_key: str) -> Path:
    """Write ``array`` ``(z, y, x[, 3])`` on ``grid``'s geometry to ``path``, atomically, and verify it."""
    path = Path(path)
    suffix = check_output_path(path)
    try:
        if suffix in SITK_WRITE_SUFFIXES:
            _write_sitk(grid, array, path)
        elif suffix == ".npz":
            with atomic_path(path) as temporary:
                write_npz(temporary, npz_key, array, grid.spacing, path)
                _verify_npz(temporary, npz_key, array, path)
        else:  # .png
            with atomic_path(path) as temporary:
                write_png(temporary, array, path)
                _verify_png(temporary, array, path)
    except ImageReadError as error:  # the verification could not read back what was written
        raise ImageWriteError(f"cannot write {path}: the file written is incomplete or unreadable "
                              f"({str(error).replace(f'cannot read {path}: ', '')}); is the disk full?") from None
    except RuntimeError as error:
        raise ImageWriteError(f"cannot write {path}: {one_line_sitk_error(error)}") from None
    except (OSError, ValueError, TypeError, zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise ImageWriteError(f"cannot write {path}: {error}") from None
    return path


def _label_values(data: np.ndarray, path) -> np.ndarray:
    """Integer labels as uint8 (max <= 255) or uint16; rejects fractions, negatives, > 65535."""
    if data.dtype == np.bool_:
        return data.astype(np.uint8)
    if data.dtype.kind not in "iuf":
        raise ImageWriteError(f"cannot write {path}: a label map must be numeric, got {data.dtype}")
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)) or np.any(data != np.round(data)):
            raise ImageWriteError(
                f"cannot write {path}: a label map must hold integers, got non-integer {data.dtype} values"
            )
    if data.size == 0:
        return data.astype(np.uint8)
    low, high = data.min(), data.max()
    if low < 0:
        raise ImageWriteError(f"cannot write {path}: label values must be >= 0, found {low}")
    dtype = label_dtype(int(high))
    if dtype is None:
        raise ImageWriteError(f"cannot write {path}: label value {high} exceeds 65535")
    return data.astype(dtype)


def _mask_on_reference(labels: Union[np.ndarray, Volume], reference: Volume) -> np.ndarray:
    """The ``(z, y, x)`` label array, checked against ``reference``'s grid."""
    if isinstance(labels, Volume):
        differences = grid_differences(labels, reference)
        if differences:
            raise GeometryError(
                "the mask does not lie on the reference image grid: " + "; ".join(differences)
            )
        data = labels.array
    else:
        data = np.asarray(labels)
    if data.ndim == 2 and reference.num_slices == 1:
        data = data[np.newaxis]
    if tuple(data.shape) != reference.shape:
        raise GeometryError(
            f"mask shape {tuple(data.shape)} does not match the reference image shape "
            f"{reference.shape} (z, y, x)"
        )
    return data


def save_mask(labels: Union[np.ndarray, Volume], path, reference: Volume) -> Path:
    """Write an integer label map on exactly the grid of ``reference``.

    Args:
        labels: ``(z, y, x)`` integer (or bool, or integral float) array -- or
            ``(y, x)`` when ``reference`` has one slice -- or a :class:`Volume`
            on the reference grid.
        path: output file; ``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha``, ``.mhd``,
            ``.npz`` (key ``segs`` + ``spacing`` (x, y, z)), or ``.png`` (one slice).
            Missing folders are created.
        reference: the image the labels belong to; its spacing/origin/direction are written.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        GeometryError: shape (or, for a Volume, grid) differs from ``reference``.
        ImageWriteError: non-integer/negative/too large labels, unsupported
            format, or any failure while writing (the destination is left untouched).
    """
    path = Path(path)
    data = _label_values(_mask_on_reference(labels, reference), path)
    return _write(reference, data, path, npz_key="segs")


def save_volume(volume: Volume, path) -> Path:
    """Write an image volume (any dtype the format holds) with its geometry.

    Args:
        volume: the image, ``(z, y, x)`` or ``(z, y, x, 3)``.
        path: output file; same formats as :func:`save_mask` (``.npz`` key ``imgs``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ImageWriteError: unsupported format or dtype, or any failure while
            writing (the destination is left untouched).
    """
    if not isinstance(volume, Volume):
        raise ImageWriteError(f"save_volume needs a Volume, got {type(volume).__name__}")
    return _write(volume, volume.array, path, npz_key=IMAGE_KEY)
