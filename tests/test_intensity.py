"""Tests of promptseg.intensity: CT windows, the MR percentile rule, modality resolution."""

from __future__ import annotations


import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from promptseg.errors import ImageReadError, PromptsegError
from promptseg.intensity import (
    WINDOWS,
    describe_intensity,
    guess_modality,
    normalize,
    resolve_modality,
    resolve_window,
)
from promptseg.io import load_volume
from promptseg.volume import Volume

from datafiles import image

BRAIN2, BREAST1, LUNG1 = image("brain2"), image("breast1"), image("lung1")


@pytest.fixture(scope="module")
def lung1() -> Volume:
    return load_volume(LUNG1)


@pytest.fixture(scope="module")
def brain2() -> Volume:
    return load_volume(BRAIN2)


def row(values, dtype=np.int16, modality=None) -> Volume:
    """A (1, 1, n) volume holding ``values``."""
    return Volume(np.array(values, dtype=dtype).reshape(1, 1, -1), modality=modality)


def medsam_reference(array: np.ndarray, modality: str, level=40, width=400) -> np.ndarray:
    """MedSAM's pre_CT_MR.py rule, re-stated with numpy (min/max of the clipped data)."""
    if modality == "CT":
        clipped = np.clip(array, level - width / 2, level + width / 2)
        scaled = (clipped - clipped.min()) / (clipped.max() - clipped.min()) * 255.0
    else:
        low, high = np.percentile(array[array > 0], 0.5), np.percentile(array[array > 0], 99.5)
        clipped = np.clip(array, low, high)
        scaled = (clipped - clipped.min()) / (clipped.max() - clipped.min()) * 255.0
        scaled[array == 0] = 0
    return np.uint8(scaled)


# ---------------------------------------------------------------- CT windows
def test_ct_default_soft_tissue_window_exact_values():
    volume = row([-1000, -160, -159, 0, 40, 239, 240, 3000], modality="CT")
    out = normalize(volume)
    assert out.dtype == np.uint8 and out.shape == volume.array.shape
    # (v + 160) / 400 * 255, truncated
    assert out.ravel().tolist() == [0, 0, 0, 102, 127, 254, 255, 255]


@pytest.mark.parametrize(
    "preset, values, expected",
    [
        ("lung", [-1350, -600, 0, 150, 500], [0, 127, 229, 255, 255]),
        ("brain", [0, 20, 40, 80, 100], [0, 63, 127, 255, 255]),
        ("bone", [-500, 400, 1000, 1300], [0, 127, 212, 255]),
        ("soft-tissue", [-160, 40, 240], [0, 127, 255]),
    ],
)
def test_window_presets(preset, values, expected):
    assert normalize(row(values, modality="CT"), window=preset).ravel().tolist() == expected


def test_explicit_window_overrides_mr_and_uint8():
    mr = row([0, 20, 40, 80], modality="MR")
    assert normalize(mr, window=(40, 80)).ravel().tolist() == [0, 63, 127, 255]
    assert normalize(mr, window="40,80").ravel().tolist() == [0, 63, 127, 255]
    eight_bit = row([0, 40, 60, 255], dtype=np.uint8)
    assert normalize(eight_bit, window="brain").ravel().tolist() == [0, 127, 191, 255]


def test_explicit_modality_ct_on_unlabelled_data():
    volume = row([-160, 40, 240, 500])
    assert guess_modality(volume) == "mr"
    assert normalize(volume, modality="CT").ravel().tolist() == [0, 127, 255, 255]


# ---------------------------------------------------------------- windows: parsing
def test_resolve_window_forms():
    assert resolve_window(None) is None
    assert resolve_window("lung") == (-600.0, 1500.0)
    assert resolve_window(" Soft_Tissue ") == (40.0, 400.0)
    assert resolve_window("-600, 1500") == (-600.0, 1500.0)
    assert resolve_window((50, 350)) == (50.0, 350.0)
    assert WINDOWS == {"soft-tissue": (40, 400), "lung": (-600, 1500), "brain": (40, 80), "bone": (400, 1800)}


@pytest.mark.parametrize(
    "spec, message",
    [
        ("40,0", r"window width must be > 0, got 0"),
        ((40, -10), r"window width must be > 0, got -10"),
        ("liver", r"unknown window 'liver': use a preset \(soft-tissue, lung, brain, bone\) or 'level,width'"),
        ("40,400,3", r"unknown window '40,400,3'"),
        ((1, 2, 3), r"a window must be \(level, width\), got 3 values"),
        ("nan,400", r"window level and width must be finite"),
    ],
)
def test_resolve_window_errors(spec, message):
    with pytest.raises(PromptsegError, match=message):
        resolve_window(spec)


# ---------------------------------------------------------------- MR / other: percentiles
def test_percentile_rule_on_known_percentiles():
    # 201 positive values 10, 20, ..., 2010: the 0.5th and 99.5th percentiles fall exactly
    # on the 2nd and 200th values (index 0.005 * 200 = 1 and 0.995 * 200 = 199): 20 and 2000.
    positive = np.arange(1, 202, dtype=np.int32) * 10
    array = np.concatenate([positive, np.zeros(50, np.int32), np.full(9, -5, np.int32)])
    volume = Volume(array.reshape(1, 10, 26), modality="MR")
    out = normalize(volume).ravel()
    expected = np.uint8((np.clip(array, 20, 2000) - 20) / 1980 * 255.0)
    expected[array <= 0] = 0
    np.testing.assert_array_equal(out, expected)
    lookup = dict(zip(array.tolist(), out.tolist()))
    assert [lookup[v] for v in (10, 20, 1010, 2000, 2010, 0, -5)] == [0, 0, 127, 255, 255, 0, 0]


