"""Malformed instances sent to the DICOM node: what the node fuzz target found (docs/reliability.md).

The node must refuse or quarantine them with a one-line reason -- never an
"internal error" (an untyped exception), never losing an instance it
acknowledged. Inputs are series written by promptseg (tests/nodekit.py) and the
repository's real CT slice, with bytes changed where the campaign changed them.
"""

import struct
import tracemalloc

import pydicom
import pytest

from datafiles import DATA
from fuzz.dicom_node import NodeRefused, call
from nodekit import write_ct_series
from promptseg.node.checks import SeriesRejected, check_series

CT_SLICE = DATA / "dicom_rt" / "ct.0.dcm"  # implicit VR little endian, 512 x 512


def _one_line(error) -> str:
    message = str(error.value)
    assert message.strip() and "\n" not in message and "\r" not in message and len(message) < 600, message
    return message


def _spacing_as_text(path, text: bytes) -> None:
    """Overwrite the value of Pixel Spacing with ``text`` (as long as the value), as a mutation does."""
    data = path.read_bytes()
    at = data.find(struct.pack("<HH", 0x0028, 0x0030))
    length = struct.unpack("<H", data[at + 6:at + 8])[0]  # explicit VR: tag, VR, 2-byte length
    path.write_bytes(data[:at + 8] + text[:length].ljust(length) + data[at + 8 + length:])


def test_pixel_spacing_that_is_not_numbers_is_a_series_rejection(tmp_path):
    files = write_ct_series(tmp_path / "series")
    _spacing_as_text(files[2], b"nonenonenonenonenonenone")
    assert check_series(files[:2]).count == 2
    with pytest.raises(SeriesRejected) as error:  # was: ValueError: could not convert string to float
        check_series(files)
    assert _one_line(error) == ("instance file 000003.dcm is not readable DICOM (malformed DICOM header: (0028,0030) "
                                "PixelSpacing 'nonenonenonenoneno' is not a number)")


def test_a_length_claiming_4_gib_is_a_series_rejection_without_the_allocation(tmp_path):
    data = CT_SLICE.read_bytes()
    at = data.find(struct.pack("<HH", 0x0008, 0x0005)) + 4  # the length of Specific Character Set
    path = tmp_path / "ct.dcm"
    path.write_bytes(data[:at] + b"\xf0\xff\xff\xff" * 25 + data[at:])
    tracemalloc.start()
    try:
        with pytest.raises(SeriesRejected) as error:  # was: MemoryError inside pydicom
            check_series([path])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024**2
    assert _one_line(error).startswith("instance file ct.dcm is not readable DICOM (not a readable DICOM file (")


def test_through_the_store_handler_a_bad_slice_quarantines_its_series_with_the_reason(tmp_path):
    """The node target's path: C-STORE handler, journal, worker, quarantine (tests/fuzz/dicom_node.py)."""
    good = write_ct_series(tmp_path / "good", series_uid="1.2.3.4.5.1")
    assert call(good[0], False) is None  # stored, checked, segmented, RTSTRUCT written
    bad = write_ct_series(tmp_path / "bad", series_uid="1.2.3.4.5.2")
    _spacing_as_text(bad[1], b"nonenonenonenonenonenone")
    with pytest.raises(NodeRefused) as error:
        call(bad[0], False)
    assert "PixelSpacing 'nonenonenonenoneno' is not a number" in _one_line(error)
    short = tmp_path / "short"
    short.mkdir()
    dataset = pydicom.dcmread(CT_SLICE)
    dataset.PixelData = dataset.PixelData[:1000]
    dataset.save_as(short / "ct.dcm")
    with pytest.raises(NodeRefused) as error:
        call(short / "ct.dcm", False)
    assert "truncated DICOM image: 1000 bytes of Pixel Data" in _one_line(error)
