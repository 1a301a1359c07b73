"""Tests of promptseg.io: readers, writers, atomic output, DICOM, NPZ, rasters, real scans."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from promptseg.errors import GeometryError, ImageReadError, ImageWriteError
from promptseg.io import (
    SUPPORTED_IMAGE_SUFFIXES,
    atomic_path,
    list_dicom_series,
    load_labels,
    load_volume,
    save_mask,
    save_volume,
)
from promptseg.volume import Volume

from datafiles import CT_SLICE, image, label

BRAIN2, BRAIN2_LABEL = image("brain2"), label("brain2")
LUNG1, LUNG1_LABEL = image("lung1"), label("lung1")

SITK_FORMATS = [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"]
SPACING = (0.7, 0.9, 3.0)
ORIGIN = (-12.5, 30.25, 7.0)


def rotated_flipped_direction() -> np.ndarray:
    """Rotation about z by 30 degrees composed with a flip of the y axis (det = -1)."""
    angle = np.deg2rad(30.0)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]]
    )
    return rotation @ np.diag([1.0, -1.0, 1.0])


@pytest.fixture
def volume() -> Volume:
    rng = np.random.default_rng(7)
    array = rng.integers(-1024, 3000, size=(4, 5, 6)).astype(np.int16)
    return Volume(array, SPACING, ORIGIN, rotated_flipped_direction(), metadata={"source": "synthetic"})


def assert_same_geometry(actual: Volume, expected: Volume, atol: float = 1e-5) -> None:
    np.testing.assert_allclose(actual.spacing, expected.spacing, rtol=0, atol=atol)
    np.testing.assert_allclose(actual.origin, expected.origin, rtol=0, atol=atol)
    np.testing.assert_allclose(actual.direction, expected.direction, rtol=0, atol=atol)


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------- round trips (SimpleITK)
@pytest.mark.parametrize("suffix", SITK_FORMATS)
def test_volume_round_trip_keeps_array_and_geometry(tmp_path, volume, suffix):
    path = save_volume(volume, tmp_path / f"scan{suffix}")
    loaded = load_volume(path)
    assert loaded.array.dtype == np.int16
    np.testing.assert_array_equal(loaded.array, volume.array)
    assert_same_geometry(loaded, volume)
    assert np.linalg.det(loaded.direction) == pytest.approx(-1.0, abs=1e-5)
    assert loaded.metadata["source"] == str(path)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nii.gz"])
def test_float_volume_round_trip(tmp_path, volume, suffix):
    floats = volume.with_array(volume.array.astype(np.float32) / 7.0)
    loaded = load_volume(save_volume(floats, tmp_path / f"f{suffix}"))
    assert loaded.array.dtype == np.float32
    np.testing.assert_array_equal(loaded.array, floats.array)


def test_mhd_writes_header_and_data_file_only(tmp_path, volume):
    save_volume(volume, tmp_path / "out" / "scan.mhd")
    assert files_in(tmp_path / "out") == ["scan.mhd", "scan.zraw"]
    header = (tmp_path / "out" / "scan.mhd").read_text()
    assert "ElementDataFile = scan.zraw" in header


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_mask_round_trip_on_reference_grid(tmp_path, volume, suffix):
    labels = np.zeros(volume.shape, dtype=np.int64)
    labels[1:3, 2:4, 1:5] = 1
    labels[3, 0, 0] = 7
    path = save_mask(labels, tmp_path / f"mask{suffix}", reference=volume)
    loaded = load_labels(path, reference=volume)
    assert loaded.array.dtype == np.uint8
    np.testing.assert_array_equal(loaded.array, labels)
    # the result carries the reference geometry exactly
    assert loaded.spacing == volume.spacing and loaded.origin == volume.origin
    np.testing.assert_array_equal(loaded.direction, volume.direction)
    # and the file itself stores it (read without a reference)
    assert_same_geometry(load_labels(path), volume)


def test_mask_above_255_is_uint16(tmp_path, volume):
    labels = np.zeros(volume.shape, dtype=np.int32)
    labels[0, 0, :3] = [1, 256, 65535]
    path = save_mask(labels, tmp_path / "mask.nrrd", reference=volume)
    assert sitk.ReadImage(str(path)).GetPixelID() == sitk.sitkUInt16
    loaded = load_labels(path, reference=volume)
    assert loaded.array.dtype == np.uint16
    np.testing.assert_array_equal(loaded.array, labels)


def test_boolean_and_integral_float_masks_are_written_as_uint8(tmp_path, volume):
    mask = volume.array > 0
    path = save_mask(mask, tmp_path / "bool.nii.gz", reference=volume)
    np.testing.assert_array_equal(load_labels(path).array, mask.astype(np.uint8))
    path = save_mask(mask.astype(np.float32) * 2, tmp_path / "float.mha", reference=volume)
    loaded = load_labels(path)
    assert loaded.array.dtype == np.uint8
    np.testing.assert_array_equal(loaded.array, mask.astype(np.uint8) * 2)


# ---------------------------------------------------------------- geometry checks
def test_save_mask_shape_mismatch(tmp_path, volume):
    with pytest.raises(
        GeometryError,
        match=r"mask shape \(4, 5, 5\) does not match the reference image shape \(4, 5, 6\)",
    ):
        save_mask(np.zeros((4, 5, 5), np.uint8), tmp_path / "m.nii.gz", reference=volume)
    assert not (tmp_path / "m.nii.gz").exists()


def test_save_mask_volume_on_other_grid(tmp_path, volume):
    other = Volume(np.zeros(volume.shape, np.uint8), (0.7, 0.9, 2.5), ORIGIN, volume.direction)
    with pytest.raises(GeometryError, match=r"spacing \(x, y, z\) mm \(0.7, 0.9, 2.5\) vs \(0.7, 0.9, 3.0\)"):
        save_mask(other, tmp_path / "m.nii.gz", reference=volume)


def test_save_mask_rejects_bad_label_values(tmp_path, volume):
    fractional = np.zeros(volume.shape, np.float32)
    fractional[0, 0, 0] = 0.5
    with pytest.raises(ImageWriteError, match="a label map must hold integers"):
        save_mask(fractional, tmp_path / "m.nii.gz", reference=volume)
    negative = np.zeros(volume.shape, np.int16)
    negative[0, 0, 0] = -2
    with pytest.raises(ImageWriteError, match="label values must be >= 0, found -2"):
        save_mask(negative, tmp_path / "m.nii.gz", reference=volume)
    huge = np.zeros(volume.shape, np.int32)
    huge[0, 0, 0] = 70000
    with pytest.raises(ImageWriteError, match="label value 70000 exceeds 65535"):
        save_mask(huge, tmp_path / "m.nii.gz", reference=volume)
    assert files_in(tmp_path) == []


@pytest.mark.parametrize(
    "change, message",
    [
        ({"spacing": (0.7, 0.9, 2.5)}, r"spacing \(x, y, z\) mm \(0.7, 0.9, 2.5\) vs \(0.7, 0.9, 3.0\)"),
        ({"origin": (-12.5, 30.25, 9.0)}, r"origin \(x, y, z\) mm \(-12.5, 30.25, 9.0\) vs \(-12.5, 30.25, 7.0\)"),
        ({"direction": np.eye(3)}, r"direction \[\[1.0, 0.0, 0.0\]"),
    ],
)
def test_load_labels_refuses_other_grid(tmp_path, volume, change, message):
    kwargs = {"spacing": volume.spacing, "origin": volume.origin, "direction": volume.direction}
    kwargs.update(change)
    other = Volume(np.zeros(volume.shape, np.uint8), **kwargs)
    path = save_mask(other.array, tmp_path / "m.nii.gz", reference=other)
    with pytest.raises(GeometryError, match="does not fit the reference image grid: " + message):
        load_labels(path, reference=volume)


def test_load_labels_shape_mismatch(tmp_path, volume):
    small = Volume(np.zeros((4, 5, 5), np.uint8), SPACING, ORIGIN, volume.direction)
    path = save_mask(small.array, tmp_path / "m.nrrd", reference=small)
    with pytest.raises(GeometryError, match=r"shape \(z, y, x\) \(4, 5, 5\) vs \(4, 5, 6\)"):
        load_labels(path, reference=volume)


def test_load_labels_rejects_non_integer_values(tmp_path, volume):
    save_volume(volume.with_array(volume.array / 3.0), tmp_path / "soft.nrrd")
    with pytest.raises(ImageReadError, match=r"must hold integers; \d+ voxels have non-integer values"):
        load_labels(tmp_path / "soft.nrrd")


def test_load_labels_rejects_negative_values(tmp_path, volume):
    save_volume(volume, tmp_path / "signed.nrrd")
    with pytest.raises(ImageReadError, match="label values must be >= 0, found -"):
        load_labels(tmp_path / "signed.nrrd")


# ---------------------------------------------------------------- NPZ (MedSAM layout)
def test_medsam_3d_npz_reads_spacing_in_xyz_order(tmp_path):
    imgs = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    gts = (imgs % 3).astype(np.uint8)
    # as MedSAM's pre_CT_MR.py writes it: spacing=img_sitk.GetSpacing() -> (x, y, z)
    np.savez_compressed(tmp_path / "case.npz", imgs=imgs, gts=gts, spacing=(0.8, 0.9, 5.0))
    image = load_volume(tmp_path / "case.npz")
    assert image.shape == (2, 3, 4)
    assert image.spacing == (0.8, 0.9, 5.0)
    assert image.spacing_zyx == (5.0, 0.9, 0.8)
    np.testing.assert_array_equal(image.array, imgs)
    assert image.metadata["npz_keys"] == ["gts", "imgs", "spacing"]
    labels = load_labels(tmp_path / "case.npz", reference=image)
    np.testing.assert_array_equal(labels.array, gts)


def test_npz_labels_fall_back_to_segs(tmp_path):
    segs = np.array([[0, 1], [2, 0]], dtype=np.uint8)
    np.savez_compressed(tmp_path / "pred.npz", segs=segs)
    labels = load_labels(tmp_path / "pred.npz")
    assert labels.shape == (1, 2, 2)
    np.testing.assert_array_equal(labels.array[0], segs)


def test_npz_labels_checked_against_reference_spacing(tmp_path, volume):
    np.savez_compressed(
        tmp_path / "gt.npz", gts=np.zeros(volume.shape, np.uint8), spacing=(0.7, 0.9, 1.0)
    )
    with pytest.raises(GeometryError, match=r"spacing \(x, y, z\) mm \(0.7, 0.9, 1.0\) vs \(0.7, 0.9, 3.0\)"):
        load_labels(tmp_path / "gt.npz", reference=volume)
    # without stored spacing only the shape can be (and is) checked; geometry comes from the reference
    np.savez_compressed(tmp_path / "pred.npz", segs=np.ones(volume.shape, np.uint8))
    labels = load_labels(tmp_path / "pred.npz", reference=volume)
    assert labels.spacing == volume.spacing
    np.testing.assert_array_equal(labels.direction, volume.direction)


def test_save_mask_npz_uses_segs_and_xyz_spacing(tmp_path, volume):
    labels = (volume.array > 500).astype(np.uint8)
    path = save_mask(labels, tmp_path / "pred.npz", reference=volume)
    with np.load(path) as archive:
        assert sorted(archive.files) == ["segs", "spacing"]
        np.testing.assert_array_equal(archive["segs"], labels)
        np.testing.assert_array_equal(archive["spacing"], SPACING)
    np.testing.assert_array_equal(load_labels(path, reference=volume).array, labels)


def test_save_volume_npz_round_trip(tmp_path, volume):
    path = save_volume(volume, tmp_path / "img.npz")
    loaded = load_volume(path)
    np.testing.assert_array_equal(loaded.array, volume.array)
    assert loaded.spacing == SPACING


def test_npz_2d_rgb_grayscale_and_spacing(tmp_path):
    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[1, 2] = (10, 20, 30)
    np.savez_compressed(tmp_path / "rgb.npz", imgs=rgb)
    loaded = load_volume(tmp_path / "rgb.npz")
    assert loaded.array.shape == (1, 3, 4, 3)
    np.testing.assert_array_equal(loaded.array[0], rgb)
    assert loaded.spacing == (1.0, 1.0, 1.0)

    gray = np.stack([rgb[..., 0]] * 3, axis=-1)
    np.savez_compressed(tmp_path / "gray3.npz", imgs=gray, spacing=(0.5, 0.25))
    loaded = load_volume(tmp_path / "gray3.npz")
    assert loaded.array.shape == (1, 3, 4)
    np.testing.assert_array_equal(loaded.array[0], rgb[..., 0])
    assert loaded.spacing == (0.5, 0.25, 1.0)

    np.savez_compressed(tmp_path / "plain.npz", imgs=rgb[..., 0])
    assert load_volume(tmp_path / "plain.npz").array.shape == (1, 3, 4)


def test_npz_single_slice_written_2d_like_medsam(tmp_path):
    reference = Volume(np.zeros((1, 3, 4), np.uint8), (0.5, 0.5, 1.0))
    save_mask(np.ones((3, 4), np.uint8), tmp_path / "s.npz", reference=reference)
    with np.load(tmp_path / "s.npz") as archive:
        assert archive["segs"].shape == (3, 4)


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"gts": np.zeros((2, 2), np.uint8), "spacing": np.ones(3)}, r"no 'imgs' array in this NPZ \(keys: gts, spacing\)"),
        ({"imgs": np.zeros((2, 3, 4, 5), np.uint8)}, r"key 'imgs' has shape \(2, 3, 4, 5\) \(4D\); expected \(H, W\), \(H, W, 3\) or \(D, H, W\)"),
        ({"imgs": np.zeros((5, 6, 4), np.uint8)}, r"key 'imgs' has shape \(5, 6, 4\), which looks like an RGBA image"),
        ({"imgs": np.zeros((0, 4, 4), np.uint8)}, r"\(key 'imgs'\): the image is empty \(array shape \(0, 4, 4\)\)"),
        ({"imgs": np.zeros((2, 2), np.uint8), "spacing": np.array([1.0, -1.0, 1.0])}, r"key 'spacing' must hold 2 or 3 spacings \(x, y\[, z\]\) in mm: spacing \(1, -1, 1\) mm is outside the accepted range"),
    ],
)
def test_bad_npz(tmp_path, arrays, message):
    np.savez_compressed(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ImageReadError, match=message):
        load_volume(tmp_path / "bad.npz")


def test_npz_with_nan(tmp_path):
    imgs = np.zeros((2, 3, 4), np.float32)
    imgs[0, 0, :3] = [np.nan, np.inf, -np.inf]
    np.savez_compressed(tmp_path / "nan.npz", imgs=imgs)
    with pytest.raises(ImageReadError, match="3 of 24 voxels are not finite"):
        load_volume(tmp_path / "nan.npz")


# ---------------------------------------------------------------- rasters
def test_png_mask_round_trip_uint8_and_uint16(tmp_path):
    reference = Volume(np.zeros((1, 6, 7), np.int16), (0.5, 0.5, 1.0))
    labels = np.zeros((6, 7), np.int64)
    labels[1:4, 2:5] = 3
    path = save_mask(labels, tmp_path / "m8.png", reference=reference)
    assert Image.open(path).mode == "L"
    loaded = load_labels(path, reference=reference)
    np.testing.assert_array_equal(loaded.array[0], labels)
    assert loaded.spacing == (0.5, 0.5, 1.0)

    labels[0, 0] = 300
    path = save_mask(labels, tmp_path / "m16.png", reference=reference)
    assert Image.open(path).mode == "I;16"
    loaded = load_labels(path, reference=reference)
    assert loaded.array.dtype == np.uint16
    np.testing.assert_array_equal(loaded.array[0], labels)


def test_png_needs_a_single_slice(tmp_path, volume):
    with pytest.raises(ImageWriteError, match="PNG holds one 2D slice, this volume has 4 slices"):
        save_mask(np.zeros(volume.shape, np.uint8), tmp_path / "m.png", reference=volume)
    assert files_in(tmp_path) == []


def test_png_rgb_round_trip_and_gray_detection(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, size=(1, 5, 6, 3)).astype(np.uint8)
    loaded = load_volume(save_volume(Volume(rgb), tmp_path / "rgb.png"))
    np.testing.assert_array_equal(loaded.array, rgb)

    Image.fromarray(np.repeat(rgb[0, ..., :1], 3, axis=-1)).save(tmp_path / "gray_rgb.png")
    gray = load_volume(tmp_path / "gray_rgb.png")
    assert gray.array.shape == (1, 5, 6)
    np.testing.assert_array_equal(gray.array[0], rgb[0, ..., 0])

    rgba = np.concatenate([rgb[0], np.full((5, 6, 1), 128, np.uint8)], axis=-1)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(load_volume(tmp_path / "rgba.png").array[0], rgb[0])


def test_uint16_png_keeps_dtype(tmp_path):
    data = np.array([[0, 1000], [4095, 65535]], dtype=np.uint16)
    Image.fromarray(data).save(tmp_path / "u16.png")
    loaded = load_volume(tmp_path / "u16.png")
    assert loaded.array.dtype == np.uint16
    np.testing.assert_array_equal(loaded.array[0], data)
    assert loaded.spacing == (1.0, 1.0, 1.0) and loaded.modality is None


def test_palette_png_labels_are_indices(tmp_path):
    indices = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    image.save(tmp_path / "pal.png")
    np.testing.assert_array_equal(load_labels(tmp_path / "pal.png").array[0], indices)
    # as an image the palette gives colours
    colours = load_volume(tmp_path / "pal.png").array
    assert colours.shape == (1, 2, 3, 3)
    assert tuple(colours[0, 0, 1]) == (255, 0, 0)


def test_multipage_tiff_becomes_slices(tmp_path):
    pages = [Image.fromarray(np.full((3, 4), value, np.uint8)) for value in (10, 20)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    loaded = load_volume(tmp_path / "stack.tif")
    assert loaded.shape == (2, 3, 4)
    assert loaded.array[:, 0, 0].tolist() == [10, 20]


# ---------------------------------------------------------------- DICOM
def write_dicom_series(folder: Path, uid: str, hu: np.ndarray, spacing, origin, modality="CT",
                       description="synthetic") -> None:
    """Write ``hu`` (z, y, x int16) as a DICOM series with rescale intercept -1024 via SimpleITK."""
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(hu.shape[0]):
        position = image.TransformIndexToPhysicalPoint((0, 0, z))
        tags = {
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
            "0008|0018": f"{uid}.{z + 1}",
            "0008|0060": modality,
            "0008|103e": description,
            "0020|000d": "1.2.826.0.1.3680043.8.498.1",
            "0020|000e": uid,
            "0020|0013": str(z + 1),
            "0020|0032": "\\".join(f"{v:.4f}" for v in position),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0018|0050": str(spacing[2]),
            "0028|1052": "-1024",
            "0028|1053": "1",
        }
        slice_image = image[:, :, z]
        for key, value in tags.items():
            slice_image.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{uid[-3:]}_{z:03d}.dcm"))
        writer.Execute(slice_image)


CT_UID = "1.2.826.0.1.3680043.8.498.101"
MR_UID = "1.2.826.0.1.3680043.8.498.202"


@pytest.fixture
def ct_hu() -> np.ndarray:
    return (np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5) * 25 - 1000).astype(np.int16)


def test_dicom_series_reads_hu_and_geometry(tmp_path, ct_hu):
    write_dicom_series(tmp_path / "ct", CT_UID, ct_hu, (0.7, 0.9, 2.5), (10.0, 20.0, 30.0))
    stored = pydicom.dcmread(sorted((tmp_path / "ct").iterdir())[0])
    assert stored.RescaleIntercept == -1024
    assert stored.pixel_array.min() == -1000 + 1024  # stored values are not HU
    loaded = load_volume(tmp_path / "ct")
    np.testing.assert_array_equal(loaded.array, ct_hu)
    np.testing.assert_allclose(loaded.spacing, (0.7, 0.9, 2.5), atol=1e-5)
    np.testing.assert_allclose(loaded.origin, (10.0, 20.0, 30.0), atol=1e-5)
    np.testing.assert_allclose(loaded.direction, np.eye(3), atol=1e-6)
    assert loaded.modality == "CT"
    assert loaded.metadata["series_uid"] == CT_UID
    assert loaded.metadata["source"] == str(tmp_path / "ct")
    assert loaded.metadata["num_files"] == 3


def test_two_series_need_a_choice(tmp_path, ct_hu):
    folder = tmp_path / "mixed"
    write_dicom_series(folder, CT_UID, ct_hu, (0.7, 0.9, 2.5), (0.0, 0.0, 0.0))
    write_dicom_series(folder, MR_UID, ct_hu[:2] + 1100, (1.0, 1.0, 4.0), (0.0, 0.0, 0.0),
                       modality="MR", description="T1 post")
    series = {s["uid"]: s for s in list_dicom_series(folder)}
    assert set(series) == {CT_UID, MR_UID}
    assert len(series[CT_UID]["files"]) == 3 and series[CT_UID]["modality"] == "CT"
    assert series[MR_UID]["description"] == "T1 post" and len(series[MR_UID]["files"]) == 2

    with pytest.raises(ImageReadError, match=r"holds 2 DICOM series; choose one with --series UID") as info:
        load_volume(folder)
    message = str(info.value)
    assert f"{CT_UID} (3 files, CT, synthetic)" in message
    assert f"{MR_UID} (2 files, MR, T1 post)" in message
    assert "series_uid=" in message and "\n" not in message

    mr = load_volume(folder, series_uid=MR_UID)
    assert mr.shape == (2, 4, 5) and mr.modality == "MR"
    np.testing.assert_array_equal(mr.array, ct_hu[:2] + 1100)
    ct = load_volume(folder, series_uid=CT_UID)
    np.testing.assert_array_equal(ct.array, ct_hu)

    with pytest.raises(ImageReadError, match=r"no DICOM series with UID 1\.2\.3; available: .*" + MR_UID):
        load_volume(folder, series_uid="1.2.3")


def test_folder_without_dicom(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageReadError, match="no DICOM image series found in this folder"):
        load_volume(tmp_path / "empty")


def test_single_dicom_ct_small_in_hu():
    path = get_testdata_file("CT_small.dcm")
    loaded = load_volume(path)
    assert loaded.shape == (1, 128, 128)
    assert loaded.modality == "CT"
    dataset = pydicom.dcmread(path)
    expected = dataset.pixel_array.astype(np.int32) * int(dataset.RescaleSlope) + int(dataset.RescaleIntercept)
    np.testing.assert_array_equal(loaded.array[0], expected)
    assert (int(loaded.array.min()), int(loaded.array.max())) == (-896, 1167)
    np.testing.assert_allclose(loaded.spacing[:2], (0.661468, 0.661468), atol=1e-6)
    assert loaded.metadata["series_uid"] == dataset.SeriesInstanceUID


def test_real_ct_slice_any_extension(tmp_path):
    loaded = load_volume(CT_SLICE)
    assert loaded.shape == (1, 512, 512) and loaded.modality == "CT"
    assert int(loaded.array.min()) == -1000
    np.testing.assert_allclose(loaded.spacing[:2], (1.074219, 1.074219), atol=1e-6)
    renamed = tmp_path / "slice.bin"
    renamed.write_bytes(CT_SLICE.read_bytes())
    np.testing.assert_array_equal(load_volume(renamed).array, loaded.array)


def test_single_dicom_file_with_other_series_uid():
    with pytest.raises(ImageReadError, match=r"ct.0.dcm belongs to series 2\.16\.840\.1\.113662\.2\.12\.0\.3057\.1241703565\.43, not 1\.2\.3$"):
        load_volume(CT_SLICE, series_uid="1.2.3")


def rtstruct_file(path: Path) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.9"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "RTSTRUCT"
    dataset.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.10"
    dataset.StructureSetLabel = "GTV"
    try:
        dataset.save_as(path, enforce_file_format=True)
    except TypeError:  # pydicom < 3
        dataset.save_as(path, write_like_original=False)
    return path


def test_dicom_without_pixel_data(tmp_path):
    path = rtstruct_file(tmp_path / "rtss.dcm")
    with pytest.raises(
        ImageReadError,
        match=r"rtss.dcm holds no image: it is a DICOM RTSTRUCT object \(RT Structure Set Storage\) without Pixel Data",
    ):
        load_volume(path)


# ---------------------------------------------------------------- real scans
def test_brain2_geometry():
    brain = load_volume(BRAIN2)
    assert brain.shape == (23, 256, 256)
    np.testing.assert_allclose(brain.spacing, (0.78125, 0.78125, 6.5), atol=1e-6)
    np.testing.assert_allclose(brain.direction, np.diag([1.0, -1.0, 1.0]), atol=1e-9)
    labels = load_labels(BRAIN2_LABEL, reference=brain)
    assert labels.array.dtype == np.uint8 and set(np.unique(labels.array)) == {0, 1}


def test_lung1_values_and_label_grid():
    lung = load_volume(LUNG1)
    assert lung.shape == (48, 512, 512)
    assert lung.array.dtype == np.int16
    assert (int(lung.array.min()), int(lung.array.max())) == (-1024, 3071)
    np.testing.assert_allclose(lung.spacing, (0.5703125, 0.5703125, 5.0))
    labels = load_labels(LUNG1_LABEL, reference=lung)
    assert int(labels.array.sum()) == 837
    with pytest.raises(GeometryError, match=r"shape \(z, y, x\) \(48, 512, 512\) vs \(23, 256, 256\)"):
        load_labels(LUNG1_LABEL, reference=load_volume(BRAIN2))


# ---------------------------------------------------------------- bad input files
def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="^no such file: .*nothing.nii.gz$"):
        load_volume(tmp_path / "nothing.nii.gz")


def test_unknown_extension(tmp_path):
    (tmp_path / "scan.xyz").write_bytes(b"not an image at all" * 20)
    with pytest.raises(ImageReadError, match=r"unknown image format '\.xyz'; supported: \.nii, \.nii\.gz"):
        load_volume(tmp_path / "scan.xyz")
    assert ".nii.gz" in SUPPORTED_IMAGE_SUFFIXES and ".npz" in SUPPORTED_IMAGE_SUFFIXES


def test_empty_file(tmp_path):
    (tmp_path / "zero.nrrd").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"cannot read .*zero.nrrd: the file is empty \(0 bytes\)"):
        load_volume(tmp_path / "zero.nrrd")


@pytest.mark.parametrize(
    "suffix, reason",
    [
        # ITK's NIfTI reader pads a short file with zeros without complaint: promptseg checks every format
        (".nii.gz", r"truncated or corrupt compressed data \(Compressed file ended before the end-of-stream marker was reached\)"),
        (".nii", r"the file is truncated \(\d+ of 163840 bytes of voxel data present\)"),
        (".nrrd", r"the file is truncated \(\d+ of 163840 bytes of voxel data present\)"),
        (".mha", r"the file is truncated \(\d+ of 163840 bytes of voxel data present\)"),
    ],
)
def test_truncated_files(tmp_path, suffix, reason):
    big = Volume(np.random.default_rng(3).integers(0, 4000, (20, 64, 64)).astype(np.int16))
    path = save_volume(big, tmp_path / f"full{suffix}")
    if suffix in (".nrrd", ".mha"):  # uncompressed, so that cutting the file leaves a valid header
        image = sitk.GetImageFromArray(big.array)
        sitk.WriteImage(image, str(path), useCompression=False)
    data = path.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=f"^cannot read .*cut{re.escape(suffix)}: {reason}") as info:
        load_volume(cut)
    assert "\n" not in str(info.value)
    np.testing.assert_array_equal(load_volume(path).array, big.array)  # the intact file still reads


def test_text_file_named_nii(tmp_path):
    (tmp_path / "notes.nii").write_text("this is not an image\n" * 30)
    with pytest.raises(
        ImageReadError,
        match=r"^cannot read .*notes.nii: not a NIfTI file \(the header does not start with sizeof_hdr 348 or 540",
    ):
        load_volume(tmp_path / "notes.nii")


def test_garbage_nrrd(tmp_path):
    (tmp_path / "bad.nrrd").write_bytes(b"NRRD0004\ntype: short\ngarbage\x00\x01\x02")
    with pytest.raises(ImageReadError, match=r"^cannot read .*bad.nrrd: invalid NRRD header: line 3 is neither 'field: value' nor a comment$") as info:
        load_volume(tmp_path / "bad.nrrd")
    assert "\n" not in str(info.value) and "[nrrd]" not in str(info.value)


def test_corrupt_png(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(ImageReadError, match=r"^cannot read .*bad.png: "):
        load_volume(tmp_path / "bad.png")


def test_nan_volume(tmp_path):
    array = np.zeros((3, 4, 5), np.float32)
    array[0, 0, 0] = np.nan
    array[2, 3, 4] = np.inf
    save_volume(Volume(array), tmp_path / "nan.nrrd")
    with pytest.raises(ImageReadError, match=r"nan.nrrd: 2 of 60 voxels are not finite \(NaN or inf\)"):
        load_volume(tmp_path / "nan.nrrd")


def test_4d_image_rejected(tmp_path):
    sitk.WriteImage(sitk.Image([4, 3, 2, 5], sitk.sitkInt16), str(tmp_path / "series.nii.gz"))
    with pytest.raises(ImageReadError, match=r"a 4D image \(size \(4, 3, 2, 5\)\) is not supported"):
        load_volume(tmp_path / "series.nii.gz")


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha", ".npz", ".png"])
def test_rgb_single_slice_round_trip(tmp_path, suffix):
    rgb = np.random.default_rng(4).integers(0, 256, (1, 5, 6, 3)).astype(np.uint8)
    loaded = load_volume(save_volume(Volume(rgb, (0.5, 0.5, 1.0)), tmp_path / f"rgb{suffix}"))
    assert loaded.is_rgb
    np.testing.assert_array_equal(loaded.array, rgb)


def test_vector_volume_rejected_but_2d_rgb_accepted(tmp_path):
    vector = sitk.GetImageFromArray(np.zeros((2, 3, 4, 3), np.uint8), isVector=True)
    sitk.WriteImage(vector, str(tmp_path / "rgb3d.nrrd"))
    with pytest.raises(ImageReadError, match="a vector image with 3 components per voxel"):
        load_volume(tmp_path / "rgb3d.nrrd")
    rgb = np.random.default_rng(2).integers(0, 256, (3, 4, 3)).astype(np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(tmp_path / "rgb2d.mha"))
    loaded = load_volume(tmp_path / "rgb2d.mha")
    np.testing.assert_array_equal(loaded.array, rgb[np.newaxis])


def test_series_uid_only_for_dicom(tmp_path, volume):
    path = save_volume(volume, tmp_path / "v.nrrd")
    with pytest.raises(ImageReadError, match="a series UID only applies to DICOM input"):
        load_volume(path, series_uid="1.2.3")


# ---------------------------------------------------------------- atomic writes
def test_atomic_path_temp_name_and_success(tmp_path):
    destination = tmp_path / "new" / "mask.nii.gz"
    with atomic_path(destination) as temporary:
        assert temporary.parent == destination.parent
        assert temporary.name.startswith(".mask.tmp-") and temporary.name.endswith(".nii.gz")
        temporary.write_bytes(b"complete")
        assert not destination.exists()
    assert destination.read_bytes() == b"complete"
    assert files_in(destination.parent) == ["mask.nii.gz"]


def test_atomic_path_failure_keeps_old_file(tmp_path):
    destination = tmp_path / "mask.nrrd"
    destination.write_bytes(b"old good output")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(destination) as temporary:
            temporary.write_bytes(b"partial")
            raise RuntimeError("disk full")
    assert destination.read_bytes() == b"old good output"
    assert files_in(tmp_path) == ["mask.nrrd"]


@pytest.mark.parametrize("suffix", [".nii.gz", ".mhd"])
def test_failing_sitk_write_leaves_nothing_and_keeps_existing(tmp_path, volume, monkeypatch, suffix):
    import promptseg.io.writers as writers

    def broken_write(image, filename, useCompression=False):
        Path(filename).write_bytes(b"half a file")
        raise RuntimeError(
            "Exception thrown in SimpleITK ImageFileWriter_Execute: x.cxx:1:\nitk::ERROR: No space left on device"
        )

    monkeypatch.setattr(writers.sitk, "WriteImage", broken_write)
    with pytest.raises(ImageWriteError, match=r"^cannot write .*fresh.* No space left on device$"):
        save_mask(np.zeros(volume.shape, np.uint8), tmp_path / f"fresh{suffix}", reference=volume)
    assert files_in(tmp_path) == []

    existing = tmp_path / f"existing{suffix}"
    existing.write_bytes(b"previous result")
    with pytest.raises(ImageWriteError):
        save_volume(volume, existing)
    assert existing.read_bytes() == b"previous result"
    assert files_in(tmp_path) == [existing.name]


def test_failing_npz_write_keeps_existing(tmp_path, volume, monkeypatch):
    import promptseg.io.npz as npz

    def broken_savez(handle, **arrays):
        handle.write(b"PK partial")
        raise OSError(28, "No space left on device")

    destination = tmp_path / "pred.npz"
    destination.write_bytes(b"previous result")
    monkeypatch.setattr(npz.np, "savez_compressed", broken_savez)
    with pytest.raises(ImageWriteError, match=r"cannot write .*pred.npz: .*No space left on device"):
        save_mask(np.zeros(volume.shape, np.uint8), destination, reference=volume)
    assert destination.read_bytes() == b"previous result"
    assert files_in(tmp_path) == ["pred.npz"]


def test_output_folder_is_a_file(tmp_path, volume):
    (tmp_path / "blocker").write_text("a file, not a folder")
    with pytest.raises(ImageWriteError, match=r"cannot create folder .*blocker"):
        save_volume(volume, tmp_path / "blocker" / "out.nii.gz")


def test_destination_is_a_directory(tmp_path, volume):
    (tmp_path / "taken.nii.gz").mkdir()
    with pytest.raises(ImageWriteError, match=r"cannot write .*taken.nii.gz: it is a folder"):
        save_volume(volume, tmp_path / "taken.nii.gz")
    assert files_in(tmp_path) == ["taken.nii.gz"]
    assert list((tmp_path / "taken.nii.gz").iterdir()) == []


def test_unknown_output_format(tmp_path, volume):
    with pytest.raises(ImageWriteError, match=r"unknown output format '\.jpg'; supported: \.nii, \.nii\.gz, \.nrrd, \.mha, \.mhd, \.npz, \.png"):
        save_volume(volume, tmp_path / "out.jpg")
    assert files_in(tmp_path) == []


def test_output_directories_are_created(tmp_path, volume):
    path = save_mask(np.zeros(volume.shape, np.uint8), tmp_path / "a" / "b" / "m.nii.gz", reference=volume)
    assert path.is_file()
    assert os.listdir(tmp_path / "a" / "b") == ["m.nii.gz"]


def test_write_json_is_strict_and_keeps_nonfinite_values_as_text_when_asked(tmp_path):
    import json
    import math

    from promptseg.io.jsonfile import json_ready, write_json

    value = {"dice": np.float32(0.5), "hd95": math.inf, "nsd": math.nan, "shape": (2, np.int64(3)),
             "path": Path("a") / "b.nii.gz", 1: np.arange(2)}
    path = write_json(tmp_path / "out" / "v.json", value)
    text = path.read_text(encoding="utf-8")
    assert "Infinity" not in text and "NaN" not in text and text.endswith("\n")
    assert json.loads(text) == {"dice": 0.5, "hd95": None, "nsd": None, "shape": [2, 3],
                                "path": str(Path("a") / "b.nii.gz"), "1": [0, 1]}
    kept = json_ready({"hd95": [math.inf, -math.inf, math.nan]}, nonfinite_as_text=True)
    assert kept == {"hd95": ["inf", "-inf", "nan"]}
    assert [float(v) for v in kept["hd95"][:2]] == [math.inf, -math.inf]
    with pytest.raises(TypeError):
        write_json(tmp_path / "bad.json", {"x": object()})
    assert not (tmp_path / "bad.json").exists() and list(tmp_path.glob("**/.*tmp*")) == []
