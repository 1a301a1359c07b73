"""Prompt simulation from reference masks: exact boxes, jitter bounds, point placement, seeding."""

import numpy as np
import pytest
from scipy import ndimage

from promptseg.errors import PromptError
from promptseg.evaluation import simulate as S
from promptseg.prompts import box_from_mask, parse_prompt_document, prompt_to_dict

from model_cache import case, middle_slice_box


def blob_volume():
    """(6, 40, 50) label map: label 1 on slices 1-4 (a gap on 2 is filled), label 3 on slice 2 only."""
    labels = np.zeros((6, 40, 50), np.uint8)
    labels[1, 10:20, 5:25] = 1
    labels[2, 8:22, 4:28] = 1
    labels[3, 12:18, 10:30] = 1
    labels[4, 14:16, 12:14] = 1
    labels[2, 30:36, 40:47] = 3
    return labels


def test_box_middle_slice_without_jitter_is_the_tight_box_on_the_real_lung1_reference():
    _, reference = case("lung1")
    z, box = middle_slice_box(reference)
    prompt = S.box_middle_slice(reference, 0, None)
    assert prompt.slices.keys() == {z}
    assert prompt.slices[z].box == box
    assert prompt.z_range is None and prompt.label == 1


def test_middle_slice_is_zmin_plus_zmax_halved_or_the_nearest_object_slice():
    ref = np.zeros((10, 8, 8), bool)
    ref[2, 2:4, 2:4] = ref[7, 2:4, 2:4] = True      # middle (2+7)//2 = 4 is empty
    assert S.middle_slice(ref) == 2                   # 2 and 7 are 2 and 3 away
    ref[4, 1:3, 1:3] = True
    assert S.middle_slice(ref) == 4


@pytest.mark.parametrize("jitter", [1, 5, 7.9, 20])
def test_jitter_stays_within_bounds_clipped_and_ordered(jitter):
    labels = blob_volume()
    ref = labels == 1
    tight = np.array(box_from_mask(ref[2]))
    j = int(np.floor(jitter))
    offsets = []
    for seed in range(300):
        prompt = S.box_middle_slice(ref, jitter, np.random.default_rng(seed))
        box = np.array(prompt.slices[2].box)
        x0, y0, x1, y1 = box
        assert 0 <= x0 < x1 <= 49 and 0 <= y0 < y1 <= 39
        assert np.all(np.abs(box - tight) <= j)
        assert np.all(box == np.round(box))
        offsets.append(box - tight)
    offsets = np.array(offsets)
    # away from the image border every offset in -j..j occurs (x1 = 27 and y1 = 21 are never clipped for j <= 12)
    if j <= 12:
        assert set(offsets[:, 2].astype(int)) == set(range(-j, j + 1))


def test_jitter_near_the_border_is_clipped_and_crossing_sides_are_swapped():
    ref = np.zeros((1, 10, 10), bool)
    ref[0, 0:2, 8:10] = True                           # corner object, 2 x 2 px
    for seed in range(200):
        x0, y0, x1, y1 = S.box_middle_slice(ref, 6, np.random.default_rng(seed)).slices[0].box
        assert 0 <= x0 < x1 <= 9 and 0 <= y0 < y1 <= 9


def test_one_pixel_object_gets_a_valid_box():
    ref = np.zeros((1, 10, 10), bool)
    ref[0, 4, 9] = True
    assert S.box_middle_slice(ref).slices[0].box == (8.0, 4.0, 9.0, 5.0)


def test_boxes_every_slice_are_the_tight_boxes_in_key_slice_form():
    ref = blob_volume() == 1
    prompt = S.boxes_every_slice(ref)
    assert sorted(prompt.slices) == [1, 2, 3, 4]
    for z, sp in prompt.slices.items():
        assert sp.box == box_from_mask(ref[z])
    single = S.boxes_every_slice(blob_volume() == 3)
    assert list(single.slices) == [2] and not single.is_key_slices


