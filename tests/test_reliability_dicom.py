"""Malformed DICOM: the reproducers of issue 15 and what the DICOM readers refuse (docs/reliability.md).

Every malformed input is a one-line PromptsegError naming the file (and the
element), never a pydicom/GDCM exception, a native crash or a misplaced image.
Inputs are real files (the repository's CT slice and RT Structure Set,
pydicom's CT_small.dcm) and series written by promptseg, with bytes changed
where the issue's fuzz campaign changed them.
"""

import shutil
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from datafiles import DATA
from promptseg.errors import DicomError, ImageReadError
from promptseg.io import load_volume
from promptseg.io.dicom import list_dicom_series, list_rois, read_rtstruct, write_series
from promptseg.volume import Volume

CT_SLICE = DATA / "dicom_rt" / "ct.0.dcm"  # implicit VR little endian, 512 x 512
RTSS = DATA / "dicom_rt" / "rtss.dcm"
CT_SMALL = Path(get_testdata_file("CT_small.dcm"))  # explicit VR little endian, 128 x 128


def _one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message and "\r" not in message and len(message) < 600, message
    assert all(ch >= " " for ch in message), message
    return message


def _element(data: bytes, group: int, element: int) -> int:
    """Byte offset of the first element with this tag (little endian)."""
    offset = data.find(struct.pack("<HH", group, element))
    assert offset > 0
    return offset


