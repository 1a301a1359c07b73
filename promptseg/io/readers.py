"""Entry points for reading: :func:`load_volume` (images) and :func:`load_labels` (label maps).

The format is chosen from the path: a folder is a DICOM series; ``.nii``,
``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd`` go to SimpleITK;
``.npz`` is a MedSAM archive; ``.png``, ``.jpg``, ``.jpeg``, ``.tif``,
``.tiff``, ``.bmp`` go to Pillow; ``.dcm`` (or any file with the DICOM
preamble) is a single DICOM file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import GeometryError, ImageReadError
from ..volume import Volume
from .common import (
    DICOM_SUFFIXES,
    NPZ_SUFFIXES,
    RASTER_SUFFIXES,
    SITK_SUFFIXES,
    check_regular_file,
    format_suffix,
    supported_formats_text,
)
from .npz import read_npz
from .raster import read_raster
from .sitk_image import read_sitk_file

_ALL_GEOMETRY = ("spacing", "origin", "direction")


def _existing(path) -> Path:
    """``path`` if it is a folder or a non-empty regular file (FIFOs and devices are refused unopened)."""
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"no such file: {path}")
    if path.is_dir():
        return path
    if check_regular_file(path).st_size == 0:
        raise ImageReadError(f"cannot read {path}: the file is empty (0 bytes)")
    return path


def _format_of(path: Path) -> str:
    """``"dicom-series"``, ``"sitk"``, ``"npz"``, ``"raster"`` or ``"dicom"`` for an existing path.

    Raises:
        ImageReadError: unknown extension (the message lists the supported formats).
    """
    if path.is_dir():
        return "dicom-series"
    suffix = format_suffix(path)
    for kind, suffixes in (("sitk", SITK_SUFFIXES), ("npz", NPZ_SUFFIXES), ("raster", RASTER_SUFFIXES)):
        if suffix in suffixes:
            return kind
    if suffix in DICOM_SUFFIXES:
        return "dicom"
    from .dicom.series import is_dicom_file  # pydicom is imported only for DICOM (or unknown) input

    if is_dicom_file(path):
        return "dicom"
    raise ImageReadError(
        f"{path}: unknown image format '{suffix or '(no extension)'}'; {supported_formats_text()}"
    )


def _read(path: Path, series_uid: Optional[str], labels: bool) -> Volume:
    """Dispatch on the path to the format reader."""
    kind = _format_of(path)
    if series_uid is not None and kind not in ("dicom-series", "dicom"):
        raise ImageReadError(f"{path}: a series UID only applies to DICOM input")
    if kind in ("dicom-series", "dicom"):
        from .dicom.series import read_dicom_file, read_dicom_series
    if kind == "dicom-series":
        return read_dicom_series(path, series_uid)
    if kind == "sitk":
        return read_sitk_file(path)
    if kind == "npz":
        return read_npz(path, labels=labels)
    if kind == "raster":
        return read_raster(path, labels=labels)
    volume = read_dicom_file(path)
    if series_uid is not None and volume.metadata.get("series_uid") != series_uid:
        raise ImageReadError(
            f"{path} belongs to series {volume.metadata.get('series_uid')}, not {series_uid}"
        )
    return volume


def load_volume(path, series_uid: Optional[str] = None) -> Volume:
    """Read an image as a :class:`Volume`.

    Args:
        path: an image file (NIfTI, NRRD, MetaImage, MedSAM NPZ, PNG/JPEG/TIFF/BMP,
            single DICOM file) or a folder holding a DICOM series.
        series_uid: DICOM Series Instance UID to read from a folder with several series.

    Returns:
        Volume ``(z, y, x)`` or ``(z, y, x, 3)`` with spacing/origin in mm
        (``(x, y, z)`` order), direction, modality (DICOM only) and
        ``metadata["source"]`` (plus ``series_uid`` for DICOM).

    Raises:
        ImageReadError: missing file ("no such file: ..."), a FIFO or device,
            unknown extension (lists the supported formats), malformed header,
            corrupt/truncated file, an image larger than the read budget
            (``PROMPTSEG_MAX_IMAGE_BYTES``), 4D or vector image, empty image,
            non-numeric or non-finite voxels, non-finite, singular or absurd
            geometry (see :mod:`promptseg.io.limits`), ambiguous DICOM folder.
    """
    return _read(_existing(path), series_uid, labels=False)


def _as_label_array(array: np.ndarray, source: str) -> np.ndarray:
    """Integer label values as uint8 / uint16 / uint32 (the smallest that fits).

    Raises:
        ImageReadError: colour data, fractional values, negative values, values >= 2**32.
    """
    if array.ndim == 4:
        raise ImageReadError(f"{source}: a label map must be single-channel, got colour data {array.shape}")
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        fractional = int(np.count_nonzero(array != np.round(array)))
        if fractional:
            raise ImageReadError(
                f"{source}: a label map must hold integers; {fractional} voxels have "
                f"non-integer values (dtype {array.dtype})"
            )
    low, high = array.min(), array.max()
    if low < 0:
        raise ImageReadError(f"{source}: label values must be >= 0, found {low}")
    for dtype in (np.uint8, np.uint16, np.uint32):
        if high <= np.iinfo(dtype).max:
            return array.astype(dtype, copy=False)
    raise ImageReadError(f"{source}: label value {high} is too large (max {np.iinfo(np.uint32).max})")


def grid_differences(volume: Volume, reference: Volume, fields=_ALL_GEOMETRY) -> list[str]:
    """What differs between the grids of ``volume`` and ``reference``, as readable phrases.

    Args:
        volume: the volume to check.
        reference: the grid it must fit.
        fields: geometry fields to compare besides the shape (any of spacing, origin, direction).

    Returns:
        Empty list if the grids agree (1e-4 mm absolute tolerance plus 1e-6 relative).
    """
    differences = []
    if volume.shape != reference.shape:
        differences.append(f"shape (z, y, x) {volume.shape} vs {reference.shape}")
    for name in fields:
        mine = np.asarray(getattr(volume, name), dtype=float)
        theirs = np.asarray(getattr(reference, name), dtype=float)
        if not np.allclose(mine, theirs, rtol=1e-6, atol=1e-4):
            if name == "direction":
                differences.append(
                    f"direction {np.round(mine, 4).tolist()} vs {np.round(theirs, 4).tolist()}"
                )
            else:
                label = "spacing (x, y, z) mm" if name == "spacing" else "origin (x, y, z) mm"
                differences.append(
                    f"{label} {tuple(np.round(mine, 6).tolist())} vs {tuple(np.round(theirs, 6).tolist())}"
                )
    return differences


def load_labels(path, reference: Optional[Volume] = None) -> Volume:
    """Read an integer label map (ground truth or prediction).

    Images are read by the same readers as :func:`load_volume`; NPZ archives
    use key ``gts`` (or ``segs`` when there is no ``gts``); palette PNGs give
    their palette indices.

    Args:
        path: label file (or DICOM folder).
        reference: the image the labels belong to. If given, the label grid
            must match it -- shape always, and spacing/origin/direction as far
            as the file stores them (NPZ: spacing only when present; PNG etc.:
            none). The result then carries the reference's geometry exactly.
            Nothing is ever resampled.

    Returns:
        Volume ``(z, y, x)`` of dtype uint8 / uint16 / uint32 (smallest that fits),
        ``kind == "labels"``.

    Raises:
        ImageReadError: unreadable file, colour data, non-integer or negative values.
        GeometryError: the grid differs from ``reference`` (the message says what differs).
    """
    volume = _read(_existing(path), None, labels=True)
    source = volume.metadata.get("source", str(path))
    array = _as_label_array(volume.array, source)
    if reference is None:
        return volume.with_array(array, modality=None, kind="labels")
    stored = volume.metadata.get("stored_geometry", _ALL_GEOMETRY)
    differences = grid_differences(volume, reference, stored)
    if differences:
        raise GeometryError(
            f"{source} does not fit the reference image grid: " + "; ".join(differences)
            + " (labels are never resampled; export them on the image grid)"
        )
    return Volume(
        array,
        reference.spacing,
        reference.origin,
        np.array(reference.direction),
        modality=None,
        metadata=dict(volume.metadata),
        kind="labels",
    )