def test_zeros_and_negatives_stay_zero_on_float_mr():
    rng = np.random.default_rng(5)
    array = rng.normal(300, 100, size=(3, 20, 20)).astype(np.float32)
    array[:, :5] = 0
    array[:, 5:7] = -20
    out = normalize(Volume(array, modality="MR"))
    assert np.all(out[array <= 0] == 0)
    assert out.max() == 255


def test_percentile_rule_without_positive_voxels():
    with pytest.raises(ImageReadError, match=r"the image has no voxel > 0, so the MR/percentile normalisation is undefined"):
        normalize(row([0, -3, -7], modality="MR"))


def test_constant_positive_image_gives_zeros():
    out = normalize(row([0, 5, 5, 5], modality="MR"))
    assert out.ravel().tolist() == [0, 0, 0, 0]


def test_other_modality_uses_percentile_rule():
    positive = np.arange(1, 202, dtype=np.int32) * 10
    pet = Volume(positive.reshape(1, 1, -1), modality="PT")
    assert resolve_modality(pet) == "other"
    np.testing.assert_array_equal(normalize(pet), normalize(pet, modality="mr"))


def test_uint8_passes_through_unchanged():
    rgb = np.random.default_rng(0).integers(0, 256, (1, 4, 5, 3)).astype(np.uint8)
    volume = Volume(rgb, modality="CT")
    out = normalize(volume)
    np.testing.assert_array_equal(out, rgb)
    assert out is not rgb  # a copy: callers may modify it
    gray = Volume(rgb[..., 0])
    np.testing.assert_array_equal(normalize(gray, modality="mr"), rgb[..., 0])


# ---------------------------------------------------------------- modality resolution
def test_modality_precedence():
    ct_tagged = row([-1000, 0, 50], modality="CT")
    assert resolve_modality(ct_tagged) == "ct"
    assert resolve_modality(ct_tagged, "MR") == "mr"
    assert resolve_modality(ct_tagged, "auto") == "ct"
    assert resolve_modality(row([1, 2, 3]), "Other") == "other"
    with pytest.raises(PromptsegError, match=r"unknown modality 'pet': use one of ct, mr, other \(or auto\)"):
        resolve_modality(ct_tagged, "pet")


def test_guess_modality_on_real_data(lung1, brain2, tmp_path):
    assert lung1.modality is None and guess_modality(lung1) == "ct"
    assert brain2.modality is None and guess_modality(brain2) == "mr"
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8)).save(tmp_path / "photo.png")
    assert guess_modality(load_volume(tmp_path / "photo.png")) == "other"
    assert guess_modality(load_volume(get_testdata_file("MR_small.dcm"))) == "mr"
    assert guess_modality(load_volume(get_testdata_file("CT_small.dcm"))) == "ct"


def test_guess_modality_heuristic_edges():
    # 10 of 1000 voxels: the 0.5th percentile (index 4.995) lies among them
    assert guess_modality(row([-1000] * 10 + [40] * 990)) == "ct"
    assert guess_modality(row([-400] * 10 + [40] * 990)) == "mr"
    assert guess_modality(row([-1000] * 4 + [40] * 996)) == "mr"  # too few air voxels
    assert guess_modality(row(np.arange(1000) + 24, dtype=np.uint16)) == "mr"  # raw unsigned CT
    assert guess_modality(row([1.5, -2000.0, -2000.0], dtype=np.float32)) == "ct"


# ---------------------------------------------------------------- against MedSAM's rule on real scans
@pytest.mark.parametrize("path", [BREAST1, BRAIN2], ids=["breast1", "brain2"])
def test_mr_scans_match_medsam_rule(path):
    volume = load_volume(path)
    assert resolve_modality(volume) == "mr"
    np.testing.assert_array_equal(normalize(volume), medsam_reference(volume.array, "MR"))


def test_ct_scan_matches_medsam_rule(lung1):
    # lung1 reaches both ends of the soft-tissue window (air and bone), so scaling by the
    # window bounds equals MedSAM's scaling by the clipped minimum and maximum
    out = normalize(lung1)
    np.testing.assert_array_equal(out, medsam_reference(lung1.array, "CT"))
    assert out.shape == (48, 512, 512) and out.dtype == np.uint8


# ---------------------------------------------------------------- describe_intensity
def test_describe_intensity(lung1):
    info = describe_intensity(lung1)
    assert info["dtype"] == "int16"
    assert (info["min"], info["max"]) == (-1024.0, 3071.0)
    assert info["mean"] == pytest.approx(float(lung1.array.mean(dtype=np.float64)))
    assert info["p0.5"] == float(np.percentile(lung1.array, 0.5))
    assert info["p99.5"] == float(np.percentile(lung1.array, 99.5))
    assert set(info) == {"dtype", "min", "max", "mean", "p0.5", "p99.5"}


@pytest.mark.parametrize("case", ["lung1", "brain2"])
def test_slices_normalised_on_demand_equal_the_whole_volume(case):
    from promptseg.intensity import NormalizedSlices

    from datafiles import image as case_image

    volume = load_volume(case_image(case))
    whole = normalize(volume)
    lazy = NormalizedSlices.of(volume)
    assert lazy.shape == whole.shape and len(lazy) == whole.shape[0]
    for z in (0, whole.shape[0] // 2, whole.shape[0] - 1):
        assert np.array_equal(lazy[z], whole[z])
    assert np.array_equal(np.asarray(lazy), whole)
