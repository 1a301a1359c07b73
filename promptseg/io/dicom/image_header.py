"""The pixel description of a DICOM image, checked before GDCM decodes it (:func:`pixel_layout`),
and what GDCM decoded checked against it (:func:`native_values`, :func:`check_geometry_elements`).

GDCM (through SimpleITK) trusts the Image Pixel module: a slice declaring
Samples per Pixel 0 made it fail with a ``RuntimeError`` deep inside ITK, and
Pixel Data shorter than Rows x Columns x frames is read past its end or
padded. :func:`pixel_layout` checks what GDCM is about to rely on -- the
transfer syntax, the pixel module's values and their combinations, the size
against promptseg's read budget, the length of native pixel data, the
fragments of encapsulated (compressed) pixel data and the rescale -- and
raises one :class:`~promptseg.errors.ImageReadError` naming the element.

GDCM parses the file again on its own, and two parsers can disagree about a
malformed file (a repeated run of elements: pydicom keeps the last Pixel Data,
GDCM the first). So uncompressed pixels are also decoded by pydicom from the
bytes its parse located, and the readers compare the two; geometry elements
are compared with what GDCM derived from them.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.uid import (
    RLELossless,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
)

from ...errors import ImageReadError
from ..common import quote
from ..limits import UNIT_TOLERANCE, check_allocation, origin_problem, spacing_problem
from .header import PYDICOM_ERRORS, text_value

#: Transfer syntaxes of uncompressed pixel data.
NATIVE_SYNTAXES = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian,
                             DeflatedExplicitVRLittleEndian})
#: Compressed transfer syntaxes GDCM decodes.
ENCAPSULATED_SYNTAXES = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1,
                                   JPEGLSLossless, JPEGLSNearLossless, JPEG2000Lossless, JPEG2000, RLELossless})
#: Photometric interpretations by Samples per Pixel.
PHOTOMETRIC = {
    1: frozenset({"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR"}),
    3: frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420"}),
}
#: Elements of the Image Pixel module and around it that the image readers use.
IMAGE_KEYWORDS = (
    "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
    "PixelRepresentation", "PlanarConfiguration", "NumberOfFrames", "RescaleSlope", "RescaleIntercept",
    "Modality", "SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "SeriesDescription", "InstanceNumber",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
)
_PIXEL_MODULE = ("SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated", "BitsStored",
                 "HighBit", "PixelRepresentation", "PlanarConfiguration", "NumberOfFrames")
_PIXEL_DATA = 0x7FE00010
_UNDEFINED = 0xFFFFFFFF
_ITEM, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE0DD


@dataclass(frozen=True)
class PixelLayout:
    """What a DICOM image's header says its pixels are.

    Attributes:
        rows, columns: Rows and Columns.
        frames: Number of Frames (1 for a single-frame image).
        samples: Samples per Pixel (1 or 3).
        bits_allocated: Bits Allocated (8, 16 or 32; 1 for bit-packed frames).
        transfer_syntax: Transfer Syntax UID.
    """

    rows: int
    columns: int
    frames: int
    samples: int
    bits_allocated: int
    transfer_syntax: str

    @property
    def encapsulated(self) -> bool:
        return self.transfer_syntax in ENCAPSULATED_SYNTAXES

    @property
    def native_bytes(self) -> int:
        """Bytes of uncompressed Pixel Data the header implies."""
        return math.ceil(self.rows * self.columns * self.frames * self.samples * self.bits_allocated / 8)


def _integer(header: Dataset, keyword: str, source: str, low: int, high: int, default=None) -> int:
    value = header.get(keyword, default)
    if value is None or value == "":
        if default is not None:
            return default
        raise ImageReadError(f"{source}: malformed DICOM image: {keyword} is missing")
    if isinstance(value, (bytes, str, list, tuple)) or not hasattr(value, "__int__") or int(value) != value:
        raise ImageReadError(f"{source}: malformed DICOM image: {keyword} is {quote(str(value))}, not one integer")
    if not low <= int(value) <= high:
        raise ImageReadError(f"{source}: malformed DICOM image: {keyword} is {int(value)} (must be {low} .. {high})")
    return int(value)


def rescale(header: Dataset) -> tuple[float, float]:
    """(slope, intercept) of the Modality LUT, after :func:`pixel_layout` checked them."""
    slope, intercept = header.get("RescaleSlope"), header.get("RescaleIntercept")
    return (float(slope) if slope not in (None, "") else 1.0,
            float(intercept) if intercept not in (None, "") else 0.0)


def _rescale(header: Dataset, source: str) -> bool:
    """Check Rescale Slope/Intercept; True when a rescale is applied."""
    given = [keyword for keyword in ("RescaleSlope", "RescaleIntercept") if header.get(keyword) not in (None, "")]
    if len(given) == 1:  # GDCM then rescales with a default for the other, pydicom not at all
        missing = "RescaleIntercept" if given == ["RescaleSlope"] else "RescaleSlope"
        raise ImageReadError(f"{source}: malformed DICOM image: {given[0]} without {missing} (the Modality LUT "
                             "needs both)")
    present = False
    for keyword, default in (("RescaleSlope", 1.0), ("RescaleIntercept", 0.0)):
        value = header.get(keyword)
        if value is None or value == "":
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ImageReadError(f"{source}: malformed DICOM image: {keyword} is {quote(str(value))}, not a number") from None
        if not math.isfinite(number) or abs(number) > 1e30 or (keyword == "RescaleSlope" and number == 0):
            raise ImageReadError(f"{source}: unusable DICOM image: {keyword} is {number:g}")
        present = present or number != default
    return present


def transfer_syntax(header: Dataset) -> str:
    """The Transfer Syntax UID of a parsed file (Implicit VR Little Endian when it has no file meta)."""
    meta = getattr(header, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return str(uid).strip() if uid else ImplicitVRLittleEndian


def _fragments(path: Path, offset: int, size: int, source: str) -> int:
    """Count the items of encapsulated Pixel Data whose value starts at byte ``offset``; checks they end in the file.

    Hand-written over pydicom's ``generate_fragments`` because the value was left
    unread by :func:`~.header.parse_dicom`; this walks the item headers in a
    memory map without copying fragment data.
    """
    count = 0
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        position = offset
        while True:
            if position + 8 > size:
                raise ImageReadError(f"{source}: truncated DICOM image: the compressed Pixel Data has no end marker")
            group, element, length = struct.unpack_from("<HHI", data, position)
            tag = (group << 16) | element
            position += 8
            if tag == _SEQUENCE_END:
                return count - 1  # the first item is the Basic Offset Table
            if tag != _ITEM or length == _UNDEFINED or position + length > size:
                raise ImageReadError(
                    f"{source}: malformed DICOM image: the compressed Pixel Data's item {count} at byte "
                    f"{position - 8} is {'cut off' if tag == _ITEM else 'not an item'}"
                )
            position += length
            count += 1


def pixel_layout(header: Dataset, path, source: str = "") -> PixelLayout:
    """Check the pixel description of a parsed DICOM image (see the module docstring).

    Args:
        header: data set from :func:`~.header.parse_dicom` with :data:`IMAGE_KEYWORDS` converted.
        path: the file (to check compressed data in place).
        source: name for messages (default: ``path``).

    Raises:
        ImageReadError: an unsupported transfer syntax or pixel description, a size
            over the read budget, Pixel Data shorter than the image, corrupt fragments.
    """
    path = Path(path)
    source = source or str(path)
    syntax = transfer_syntax(header)
    if syntax not in NATIVE_SYNTAXES | ENCAPSULATED_SYNTAXES:
        name = getattr(getattr(getattr(header, "file_meta", None), "TransferSyntaxUID", None), "name", "")
        raise ImageReadError(
            f"{source}: unsupported DICOM transfer syntax {quote(syntax, 64)}"
            + (f" ({name})" if name and name != syntax else "")
        )
    samples = _integer(header, "SamplesPerPixel", source, 1, 3)
    photometric = text_value(header, "PhotometricInterpretation").upper()
    if samples not in PHOTOMETRIC or photometric not in PHOTOMETRIC[samples]:
        raise ImageReadError(
            f"{source}: unsupported DICOM image: Samples per Pixel {samples} with Photometric Interpretation "
            f"{quote(photometric)} (grey images have 1 sample, colour images 3)"
        )
    rows = _integer(header, "Rows", source, 1, 65535)
    columns = _integer(header, "Columns", source, 1, 65535)
    frames = _integer(header, "NumberOfFrames", source, 1, 2**31 - 1, default=1)
    bits = _integer(header, "BitsAllocated", source, 1, 32)
    if bits not in (1, 8, 16, 32):
        raise ImageReadError(f"{source}: unsupported DICOM image: Bits Allocated {bits} (8, 16, 32 or 1)")
    stored = _integer(header, "BitsStored", source, 1, bits)
    _integer(header, "HighBit", source, stored - 1, bits - 1)
    _integer(header, "PixelRepresentation", source, 0, 1)
    if samples == 3:
        _integer(header, "PlanarConfiguration", source, 0, 1, default=0)
    layout = PixelLayout(rows, columns, frames, samples, bits, syntax)
    itemsize = max(1, bits // 8) * (4 if _rescale(header, source) else 1)
    check_allocation((frames, rows, columns, samples), itemsize, source)
    element = header.get_item(_PIXEL_DATA, keep_deferred=True)
    if element is None:
        raise ImageReadError(f"{source}: the DICOM image has no Pixel Data")
    size = path.stat().st_size
    if layout.encapsulated:
        if element.length != _UNDEFINED:
            raise ImageReadError(f"{source}: malformed DICOM image: compressed Pixel Data must be encapsulated "
                                 f"(undefined length), not {element.length} bytes")
        fragments = _fragments(path, element.value_tell, size, source)
        if fragments < frames:
            raise ImageReadError(f"{source}: truncated DICOM image: {frames} frames but {max(fragments, 0)} "
                                 "compressed fragments")
        return layout
    if element.length == _UNDEFINED:
        raise ImageReadError(f"{source}: malformed DICOM image: uncompressed Pixel Data of undefined length")
    present = element.length
    if syntax != DeflatedExplicitVRLittleEndian:  # offsets are in the file, not in an inflated stream
        present = min(present, max(size - element.value_tell, 0))
    if present < layout.native_bytes:
        raise ImageReadError(
            f"{source}: truncated DICOM image: {present} bytes of Pixel Data, but {rows} x {columns} pixels x "
            f"{frames} frames x {samples} samples of {bits} bits need {layout.native_bytes}"
        )
    return layout


def _numbers(header: Dataset, keyword: str, count: int, source: str):
    value = header.get(keyword)
    if value is None or value == "":
        return None
    values = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) != count or not all(math.isfinite(v) for v in numbers):
        raise ImageReadError(
            f"{source}: malformed DICOM image: {keyword} is {quote(str(value), 60)}, not {count} finite numbers"
        )
    return numbers


def check_geometry_elements(header: Dataset, source: str) -> None:
    """Image Position (Patient), Image Orientation (Patient) and Pixel Spacing, where present, must be usable.

    GDCM reads a malformed value as a default (Pixel Spacing 1 mm, an identity
    orientation) and the image would be placed wrongly; here it is refused.

    Raises:
        ImageReadError: not numbers, not finite, a spacing outside 1e-6 .. 1e5 mm,
            a position beyond 1e9 mm, orientation vectors not of unit length or not perpendicular.
    """
    spacing = _numbers(header, "PixelSpacing", 2, source)
    problem = spacing_problem(spacing) if spacing else None
    position = _numbers(header, "ImagePositionPatient", 3, source)
    problem = problem or (origin_problem(position) if position else None)
    orientation = _numbers(header, "ImageOrientationPatient", 6, source)
    if orientation and not problem:
        row, column = orientation[:3], orientation[3:]
        lengths = [math.sqrt(sum(v * v for v in vector)) for vector in (row, column)]
        cosine = sum(a * b for a, b in zip(row, column))
        if any(abs(length - 1) > UNIT_TOLERANCE for length in lengths) or abs(cosine) > UNIT_TOLERANCE:
            problem = (f"Image Orientation (Patient) {tuple(orientation)} is not two perpendicular unit vectors")
    if problem:
        raise ImageReadError(f"{source}: unusable DICOM geometry: {problem}")


def native_values(header: Dataset, path, layout: PixelLayout, source: str) -> Optional[np.ndarray]:
    """The image decoded by pydicom from the bytes the parse located, after the rescale.

    Returns:
        ``(frames, rows, columns)`` (``(..., 3)`` for RGB) float64, or None for
        compressed, deflated, palette and YBR images (not compared).
    """
    photometric = text_value(header, "PhotometricInterpretation").upper()
    if layout.encapsulated or layout.transfer_syntax == DeflatedExplicitVRLittleEndian \
            or photometric not in ("MONOCHROME1", "MONOCHROME2", "RGB"):
        return None
    element = header.get_item(_PIXEL_DATA, keep_deferred=True)
    if element.value is not None:
        data = bytes(element.value[:layout.native_bytes])
    else:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            data = bytes(mapped[element.value_tell:element.value_tell + layout.native_bytes])
    image = Dataset()
    image.file_meta = FileMetaDataset()
    image.file_meta.TransferSyntaxUID = layout.transfer_syntax
    for keyword in _PIXEL_MODULE:
        if keyword in header:
            setattr(image, keyword, header[keyword].value)
    image.PixelData = data
    try:
        values = np.asarray(image.pixel_array, dtype=np.float64)
    except PYDICOM_ERRORS as error:
        raise ImageReadError(f"{source}: the DICOM pixel data cannot be decoded ({type(error).__name__})") from None
    slope, intercept = rescale(header)
    values = values * slope + intercept
    shape = (layout.frames, layout.rows, layout.columns) + ((3,) if layout.samples == 3 else ())
    return values.reshape(shape)


def check_decoded(array: np.ndarray, expected: Optional[np.ndarray], source: str) -> None:
    """GDCM's pixels (after the rescale) must equal pydicom's decoding of the same bytes."""
    if expected is None:
        return
    array = np.asarray(array, dtype=np.float64)
    if array.shape != expected.shape:
        array = array.reshape(expected.shape) if array.size == expected.size else array
    scale = max(1.0, float(np.abs(expected).max()))
    if array.shape != expected.shape or not np.allclose(array, expected, rtol=1e-5, atol=1e-5 * scale):
        raise ImageReadError(
            f"{source}: malformed DICOM file: GDCM and pydicom read different pixels from it (repeated or "
            "out-of-order elements?)"
        )


def check_read_geometry(spacing, origin, direction, header: Dataset, source: str) -> None:
    """GDCM's in-plane spacing, origin and axes must be the header's Pixel Spacing, Image Position and Orientation.

    GDCM takes them from other elements for SOP classes it treats differently
    (or does not know) and falls back to defaults, which would misplace the image.
    """
    problems = []
    values = _numbers(header, "PixelSpacing", 2, source)
    if values and not np.allclose(spacing[:2], values[::-1], rtol=1e-4, atol=1e-6):
        problems.append(f"spacing {tuple(round(float(v), 6) for v in spacing[:2])} mm, Pixel Spacing "
                        f"(row, column) {tuple(values)}")
    values = _numbers(header, "ImagePositionPatient", 3, source)
    if values and not np.allclose(origin, values, rtol=1e-6, atol=1e-3):
        problems.append(f"origin {tuple(round(float(v), 4) for v in origin)}, Image Position (Patient) {tuple(values)}")
    values = _numbers(header, "ImageOrientationPatient", 6, source)
    if values:
        axes = np.asarray(direction, dtype=float)[:, :2].T
        wanted = np.array([values[:3], values[3:]], dtype=float)
        wanted /= np.linalg.norm(wanted, axis=1, keepdims=True)
        if not np.allclose(axes, wanted, atol=1e-3):
            problems.append(f"axes {np.round(axes, 4).tolist()}, Image Orientation (Patient) {tuple(values)}")
    if problems:
        raise ImageReadError(
            f"{source}: GDCM placed the image differently from its DICOM header ({'; '.join(problems)}); "
            f"SOP class {quote(text_value(header, 'SOPClassUID'), 64)}"
        )