def test_box3d_is_the_in_plane_box_over_all_slices_with_the_slice_range():
    ref = blob_volume() == 1
    prompt = S.box3d(ref)
    assert prompt.z_range == (1, 4)
    assert list(prompt.slices) == [1 + (4 - 1) // 2]
    assert prompt.slices[2].box == box_from_mask(ref.any(axis=0))
    jittered = S.box3d(ref, 3, np.random.default_rng(1))
    assert jittered.z_range == (1, 4)                  # z is never jittered


@pytest.mark.parametrize("n", [1, 2, 5, 10, 20])
def test_points_land_inside_and_near_outside_as_labelled(n):
    ref = blob_volume() == 1
    prompt = S.points(ref, n, np.random.default_rng(n))
    (z, sp), = prompt.slices.items()
    assert z == 2 and sp.box is None
    assert len(sp.points) == n
    positives = [p for p in sp.points if p.positive]
    negatives = [p for p in sp.points if not p.positive]
    assert len(positives) == (n + 1) // 2 and len(negatives) == n // 2
    assert list(sp.points) == positives + negatives
    distance = ndimage.distance_transform_edt(~ref[z])
    for p in positives:
        assert ref[z, int(p.y), int(p.x)]
    for p in negatives:
        assert not ref[z, int(p.y), int(p.x)]
        assert 2 < distance[int(p.y), int(p.x)] <= 12
    if len(positives) > 1:                             # without replacement while there are enough pixels
        assert len({(p.x, p.y) for p in positives}) == len(positives)


def test_points_on_the_real_breast1_lesion():
    _, reference = case("breast1")
    prompt = S.points(reference, 10, np.random.default_rng(0))
    (z, sp), = prompt.slices.items()
    assert z == S.middle_slice(reference)
    assert [reference[z, int(p.y), int(p.x)] for p in sp.points] == [True] * 5 + [False] * 5


def test_points_with_a_given_number_of_negatives_three_positive_one_negative():
    ref = blob_volume() == 1
    sp = S.points(ref, 4, np.random.default_rng(1), negatives=1).slices[2]
    assert [p.positive for p in sp.points] == [True, True, True, False]
    assert [p.positive for p in S.points(ref, 3, np.random.default_rng(1), negatives=0).slices[2].points] == [True] * 3
    for bad in (4, -1, 1.5):
        with pytest.raises(ValueError, match="negatives must be an integer in 0..3"):
            S.points(ref, 4, np.random.default_rng(1), negatives=bad)


def test_box_mid_z_is_the_box_mid_box_with_the_true_z_range():
    labels = blob_volume()
    for jitter in (0, 4):
        plain, = S.simulate_prompts(labels, "box-mid", seed=3, values=[1], jitter_px=jitter)
        ranged, = S.simulate_prompts(labels, "box-mid-z", seed=3, values=[1], jitter_px=jitter)
        assert ranged.slices == plain.slices and plain.z_range is None and ranged.z_range == (1, 4)


def test_same_seed_same_prompt_and_independent_of_other_labels():
    labels = blob_volume()
    a = S.simulate_prompts(labels, "points", seed=7, case_id="c1", n_points=10)
    b = S.simulate_prompts(labels, "points", seed=7, case_id="c1", n_points=10)
    assert a == b
    assert [p.label for p in a] == [1, 3]
    only3 = S.simulate_prompts(labels, "points", seed=7, case_id="c1", n_points=10, values=[3])
    assert only3 == [a[1]]                               # label 3's prompt does not depend on label 1
    assert S.simulate_prompts(labels, "points", seed=8, case_id="c1", n_points=10) != a
    assert S.simulate_prompts(labels, "points", seed=7, case_id="c2", n_points=10) != a
    j = S.simulate_prompts(labels, "box-mid", seed=7, case_id="c1", jitter_px=10)
    assert j == S.simulate_prompts(labels, "box-mid", seed=7, case_id="c1", jitter_px=10)


@pytest.mark.parametrize("mode", sorted(S.PROMPT_MODES))
def test_prompts_round_trip_through_the_prompt_file_format(mode):
    labels = blob_volume()
    prompts = S.simulate_prompts(labels, mode, seed=3, case_id="x", names={1: "liver", 3: "tumour"},
                                 jitter_px=4, n_points=5)
    assert [p.name for p in prompts] == ["liver", "tumour"]
    doc = {"objects": [prompt_to_dict(p) for p in prompts]}
    assert parse_prompt_document(doc) == prompts


def test_bad_input():
    with pytest.raises(PromptError, match="empty reference"):
        S.box_middle_slice(np.zeros((2, 5, 5), bool))
    with pytest.raises(ValueError, match="jitter"):
        S.jitter_box((1, 1, 3, 3), -1, None, (5, 5))
    with pytest.raises(ValueError, match="rng"):
        S.jitter_box((1, 1, 3, 3), 2, None, (5, 5))
    with pytest.raises(ValueError, match="points"):
        S.points(blob_volume() == 1, 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="prompt mode"):
        S.simulate_prompts(blob_volume(), "scribble")
