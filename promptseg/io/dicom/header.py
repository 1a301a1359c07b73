"""Parsing DICOM files from untrusted sources: :func:`parse_dicom`, one-line errors, no runaway memory.

pydicom trusts the lengths written in a file. Reading a file object, it
allocates whatever an element claims before it notices the file is shorter: a
length field of 0xFFFFFFF0 in front of the Specific Character Set asks for
4 GiB (``MemoryError``, or the OS killing the process). Here pydicom reads the
file through a read-only memory map, where a read can never return -- or
allocate -- more than the file holds. Its other complaints about malformed
data (unknown VRs, ``BytesLengthException``, truncated sequences, values that
do not convert) surface lazily, when an element is first used; the elements a
caller names are converted right away, so every complaint becomes one
:class:`~promptseg.errors.PromptsegError` here, naming the element, with the
file's bytes escaped.

Large binary values (pixels, overlays, private blobs) are left unread
(deferred); their lengths stay available through
``dataset.get_item(tag, keep_deferred=True).length``. Reading them afterwards
is an error: the map is closed when :func:`parse_dicom` returns.
"""

from __future__ import annotations

import mmap
import re
import struct
import warnings
from pathlib import Path
from typing import Iterable, Optional

import pydicom
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from ...errors import ImageReadError, PromptsegError
from ..common import check_regular_file, printable, quote

#: What pydicom raises on malformed input (it has no common base class for parse errors).
PYDICOM_ERRORS = (
    InvalidDicomError, BytesLengthException, NotImplementedError, ValueError, TypeError, LookupError,
    EOFError, OSError, struct.error, OverflowError, AttributeError, RecursionError,
)
_UNDEFINED = 0xFFFFFFFF
_DEFLATED = "1.2.840.10008.1.2.1.99"
#: Values longer than this are left unread (deferred) when bulk values are deferred.
DEFER_BYTES = 64 * 1024
#: VRs of bulk data that may be long and are never used as text or numbers here.
BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "SQ", "UT", "UC", "UR", "LT", "OB or OW", "US or OW",
                      "US or SS or OW"})
#: Value representations whose values are text (checked for bytes that cannot be text).
TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "PN", "SH", "TM", "UI"})
#: A UID: digits and dots, at most 64 characters (leading zeros, which some systems write, are tolerated).
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def tag_name(tag: int) -> str:
    """``(0008,0060) Modality`` for a tag."""
    tag = BaseTag(tag)
    keyword = keyword_for_tag(tag)
    return f"({tag.group:04X},{tag.element:04X})" + (f" {keyword}" if keyword else "")


def _vr(element) -> str:
    if element.VR:
        return str(element.VR)
    try:
        return dictionary_VR(element.tag)
    except KeyError:
        return "UN"


def _dictionary_vr(tag) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:  # private and unknown tags
        return ""


def _number(text: str) -> bool:
    """True if pydicom's refusal (it keeps bad decimal strings as text) was about form, not about the number."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_text(element, vr: str, source: str, error: type) -> None:
    """Refuse a text value holding control characters (its length swallowed its neighbours), a UID that is
    not one, or a decimal/integer string that is not a number.

    Characters 0x80-0x9F are tolerated: text written in Windows-1252 under a
    Latin-1 character set (``O\x92Brien``) is common and harmless.
    """
    values = element.value if isinstance(element.value, (list, tuple, MultiValue)) else [element.value]
    for value in values:
        text = str(value if value is not None else "").rstrip("\x00 ")
        if any(ch < " " or ch == "\x7f" for ch in text):  # C0 controls: tag and length bytes, not text
            raise error(
                f"{source}: malformed DICOM header: {tag_name(element.tag)} holds bytes that are not text "
                f"({quote(text)}); the file is corrupt"
            )
        if vr == "UI" and text and (len(text) > 64 or not _UID.fullmatch(text)):
            raise error(f"{source}: malformed DICOM header: {tag_name(element.tag)} {quote(text, 70)} is not a UID")
        if vr in ("DS", "IS") and text and not isinstance(value, (int, float)) and not _number(text):
            raise error(f"{source}: malformed DICOM header: {tag_name(element.tag)} {quote(text)} is not a number")


def _convert(dataset: Dataset, tags: Optional[Iterable[int]], source: str, error: type, depth: int = 0) -> None:
    """Convert ``tags`` of ``dataset`` (all, recursively, when None); pydicom's complaints become ``error``."""
    if depth > 32:
        raise error(f"{source}: malformed DICOM: sequences nested more than 32 levels deep")
    for tag in list(dataset.keys()) if tags is None else tags:
        raw = dataset.get_item(tag, keep_deferred=True)
        if raw is None or (isinstance(raw, RawDataElement) and raw.value is None and raw.length):
            continue  # absent, or deferred bulk data
        try:
            element = dataset[tag]
        except PYDICOM_ERRORS as failure:
            raise error(
                f"{source}: malformed DICOM element {tag_name(tag)}: "
                f"{printable(f'{type(failure).__name__}: {failure}', 200)}"
            ) from None
        vr = _vr(element)
        if _dictionary_vr(element.tag) == "SQ" and not isinstance(element.value, Sequence) \
                and element.value not in (None, b"", ""):
            # readers iterate a sequence's items as data sets; a VR changed to US gives them numbers
            raise error(f"{source}: malformed DICOM header: {tag_name(element.tag)} is not a sequence (VR {quote(vr, 20)})")
        if vr in TEXT_VRS:
            _check_text(element, vr, source, error)
        if tags is None and element.VR == "SQ" and isinstance(element.value, Sequence):
            for item in element.value:
                _convert(item, None, source, error, depth + 1)