def _copy(tmp_path, source: Path, data: bytes, name: str = "x.dcm") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# -- the reproducers of issue 15 ------------------------------------------------------
def test_100_bytes_inserted_into_the_header_is_a_typed_error_without_a_huge_allocation(tmp_path):
    data = CT_SLICE.read_bytes()
    at = _element(data, 0x0008, 0x0005) + 4  # the length of Specific Character Set (implicit VR: 4 bytes)
    path = _copy(tmp_path, CT_SLICE, data[:at] + b"\xf0\xff\xff\xff" * 25 + data[at:])
    tracemalloc.start()
    try:
        with pytest.raises(ImageReadError) as error:
            load_volume(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024**2  # pydicom asked for 4 GiB here (MemoryError, or the OS killing the process)
    assert _one_line(error).startswith(f"cannot read {path}: not a readable DICOM file (")


def test_unknown_vr_ua_is_a_typed_error_naming_the_element(tmp_path):
    data = CT_SMALL.read_bytes()
    at = _element(data, 0x0028, 0x0004) + 4  # Photometric Interpretation's VR (explicit VR)
    path = _copy(tmp_path, CT_SMALL, data[:at] + b"UA" + data[at + 2:])
    with pytest.raises(ImageReadError) as error:
        load_volume(path)
    assert _one_line(error) == (f"{path}: malformed DICOM element (0028,0004) PhotometricInterpretation: "
                                "NotImplementedError: Unknown Value Representation 'UA' in tag (0028,0004)")


def test_bytes_length_exception_is_a_typed_error(tmp_path):
    data = CT_SMALL.read_bytes()
    at = _element(data, 0x0028, 0x0010) + 4  # Rows: US with 2 bytes; VR FD needs multiples of 8
    path = _copy(tmp_path, CT_SMALL, data[:at] + b"FD" + data[at + 2:])
    with pytest.raises(ImageReadError) as error:
        load_volume(path)
    message = _one_line(error)
    assert message.startswith(f"{path}: malformed DICOM element (0028,0010) Rows: BytesLengthException: ")


def test_samples_per_pixel_0_is_refused_before_gdcm(tmp_path):
    data = CT_SMALL.read_bytes()
    at = _element(data, 0x0028, 0x0002) + 8  # Samples per Pixel's value (explicit VR, US)
    path = _copy(tmp_path, CT_SMALL, data[:at] + struct.pack("<H", 0) + data[at + 2:])
    with pytest.raises(ImageReadError) as error:
        load_volume(path)
    assert _one_line(error) == f"{path}: malformed DICOM image: SamplesPerPixel is 0 (must be 1 .. 3)"


def test_raw_header_bytes_and_newlines_never_reach_a_message(tmp_path):
    """A Modality holding a tag's bytes and a newline (the message used to carry them raw)."""
    data = CT_SMALL.read_bytes()
    at = _element(data, 0x0008, 0x0060) + 8  # Modality's value (explicit VR, 2 bytes "CT")
    path = _copy(tmp_path, CT_SMALL, data[:at] + b"\x08\n" + data[at + 2:])
    with pytest.raises(ImageReadError) as error:
        load_volume(path)
    assert _one_line(error) == (f"{path}: malformed DICOM header: (0008,0060) Modality holds bytes that are not "
                                "text ('\\x08\\n'); the file is corrupt")


# -- what else the image readers refuse --------------------------------------------------
def test_truncated_pixel_data_is_refused(tmp_path):
    data = CT_SLICE.read_bytes()
    path = _copy(tmp_path, CT_SLICE, data[:-1000])
    with pytest.raises(ImageReadError) as error:
        load_volume(path)
    assert _one_line(error) == (f"cannot read {path}: not a readable DICOM file (an element's length runs past "
                                "the end of the file: truncated or corrupt)")
    small = CT_SMALL.read_bytes()  # a small image's pixels are read, not skipped: their length is checked
    start = _element(small, 0x7FE0, 0x0010) + 12
    whole = _copy(tmp_path, CT_SMALL, small[:start + 1000], "whole.dcm")
    with pytest.raises(ImageReadError) as error:
        load_volume(whole)
    assert _one_line(error) == (f"{whole}: truncated DICOM file: (7FE0,0010) PixelData needs 32768 bytes from "
                                f"byte {start}, but the file ends at byte {start + 1000}")


def test_a_repeated_run_of_elements_where_pydicom_and_gdcm_disagree_is_refused(tmp_path):
    """pydicom keeps the last copy of a repeated element, GDCM the first: the two decodings are compared."""
    data = CT_SMALL.read_bytes()
    start = _element(data, 0x0028, 0x1052)  # Rescale Intercept ... through the end of the pixels
    pixels = _element(data, 0x7FE0, 0x0010)
    changed = bytearray(data[start:])
    changed[pixels - start + 12:pixels - start + 12 + 64] = bytes(64)  # the second copy's first pixels differ
    path = _copy(tmp_path, CT_SMALL, data + bytes(changed))
    with pytest.raises(ImageReadError) as error:
        load_volume(path)
    assert _one_line(error) == (f"{path}: malformed DICOM file: GDCM and pydicom read different pixels from it "
                                "(repeated or out-of-order elements?)")


def test_pixel_spacing_is_the_headers_whatever_the_sop_class(tmp_path):
    """GDCM reads a DX image without Imager Pixel Spacing at 1 mm; Pixel Spacing is the spacing in the patient."""
    dataset = pydicom.dcmread(CT_SMALL)
    dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # DX
    path = tmp_path / "x.dcm"
    dataset.save_as(path)
    volume = load_volume(path)
    np.testing.assert_allclose(volume.spacing[:2], [0.661468, 0.661468], rtol=1e-6)
    assert volume.dicom.pixel_spacing == (0.661468, 0.661468)
    dataset.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1 junk"
    dataset.save_as(path)
    with pytest.raises(ImageReadError) as error:
        load_volume(path)
    assert _one_line(error) == (f"{path}: malformed DICOM header: (0008,0016) SOPClassUID "
                                "'1.2.840.10008.5.1.4.1.1.1.1 junk' is not a UID")


def test_invalid_geometry_elements_are_refused(tmp_path):
    for keyword, value, expected in (
        ("PixelSpacing", ["nan", "0.5"], "PixelSpacing is '[nan, 0.5]', not 2 finite numbers"),
        ("PixelSpacing", ["0", "0.5"], "spacing (0, 0.5) mm is outside the accepted range"),
        ("ImageOrientationPatient", [1, 0, 0, 1, 0, 0], "is not two perpendicular unit vectors"),
    ):
        dataset = pydicom.dcmread(CT_SMALL)
        setattr(dataset, keyword, value)
        path = tmp_path / f"{keyword}.dcm"
        dataset.save_as(path)
        with pytest.raises(ImageReadError) as error:
            load_volume(path)
        assert expected in _one_line(error)


def test_a_fifo_is_refused_unopened(tmp_path):
    import os

    fifo = tmp_path / "slice.dcm"
    os.mkfifo(fifo)
    with pytest.raises(ImageReadError, match=r"it is a FIFO \(named pipe\), not a regular file"):
        load_volume(fifo)


# -- series -------------------------------------------------------------------------------
@pytest.fixture
def series(tmp_path) -> Path:
    """A 6-slice MR series written by promptseg (16 x 12 pixels, 0.8 x 0.7 x 3 mm)."""
    array = (np.arange(6 * 12 * 16, dtype=np.int16).reshape(6, 12, 16) % 700)
    folder = tmp_path / "series"
    write_series(Volume(array, (0.8, 0.7, 3.0), (10.0, -20.0, 30.0), np.eye(3), modality="MR"), folder)
    return folder


def _set(path: Path, **values) -> None:
    dataset = pydicom.dcmread(path)
    for keyword, value in values.items():
        setattr(dataset, keyword, value)
    dataset.save_as(path)


def test_series_reads_and_ignores_non_image_objects(series):
    shutil.copy(RTSS, series / "rtss.dcm")  # an RTSTRUCT next to its images is no second series
    (series / "notes.txt").write_text("not DICOM")
    (series / ".000009.dcm.tmp-host-1-x").write_bytes(b"partial")  # a killed write's temporary
    volume = load_volume(series)
    assert volume.shape == (6, 12, 16) and volume.dicom.num_slices == 6
    assert [s["modality"] for s in list_dicom_series(series)] == ["MR"]
    np.testing.assert_allclose(volume.spacing, (0.8, 0.7, 3.0), atol=1e-6)


def test_series_with_a_corrupt_slice_names_it(series):
    slice3 = sorted(series.glob("*.dcm"))[2]
    data = slice3.read_bytes()
    slice3.write_bytes(data[:200])
    with pytest.raises(ImageReadError) as error:
        load_volume(series)
    assert _one_line(error) == (f"cannot read the DICOM series in {series}: {slice3.name} is no complete DICOM "
                                "object (no SOP Class UID, no pixels): truncated?")
    slice3.write_bytes(data[:-100])
    with pytest.raises(ImageReadError) as error:
        load_volume(series)
    assert _one_line(error).startswith(f"cannot read the DICOM series in {series}: {slice3}: truncated DICOM file: "
                                       "(7FE0,0010) PixelData needs 384 bytes")


def test_series_with_a_missing_slice_is_refused(series):
    sorted(series.glob("*.dcm"))[3].unlink()
    with pytest.raises(ImageReadError) as error:
        load_volume(series)
    assert _one_line(error).startswith(f"{series}: the slices do not lie on a regular grid: slice ")
    assert "(a missing slice, uneven gaps or a tilted gantry); promptseg does not resample DICOM series" in str(error.value)


def test_series_with_repeated_positions_or_mixed_orientations_is_refused(series, tmp_path):
    files = sorted(series.glob("*.dcm"))
    first = pydicom.dcmread(files[0])
    _set(files[1], ImagePositionPatient=first.ImagePositionPatient)
    with pytest.raises(ImageReadError) as error:
        load_volume(series)
    assert _one_line(error).endswith("slices repeat a position (1 duplicate; several acquisitions in one series?)")
    _set(files[1], ImagePositionPatient=[10, -20, 33], ImageOrientationPatient=[1, 0, 0, 0, 0, -1])
    with pytest.raises(ImageReadError) as error:
        load_volume(series)
    assert _one_line(error).endswith("its slices have different Image Orientation (Patient) (a localizer series?)")


def test_series_with_slices_of_different_sizes_is_refused_before_gdcm(series):
    files = sorted(series.glob("*.dcm"))
    dataset = pydicom.dcmread(files[4])
    dataset.Rows, dataset.PixelData = 6, dataset.PixelData[: 6 * 16 * 2]
    dataset.save_as(files[4])
    with pytest.raises(ImageReadError) as error:
        load_volume(series)
    assert _one_line(error) == (f"cannot read DICOM series {dataset.SeriesInstanceUID} in {series}: "
                                f"{files[4].name} is 16 x 6 pixels (1 samples) but {files[0].name} is 16 x 12 (1)")


# -- RTSTRUCT -------------------------------------------------------------------------------
def test_truncated_or_mangled_rtstruct_is_a_dicom_error(tmp_path):
    data = RTSS.read_bytes()
    ct = load_volume(CT_SLICE)
    truncated = _copy(tmp_path, RTSS, data[: len(data) // 2], "half.dcm")
    with pytest.raises(DicomError) as error:
        read_rtstruct(truncated, ct)
    _one_line(error)
    at = _element(data, 0x3006, 0x0050) + 4  # the first Contour Data's length (implicit VR)
    mangled = _copy(tmp_path, RTSS, data[:at] + struct.pack("<I", 0xFFFFFFF0) + data[at + 4:], "long.dcm")
    with pytest.raises(DicomError) as error:
        list_rois(mangled)
    assert _one_line(error).startswith(f"{mangled}: malformed DICOM header: (3006,0050) ContourData holds bytes")
    text = data.replace(b"CLOSED_PLANAR", b"CLOSED\x00\x0aPLANA", 1)
    with pytest.raises(DicomError) as error:
        read_rtstruct(_copy(tmp_path, RTSS, text, "text.dcm"), ct)
    assert "(3006,0042) ContourGeometricType holds bytes that are not text ('CLOSED" in _one_line(error)


def test_a_sequence_written_with_another_vr_is_a_dicom_error(tmp_path):
    """Found by the rtstruct fuzz target: Contour Sequence's VR changed to OB made its items bytes, and the reader
    raised AttributeError ('int' object has no attribute 'get')."""
    ct = load_volume(CT_SLICE)
    dataset = pydicom.dcmread(RTSS)
    dataset.ROIContourSequence[0]["ContourSequence"] = pydicom.DataElement(0x30060040, "OB", b"\x01\x02\x03\x04")
    dataset.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian  # so that the VR is written
    path = tmp_path / "ob.dcm"
    dataset.save_as(path)
    for read in (lambda: read_rtstruct(path, ct), lambda: list_rois(path)):
        with pytest.raises(DicomError) as error:
            read()
        assert _one_line(error) == f"{path}: malformed DICOM header: (3006,0040) ContourSequence is not a sequence (VR 'OB')"


def test_a_rescale_slope_without_intercept_is_refused(series, tmp_path):
    """Found by the node fuzz target: GDCM rescaled such a slice with intercept 0, pydicom not at all -- the readers
    disagreed by 54,000 on every voxel."""
    files = sorted(series.iterdir())
    _set(files[2], RescaleSlope="0.5")
    with pytest.raises(ImageReadError) as error:
        load_volume(series)
    assert _one_line(error) == (f"{files[2]}: malformed DICOM image: RescaleSlope without RescaleIntercept "
                                "(the Modality LUT needs both)")
    dataset = pydicom.dcmread(CT_SMALL)
    del dataset.RescaleSlope
    path = tmp_path / "intercept.dcm"
    dataset.save_as(path)
    with pytest.raises(ImageReadError) as error:
        load_volume(path)
    assert _one_line(error).endswith("RescaleIntercept without RescaleSlope (the Modality LUT needs both)")
