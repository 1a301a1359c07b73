"""Is a received series a usable image volume? Checks on the headers before anything is segmented.

SimpleITK/GDCM read a series with missing slices or mixed geometry with only a
warning on the console, and pydicom reads each file on its own, so the node checks
the series itself: every instance readable (parsed as the hardened DICOM readers
parse: :func:`promptseg.io.dicom.header.parse_dicom`) with the image tags the
geometry needs as finite numbers, one size / pixel spacing / orientation / frame
of reference, a supported pixel description with pixel data of the declared
length, and slice positions evenly spaced along the slice normal (no gap,
no two slices at one position).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pydicom

from ..errors import ImageReadError, PromptsegError
from ..io.dicom.header import parse_dicom, text_value
from ..io.dicom.image_header import IMAGE_KEYWORDS, check_geometry_elements, pixel_layout


class SeriesRejected(PromptsegError):
    """A series (or its prompts, or its model run) cannot be processed; the message is the quarantine reason."""


#: elements converted (and checked) when an instance is read
_KEYWORDS = IMAGE_KEYWORDS + ("FrameOfReferenceUID",)
_PIXEL_DATA = 0x7FE00010
_GEOMETRY_TAGS = ("Rows", "Columns", "PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient")
_SPACING_TOLERANCE = 0.05  # relative deviation of one slice step from the median step


@dataclass(frozen=True)
class SeriesHeader:
    """What the checks found: ``count`` instances of ``rows`` x ``columns`` pixels, ``slice_step`` mm apart
    (None for a single image or a multi-frame instance)."""

    count: int
    rows: int
    columns: int
    slice_step: float | None


def _uid(ds: pydicom.Dataset) -> str:
    return str(ds.get("SOPInstanceUID", "?"))


def _read(path: Path) -> pydicom.Dataset:
    """The instance's header, its image elements converted and checked (pixels left unread)."""
    try:
        return parse_dicom(path, keywords=_KEYWORDS)
    except ImageReadError as error:
        detail = str(error).replace(f"cannot read {path}: ", "").replace(f"{path}: ", "").replace(str(path), path.name)
        raise SeriesRejected(f"instance file {path.name} is not readable DICOM ({detail})") from None


def _check_instance(ds: pydicom.Dataset, path: Path) -> None:
    if ds.get_item(_PIXEL_DATA, keep_deferred=True) is None:
        raise SeriesRejected(f"instance {_uid(ds)} has no pixel data (modality {text_value(ds, 'Modality') or '?'})")
    missing = [tag for tag in _GEOMETRY_TAGS if tag not in ds or ds.get(tag) in (None, "")]
    if missing:
        raise SeriesRejected(f"instance {_uid(ds)} lacks {', '.join(missing)}")
    try:
        source = f"instance {_uid(ds)}"
        check_geometry_elements(ds, source)
        pixel_layout(ds, path, source)  # supported pixel description, and as many pixel bytes as it needs
    except ImageReadError as error:
        raise SeriesRejected(str(error)) from None


def _same(datasets: Sequence[pydicom.Dataset], keyword: str, tolerance: float | None = None) -> None:
    first = datasets[0].get(keyword)
    for ds in datasets[1:]:
        value = ds.get(keyword)
        if tolerance is None:
            equal = value == first
        else:
            equal = value is not None and np.allclose(np.asarray(value, float), np.asarray(first, float), atol=tolerance)
        if not equal:
            raise SeriesRejected(f"inconsistent {keyword} in the series: {list(first) if tolerance else first} "
                                 f"in {_uid(datasets[0])}, {list(value) if tolerance and value is not None else value} in {_uid(ds)}")


def check_series(paths: Sequence[Path]) -> SeriesHeader:
    """Check the instances of one image series.

    Raises:
        SeriesRejected: with a one-line reason (no instances, unreadable file, missing tags, truncated pixels,
            mixed size/spacing/orientation/frame of reference, duplicate positions, missing or unevenly spaced slices).
    """
    if not paths:
        raise SeriesRejected("the series has no instances")
    datasets = [_read(Path(p)) for p in paths]
    for ds, path in zip(datasets, paths):
        _check_instance(ds, Path(path))
    for keyword in ("Rows", "Columns", "FrameOfReferenceUID"):
        _same(datasets, keyword)
    _same(datasets, "PixelSpacing", tolerance=1e-4)
    _same(datasets, "ImageOrientationPatient", tolerance=1e-4)
    rows, columns = int(datasets[0].Rows), int(datasets[0].Columns)
    if len(datasets) == 1:
        return SeriesHeader(count=1, rows=rows, columns=columns, slice_step=None)
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in datasets):
        raise SeriesRejected(f"the series mixes {len(datasets)} instances with multi-frame images; send one multi-frame instance or single frames")
    orientation = np.asarray(datasets[0].ImageOrientationPatient, float)
    normal = np.cross(orientation[:3], orientation[3:])
    heights = np.sort([float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float))) for ds in datasets])
    steps = np.diff(heights)
    if np.any(steps < 1e-3):
        at = heights[int(np.argmin(steps))]
        raise SeriesRejected(f"two instances at the same slice position ({at:.2f} mm along the slice normal)")
    step = float(np.median(steps))
    worst = int(np.argmax(np.abs(steps - step)))
    if abs(steps[worst] - step) > _SPACING_TOLERANCE * step:
        if steps[worst] > 1.5 * step:
            missing = int(round(steps[worst] / step)) - 1
            raise SeriesRejected(f"missing slices: a gap of {steps[worst]:.2f} mm between {heights[worst]:.2f} and "
                                 f"{heights[worst + 1]:.2f} mm where slices are {step:.2f} mm apart "
                                 f"(about {missing} slice{'s' if missing != 1 else ''} missing)")
        raise SeriesRejected(f"unevenly spaced slices: steps from {steps.min():.2f} to {steps.max():.2f} mm")
    return SeriesHeader(count=len(datasets), rows=rows, columns=columns, slice_step=step)
