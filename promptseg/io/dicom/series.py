"""DICOM images: series folders and single files (pydicom headers, GDCM pixels through SimpleITK).

Pixel values come out with the Modality LUT applied (Rescale Slope/Intercept,
done by GDCM), so CT is in Hounsfield units. Geometry is what GDCM derives
from Image Position/Orientation (Patient) and Pixel Spacing: spacing/origin in
``(x, y, z)`` order, mm. The modality is the DICOM Modality tag (0008,0060).
The slice headers are kept as :attr:`Volume.dicom`
(:class:`~promptseg.io.dicom.provenance.DicomProvenance`).

GDCM is native code that trusts what it reads, so nothing reaches it
unchecked: every file is parsed by :func:`~.header.parse_dicom` and its pixel
description checked by :func:`~.image_header.pixel_layout` first, and a
series is grouped and put in slice order here (GDCM's folder scanner would
parse every file of the folder natively): by position along the slice normal
when every slice has Image Position/Orientation (Patient), else by Instance
Number, else by file name -- the order GDCM's ``SerieHelper`` uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pydicom
import SimpleITK as sitk

from ...errors import ImageReadError, PromptsegError
from ...volume import Volume
from ..common import DICOM_SUFFIXES, format_suffix, has_dicom_preamble, one_line_sitk_error, printable
from ..limits import check_allocation
from ..sitk_image import check_image_layout, volume_from_sitk
from .header import parse_dicom, text_value
from .image_header import (
    IMAGE_KEYWORDS,
    PixelLayout,
    check_decoded,
    check_geometry_elements,
    check_read_geometry,
    native_values,
    pixel_layout,
)
from .provenance import HEADER_KEYWORDS, DicomProvenance, provenance_from_headers

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
#: Elements converted (and checked) when a file is parsed.
_KEYWORDS = tuple(dict.fromkeys(IMAGE_KEYWORDS + HEADER_KEYWORDS))
_MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"
#: Two slices closer than this along the normal (mm) are at the same position.
_SAME_POSITION_MM = 1e-4


def read_header(path: Path, force: bool = False) -> Optional[pydicom.Dataset]:
    """The DICOM data set of ``path`` with large values (pixels) left unread, or None if not readable DICOM."""
    try:
        return parse_dicom(path, keywords=_KEYWORDS, force=force)
    except PromptsegError:
        return None


def is_dicom_file(path: Path) -> bool:
    """True if ``path`` is a DICOM file: ``DICM`` at byte 128, or a preamble-less data set
    pydicom can parse that has an SOP Class UID."""
    if has_dicom_preamble(path):
        return True
    header = read_header(path, force=True)
    return header is not None and "SOPClassUID" in header


def _sop_class_name(header: pydicom.Dataset) -> str:
    uid = header.get("SOPClassUID")
    if uid is None:
        return "unknown SOP class"
    return text_value(header, "SOPClassUID") if not getattr(uid, "name", "") else str(uid.name)


def _is_dicomdir(header: pydicom.Dataset) -> bool:
    meta = getattr(header, "file_meta", None)
    return meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == _MEDIA_DIRECTORY


def _has_pixels(header: pydicom.Dataset) -> bool:
    return any(keyword in header for keyword in _PIXEL_KEYWORDS)


@dataclass
class _Series:
    """One image series of a folder: files in slice order with their parsed headers."""

    uid: str
    files: list[Path] = field(default_factory=list)
    headers: list[pydicom.Dataset] = field(default_factory=list)
    #: why the slices cannot be stacked (read refuses it), or ""
    problem: str = ""

    def info(self) -> dict:
        first = self.headers[0] if self.headers else None
        return {
            "uid": self.uid,
            "files": [str(f) for f in self.files],
            "description": text_value(first, "SeriesDescription") or None,
            "modality": text_value(first, "Modality") or None,
        }


def _floats(header: pydicom.Dataset, keyword: str, count: int) -> Optional[np.ndarray]:
    value = header.get(keyword)
    try:
        numbers = np.array([float(v) for v in value], dtype=float) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
    if numbers is None or numbers.size != count or not np.all(np.isfinite(numbers)):
        return None
    return numbers


def _order(series: _Series) -> None:
    """Put the slices in order (see the module docstring); note why they cannot be stacked."""
    headers, files = series.headers, series.files
    positions = [_floats(h, "ImagePositionPatient", 3) for h in headers]
    orientations = [_floats(h, "ImageOrientationPatient", 6) for h in headers]
    if all(p is not None for p in positions) and all(o is not None for o in orientations):
        first = orientations[0]
        normal = np.cross(first[:3], first[3:])
        if np.linalg.norm(normal) > 1e-3:
            if any(not np.allclose(o, first, atol=1e-4) for o in orientations):
                series.problem = "its slices have different Image Orientation (Patient) (a localizer series?)"
            depths = np.array([p @ normal for p in positions]) / np.linalg.norm(normal)
            order = np.argsort(depths, kind="stable")
            same = int(np.count_nonzero(np.diff(depths[order]) < _SAME_POSITION_MM))
            if same and not series.problem:
                series.problem = (f"slices repeat a position ({same} duplicate{'s' if same > 1 else ''}; "
                                  "several acquisitions in one series?)")
            series.headers, series.files = [headers[i] for i in order], [files[i] for i in order]
            return
    numbers = [h.get("InstanceNumber") for h in headers]
    if all(isinstance(n, int) for n in numbers) and len(set(numbers)) == len(numbers):
        order = sorted(range(len(files)), key=lambda i: numbers[i])
    else:
        order = sorted(range(len(files)), key=lambda i: files[i].name)
    series.headers, series.files = [headers[i] for i in order], [files[i] for i in order]


def _scan(folder: Path) -> list[_Series]:
    """The image series in ``folder`` (not recursive), each in slice order.

    Hidden files (temporaries) and files that are not DICOM are skipped; a file
    that claims to be DICOM (preamble or ``.dcm``-style name) but does not parse
    is an error, so that no slice goes missing silently. Objects without pixels
    (RTSTRUCT, SEG, DICOMDIR) are skipped.
    """
    if not folder.is_dir():
        raise ImageReadError(f"no such folder: {folder}")
    groups: dict[str, _Series] = {}
    objects: dict[str, Path] = {}  # series UID -> a file without pixels (RTSTRUCT, SEG, ... or a broken slice)
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        claims_dicom = has_dicom_preamble(path) or format_suffix(path) in DICOM_SUFFIXES
        try:
            header = parse_dicom(path, keywords=_KEYWORDS, force=True)
        except PromptsegError as error:
            if claims_dicom:
                raise ImageReadError(f"cannot read the DICOM series in {folder}: {error}") from None
            continue
        uid = text_value(header, "SeriesInstanceUID")
        if not _has_pixels(header):
            if claims_dicom and not ("SOPClassUID" in header or _is_dicomdir(header)):
                raise ImageReadError(f"cannot read the DICOM series in {folder}: {path.name} is no complete "
                                     "DICOM object (no SOP Class UID, no pixels): truncated?")
            if uid:
                objects.setdefault(uid, path)
            continue
        if not (claims_dicom or "SOPClassUID" in header):
            continue
        series = groups.setdefault(uid, _Series(uid))
        series.files.append(path)
        series.headers.append(header)
    for uid, path in objects.items():
        if uid in groups:
            raise ImageReadError(f"cannot read the DICOM series in {folder}: {path.name} belongs to image series "
                                 f"{uid} but has no Pixel Data (truncated?)")
    for series in groups.values():
        _order(series)
    return list(groups.values())


def list_dicom_series(folder) -> list[dict]:
    """The DICOM image series in ``folder`` (not recursive).

    Args:
        folder: directory holding DICOM files (any names).

    Returns:
        One dict per series: ``uid`` (Series Instance UID), ``files`` (list of
        paths in slice order), ``description`` (Series Description or None),
        ``modality`` (Modality tag or None).

    Raises:
        ImageReadError: a file that claims to be DICOM is malformed (named in the message).
    """
    return [series.info() for series in _scan(Path(folder))]


def _series_summary(series: list[_Series]) -> str:
    parts = []
    for item in series:
        info = item.info()
        details = [f"{len(info['files'])} files"]
        details += [info[key] for key in ("modality", "description") if info[key]]
        parts.append(f"{info['uid'] or '(no Series Instance UID)'} ({', '.join(details)})")
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


def _choose_series(folder: Path, series: list[_Series], series_uid: Optional[str]) -> _Series:
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
        for item in series:
            if item.uid == series_uid.strip():
                return item
        raise ImageReadError(
            f"{folder}: no DICOM series with UID {printable(series_uid, 70)}; available: {_series_summary(series)}"
        )
    if len(series) > 1:
        raise ImageReadError(
            f"{folder} holds {len(series)} DICOM series; choose one with --series UID "
            f"(series_uid=... in Python): {_series_summary(series)}"
        )
    return series[0]


def _check_slices(series: _Series, folder: Path) -> list[PixelLayout]:
    """Every slice's pixel description, all alike and single-frame; the whole stack within the read budget."""
    if series.problem:
        raise ImageReadError(f"cannot read DICOM series {series.uid} in {folder}: {series.problem}")
    layouts = []
    for header, path in zip(series.headers, series.files):
        layouts.append(pixel_layout(header, path))
        check_geometry_elements(header, str(path))
    first = layouts[0]
    for layout, path in zip(layouts, series.files):
        if layout.frames != 1 and len(layouts) > 1:
            raise ImageReadError(f"{path}: a multi-frame image ({layout.frames} frames) inside a series of "
                                 f"{len(layouts)} files; read it on its own")
        if (layout.rows, layout.columns, layout.samples) != (first.rows, first.columns, first.samples):
            raise ImageReadError(
                f"cannot read DICOM series {series.uid} in {folder}: {path.name} is {layout.columns} x "
                f"{layout.rows} pixels ({layout.samples} samples) but {series.files[0].name} is "
                f"{first.columns} x {first.rows} ({first.samples})"
            )
    check_allocation((len(layouts) * first.frames, first.rows, first.columns, first.samples),
                     max(1, first.bits_allocated // 8), str(folder))
    return layouts


def _check_positions(volume: Volume, headers, source: str) -> None:
    """Every slice's Image Position (Patient) must be where the volume's grid puts that slice.

    ITK stacks slices with one spacing; a missing slice, uneven gaps or slices
    shifted in-plane (gantry tilt) would otherwise give a volume whose voxels
    are not where the scan's were.
    """
    positions = [_floats(h, "ImagePositionPatient", 3) for h in headers]
    if len(positions) != volume.num_slices or any(p is None for p in positions):
        return
    step = np.asarray(volume.direction, dtype=float)[:, 2] * float(volume.spacing[2])
    expected = np.asarray(volume.origin, dtype=float)[None, :] + np.arange(len(positions))[:, None] * step[None, :]
    offsets = np.linalg.norm(np.asarray(positions) - expected, axis=1)
    tolerance = 0.01 + 0.1 * float(volume.spacing[2])
    worst = int(np.argmax(offsets))
    if offsets[worst] > tolerance:
        raise ImageReadError(
            f"{source}: the slices do not lie on a regular grid: slice {worst} is {offsets[worst]:.3g} mm from "
            f"where a {volume.spacing[2]:.4g} mm slice spacing puts it (a missing slice, uneven gaps or a "
            "tilted gantry); promptseg does not resample DICOM series"
        )


def _pixel_spacing(image: sitk.Image, header: pydicom.Dataset) -> None:
    """Use the header's Pixel Spacing (the spacing in the patient) where GDCM chose another.

    GDCM takes Imager Pixel Spacing (at the detector) for CR/DX/XA images, and
    1 mm when that is absent, even when Pixel Spacing is given.
    """
    spacing = _floats(header, "PixelSpacing", 2)
    if spacing is not None and not np.allclose(image.GetSpacing()[:2], spacing[::-1], rtol=1e-6):
        image.SetSpacing(tuple(float(v) for v in spacing[::-1]) + tuple(image.GetSpacing()[2:]))


def _check_read(reader, layout: PixelLayout, slices: int, source: str) -> None:
    """GDCM must see the image the header describes (else it read something else)."""
    size = tuple(reader.GetSize()) if hasattr(reader, "GetSize") else ()
    expected = (layout.columns, layout.rows) + ((slices,) if slices > 1 else ())
    if tuple(size[:2]) != expected[:2] or (slices > 1 and (len(size) < 3 or size[2] != slices)):
        raise ImageReadError(
            f"{source}: GDCM reads an image of size {size} but the DICOM header declares "
            f"{' x '.join(str(v) for v in expected)}; the file is corrupt"
        )


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
            message lists them), unknown ``series_uid``, malformed or unreadable
            files, slices that cannot be stacked (different sizes or
            orientations, shared positions), a stack over the read budget.
    """
    folder = Path(folder)
    series = _choose_series(folder, _scan(folder), series_uid)
    layouts = _check_slices(series, folder)
    info = series.info()
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(info["files"])
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise ImageReadError(
            f"cannot read DICOM series {series.uid} in {folder}: {one_line_sitk_error(error)}"
        ) from None
    _check_read(image, layouts[0], len(series.files), str(folder))
    _pixel_spacing(image, series.headers[0])
    pixels = sitk.GetArrayViewFromImage(image)
    for z, (header, path, layout) in enumerate(zip(series.headers, series.files, layouts)):
        check_decoded(pixels[z], native_values(header, path, layout, str(path)), str(path))
    metadata = {
        "series_uid": series.uid,
        "series_description": info["description"],
        "num_files": len(series.files),
    }
    volume = volume_from_sitk(image, str(folder), modality=info["modality"], metadata=metadata)
    check_read_geometry(volume.spacing, volume.origin, volume.direction, series.headers[0], str(folder))
    _check_positions(volume, series.headers, str(folder))
    volume.dicom = _provenance(series.headers, volume.num_slices)
    if volume.num_slices == 1:
        _single_slice_thickness(volume, series.headers[0])
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


def _provenance(headers, num_slices: int) -> Optional[DicomProvenance]:
    """Provenance of the slices with ``headers`` (array z order), None if unusable or not one file per slice."""
    if len(headers) != num_slices:
        return None
    return provenance_from_headers(headers)


def read_dicom_file(path) -> Volume:
    """Read one DICOM file (a 2D image, or a multi-frame image) as a volume.

    Args:
        path: a DICOM Part 10 file, any extension.

    Returns:
        Volume ``(z, y, x)`` (one slice for a 2D image, HU for CT), ``modality``
        from the tag, ``metadata`` with ``source``, ``series_uid`` and ``sop_class``,
        and ``dicom`` provenance for a single-frame image with geometry.

    Raises:
        ImageReadError: not DICOM, malformed, no pixel data (e.g. RTSTRUCT, RT Plan,
            SR), an unsupported or inconsistent pixel description, truncated or
            undecodable pixels, an image over the read budget.
    """
    path = Path(path)
    header = parse_dicom(path, keywords=_KEYWORDS, force=not has_dicom_preamble(path))
    if not _has_pixels(header):
        modality = text_value(header, "Modality") or "unknown modality"
        raise ImageReadError(
            f"{path} holds no image: it is a DICOM {modality} object "
            f"({_sop_class_name(header)}) without Pixel Data"
        )
    if "PixelData" not in header:
        raise ImageReadError(f"{path}: float pixel data (a parametric map?) is not supported")
    layout = pixel_layout(header, path)
    check_geometry_elements(header, str(path))
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        _check_read(reader, layout, layout.frames, str(path))
        check_image_layout(
            reader.GetDimension(), reader.GetSize(), reader.GetNumberOfComponents(), str(path)
        )
        image = reader.Execute()
    except RuntimeError as error:
        raise ImageReadError(f"cannot read {path}: {one_line_sitk_error(error)}") from None
    check_decoded(sitk.GetArrayViewFromImage(image), native_values(header, path, layout, str(path)), str(path))
    _pixel_spacing(image, header)
    metadata = {
        "series_uid": text_value(header, "SeriesInstanceUID") or None,
        "series_description": text_value(header, "SeriesDescription") or None,
        "sop_class": _sop_class_name(header),
    }
    volume = volume_from_sitk(image, str(path), modality=text_value(header, "Modality") or None, metadata=metadata)
    if layout.frames == 1:
        check_read_geometry(volume.spacing, volume.origin, volume.direction, header, str(path))
        _check_positions(volume, [header], str(path))
    volume.dicom = _provenance([header], volume.num_slices)
    if volume.num_slices == 1:
        _single_slice_thickness(volume, header)
    return volume
