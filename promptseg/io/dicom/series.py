"""DICOM images: series folders (SimpleITK/GDCM) and single files (pydicom tags + GDCM pixels).

Pixel values come out with the Modality LUT applied (Rescale Slope/Intercept,
done by GDCM), so CT is in Hounsfield units. Geometry is what GDCM derives
from Image Position/Orientation (Patient) and Pixel Spacing: spacing/origin in
``(x, y, z)`` order, mm. The modality is the DICOM Modality tag (0008,0060).
The slice headers are kept as :attr:`Volume.dicom`
(:class:`~promptseg.io.dicom.provenance.DicomProvenance`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from ...errors import ImageReadError
from ...volume import Volume
from ..common import has_dicom_preamble, one_line_sitk_error
from ..sitk_image import check_image_layout, volume_from_sitk
from .provenance import DicomProvenance, provenance_from_headers, read_slice_headers

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def read_header(path: Path, force: bool = False) -> Optional[pydicom.Dataset]:
    """The DICOM data set of ``path`` with large values (pixels) left unread, or None if not DICOM."""
    try:
        return pydicom.dcmread(str(path), defer_size="4 KB", force=force)
    except (InvalidDicomError, OSError, ValueError, EOFError, TypeError, AttributeError):
        return None


def is_dicom_file(path: Path) -> bool:
    """True if ``path`` is a DICOM file: ``DICM`` at byte 128, or a preamble-less data set
    pydicom can parse that has an SOP Class UID."""
    if has_dicom_preamble(path):
        return True
    header = read_header(path, force=True)
    return header is not None and "SOPClassUID" in header


def _text(header: Optional[pydicom.Dataset], keyword: str) -> Optional[str]:
    if header is None:
        return None
    value = header.get(keyword)
    if value is None:
        return None
    return str(value).strip() or None


def _sop_class_name(header: pydicom.Dataset) -> str:
    uid = header.get("SOPClassUID")
    if uid is None:
        return "unknown SOP class"
    return getattr(uid, "name", str(uid)) or str(uid)


def list_dicom_series(folder) -> list[dict]:
    """The DICOM series in ``folder`` (not recursive), as GDCM groups them.

    Args:
        folder: directory holding ``.dcm`` files (any names).

    Returns:
        One dict per series: ``uid`` (Series Instance UID), ``files`` (list of
        paths in slice order), ``description`` (Series Description or None),
        ``modality`` (Modality tag or None).
    """
    folder = Path(folder)
    reader = sitk.ImageSeriesReader()
    series = []
    for uid in reader.GetGDCMSeriesIDs(str(folder)):
        files = list(reader.GetGDCMSeriesFileNames(str(folder), uid))
        header = read_header(Path(files[0])) if files else None
        series.append(
            {
                "uid": uid,
                "files": files,
                "description": _text(header, "SeriesDescription"),
                "modality": _text(header, "Modality"),
            }
        )
    return series


def _series_summary(series: list[dict]) -> str:
    parts = []
    for info in series:
        details = [f"{len(info['files'])} files"]
        details += [info[key] for key in ("modality", "description") if info[key]]
        parts.append(f"{info['uid']} ({', '.join(details)})")
    return "; ".join(parts)


def _other_images(folder: Path, limit: int = 1000) -> list[str]:
    """Names of the non-DICOM images (NIfTI, NRRD, ...) directly in ``folder`` (the first ``limit`` entries)."""
    from ..common import DICOM_SUFFIXES, SUPPORTED_IMAGE_SUFFIXES

    names = []
    try:
        for i, entry in enumerate(sorted(folder.iterdir())):
            if i >= limit:
                break
            lower = entry.name.lower()
            if (not entry.name.startswith(".") and entry.is_file() and lower.endswith(SUPPORTED_IMAGE_SUFFIXES)
                    and not lower.endswith(DICOM_SUFFIXES)):
                names.append(entry.name)
    except OSError:
        return []
    return names


def _choose_series(folder: Path, series: list[dict], series_uid: Optional[str]) -> dict:
    if not series:
        images = _other_images(folder)
        if images:
            listed = ", ".join(images[:3]) + (", ..." if len(images) > 3 else "")
            raise ImageReadError(
                f"{folder}: no DICOM series in this folder, but {len(images)} image file(s) ({listed}): give one "
                "file, or segment each with a batch run (promptseg segment -i FOLDER -o OUT_FOLDER)"
            )
        raise ImageReadError(f"{folder}: no DICOM image series found in this folder")
    if series_uid is not None:
        for info in series:
            if info["uid"] == series_uid.strip():
                return info
        raise ImageReadError(
            f"{folder}: no DICOM series with UID {series_uid}; available: {_series_summary(series)}"
        )
    if len(series) > 1:
        raise ImageReadError(
            f"{folder} holds {len(series)} DICOM series; choose one with --series UID "
            f"(series_uid=... in Python): {_series_summary(series)}"
        )
    return series[0]


def read_dicom_series(folder, series_uid: Optional[str] = None) -> Volume:
    """Read one DICOM series from ``folder``.

    Args:
        folder: directory of DICOM files.
        series_uid: Series Instance UID to read; required when the folder holds
            several series.

    Returns:
        Volume ``(z, y, x)`` in stored-value units after rescale (HU for CT),
        ``modality`` from the Modality tag, ``metadata`` with ``source``,
        ``series_uid``, ``series_description`` and ``num_files``, and ``dicom``
        provenance (None when the slices lack UIDs or geometry).

    Raises:
        ImageReadError: no series, several series and no ``series_uid`` (the
            message lists them), unknown ``series_uid``, unreadable files.
    """
    folder = Path(folder)
    info = _choose_series(folder, list_dicom_series(folder), series_uid)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(info["files"])
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise ImageReadError(
            f"cannot read DICOM series {info['uid']} in {folder}: {one_line_sitk_error(error)}"
        ) from None
    metadata = {
        "series_uid": info["uid"],
        "series_description": info["description"],
        "num_files": len(info["files"]),
    }
    volume = volume_from_sitk(image, str(folder), modality=info["modality"], metadata=metadata)
    volume.dicom = _provenance(info["files"], volume.num_slices)
    if volume.num_slices == 1:
        _single_slice_thickness(volume, read_header(Path(info["files"][0])))
    return volume


def _single_slice_thickness(volume: Volume, header) -> None:
    """A one-slice image has no neighbour to measure z-spacing from (ITK reports 1 mm): take
    Slice Thickness, so volumes in ml are right."""
    try:
        thickness = float(header.get("SliceThickness")) if header is not None else None
    except (TypeError, ValueError):
        thickness = None
    if thickness is not None and math.isfinite(thickness) and 0 < thickness <= 1000:
        volume.spacing = (volume.spacing[0], volume.spacing[1], thickness)


def _provenance(files, num_slices: int) -> Optional[DicomProvenance]:
    """Provenance of the slices in ``files`` (array z order), None if unusable or not one file per slice."""
    if len(files) != num_slices:
        return None
    try:
        return provenance_from_headers(read_slice_headers(files))
    except (InvalidDicomError, OSError, ValueError, EOFError, TypeError, AttributeError):
        return None


def read_dicom_file(path) -> Volume:
    """Read one DICOM file (a 2D image, or a multi-frame image) as a volume.

    Args:
        path: a DICOM Part 10 file, any extension.

    Returns:
        Volume ``(z, y, x)`` (one slice for a 2D image, HU for CT), ``modality``
        from the tag, ``metadata`` with ``source``, ``series_uid`` and ``sop_class``,
        and ``dicom`` provenance for a single-frame image with geometry.

    Raises:
        ImageReadError: not DICOM, no pixel data (e.g. RTSTRUCT, RT Plan, SR),
            undecodable pixels.
    """
    path = Path(path)
    header = read_header(path, force=not has_dicom_preamble(path))
    if header is None:
        raise ImageReadError(f"cannot read {path}: not a DICOM file pydicom can parse")
    if not any(keyword in header for keyword in _PIXEL_KEYWORDS):
        modality = _text(header, "Modality") or "unknown modality"
        raise ImageReadError(
            f"{path} holds no image: it is a DICOM {modality} object "
            f"({_sop_class_name(header)}) without Pixel Data"
        )
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        check_image_layout(
            reader.GetDimension(), reader.GetSize(), reader.GetNumberOfComponents(), str(path)
        )
        image = reader.Execute()
    except RuntimeError as error:
        raise ImageReadError(f"cannot read {path}: {one_line_sitk_error(error)}") from None
    metadata = {
        "series_uid": _text(header, "SeriesInstanceUID"),
        "series_description": _text(header, "SeriesDescription"),
        "sop_class": _sop_class_name(header),
    }
    volume = volume_from_sitk(image, str(path), modality=_text(header, "Modality"), metadata=metadata)
    volume.dicom = _provenance([path], volume.num_slices)
    if volume.num_slices == 1:
        _single_slice_thickness(volume, header)
    return volume