def _check_lengths(dataset: Dataset, size: Optional[int], deferred: bool, source: str, error: type) -> None:
    """Every element's value must end inside the file, and a deferred (over 64 KiB) one must be bulk data.

    pydicom reads a value that runs past the end of the file as the bytes that
    are there, so a truncated structure set would lose its last contours silently.
    """
    for tag in list(dataset.keys()):
        raw = dataset.get_item(tag, keep_deferred=True)
        if not isinstance(raw, RawDataElement):
            continue
        if size is not None and raw.length != _UNDEFINED and raw.value_tell + raw.length > size:
            raise error(
                f"{source}: truncated DICOM file: {tag_name(tag)} needs {raw.length} bytes from byte "
                f"{raw.value_tell}, but the file ends at byte {size}"
            )
        if deferred and raw.value is None and raw.length and _vr(raw) not in BULK_VRS:
            raise error(
                f"{source}: malformed DICOM header: {tag_name(tag)} ({_vr(raw)}) claims {raw.length} bytes; "
                "the file is corrupt"
            )


def _starts_like_dicom(dataset: Dataset) -> bool:
    """A data set without the Part 10 preamble starts with its file meta (group 0002) or group 0008 (older files)."""
    if len(getattr(dataset, "file_meta", None) or ()):
        return True
    tags = list(dataset.keys())
    return bool(tags) and BaseTag(min(tags)).group in (0x0002, 0x0008)


def keyword_tags(keywords: Iterable[str]) -> list[int]:
    """Tags of DICOM keywords (``"Rows"`` -> 0x00280010)."""
    return [tag_for_keyword(keyword) for keyword in keywords]


def parse_dicom(
    path,
    *,
    keywords: Optional[Iterable[str]] = (),
    defer_bulk: bool = True,
    force: bool = True,
    error: type = ImageReadError,
) -> Dataset:
    """Parse a DICOM file, refusing malformed ones with ``error`` (one line).

    Args:
        path: the file (a regular, non-empty file; FIFOs and devices are refused unopened).
        keywords: elements converted (and checked) now; ``None`` converts every
            element, sequences included (for objects read whole, such as RTSTRUCT).
        defer_bulk: leave values over 64 KiB unread (pixels); ``False`` reads everything.
        force: also parse files without the ``DICM`` preamble (pydicom's ``force``).
        error: the :class:`~promptseg.errors.PromptsegError` subclass raised.

    Returns:
        The data set (file meta in ``dataset.file_meta``); deferred values must not be read.

    Raises:
        ``error``: not a regular file, empty, not DICOM, or malformed (the message names the element).
    """
    path = Path(path)
    source = str(path)
    try:
        size = check_regular_file(path).st_size
    except PromptsegError as failure:
        raise error(str(failure)) from None
    if size == 0:
        raise error(f"cannot read {path}: the file is empty (0 bytes)")
    tags = None if keywords is None else keyword_tags(keywords)
    try:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom warns about every oddity; malformed data raises below
                dataset = pydicom.dcmread(data, force=force, defer_size=DEFER_BYTES if defer_bulk else None)
                if data[128:132] != b"DICM" and not _starts_like_dicom(dataset):
                    raise error(f"cannot read {path}: not a DICOM file (no 'DICM' marker at byte 128, and it does "
                                "not start with a DICOM element)")
                deflated = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None) == _DEFLATED
                # offsets in a deflated file are in the inflated stream, not in the file
                _check_lengths(dataset, None if deflated else size, defer_bulk, source, error)
                _convert(dataset, tags, source, error)
                if getattr(dataset, "file_meta", None) is not None:
                    _convert(dataset.file_meta, None, source, error)
    except PromptsegError:
        raise
    except PYDICOM_ERRORS as failure:
        reason = printable(f"{type(failure).__name__}: {failure}", 200)
        if isinstance(failure, (ValueError, EOFError)) and ("seek out of range" in str(failure) or "EOF" in str(failure)):
            reason = "an element's length runs past the end of the file: truncated or corrupt"
        raise error(f"cannot read {path}: not a readable DICOM file ({reason})") from None
    if hasattr(dataset, "buffer"):
        dataset.buffer = None  # the map is closed; copies of the data set must not try to copy it
    return dataset


def text_value(dataset: Optional[Dataset], keyword: str) -> str:
    """A converted text element as one line (``""`` when absent or empty; multi-values joined by ``\\``)."""
    if dataset is None:
        return ""
    value = dataset.get(keyword)
    if value is None:
        return ""
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(v) for v in value)
    return printable(str(value).strip(), 1000)
