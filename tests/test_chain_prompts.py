"""Chaining prompts beyond the previous mask's box (issue 14): SAM's dense mask prompt
(``mask_prompt``), a click inside the previous mask (``mask_points``) and the stop rule's drift
test (``StopRule.drift_shift`` / ``drift_growth``). All are off by default; docs/quality.md
("Chaining prompts: what was measured") has their Dice on the five pyradiomics cases. Real
LiteMedSAM on the bundled cases.
"""

import numpy as np
import pytest
from model_cache import case, litemedsam, middle_slice_box

import promptseg
from promptseg.errors import OptionError
from promptseg.evaluation import simulate as S
from promptseg.inference.chain import interior_point
from promptseg.inference.stop_rule import Appearance, StopRule, check_slice
from promptseg.intensity import NormalizedSlices
from promptseg.stops import StopReason


def _slices(name):
    volume, reference = case(name)
    return NormalizedSlices.of(volume), reference


def test_dense_mask_prompt_is_the_previous_slices_low_res_logits_and_changes_the_next_mask():
    images, reference = _slices("lung1")
    seg = litemedsam()
    z, box = middle_slice_box(reference)
    emb = seg.embed(images[z])
    plain = seg.decode(emb, box=box)
    first = seg.decode_with_mask(emb, None, box=box)
    # no mask prompt: the eager network gives the exported decoder's mask, plus its 256 x 256 logits
    assert first.low_res.shape == (256, 256) and first.low_res.dtype == np.float32
    assert (first.mask == plain.mask).mean() > 0.999
    nxt = seg.embed(images[z + 1])
    next_box = seg.box_from_mask(first.mask)
    without = seg.decode_with_mask(nxt, None, box=next_box)
    with_mask = seg.decode_with_mask(nxt, first.low_res, box=next_box)
    assert np.abs(with_mask.logits - without.logits).max() > 1.0
    assert with_mask.mask.sum() != without.mask.sum()


def test_mask_logits_of_the_wrong_shape_are_refused():
    images, reference = _slices("lung1")
    seg = litemedsam()
    z, box = middle_slice_box(reference)
    with pytest.raises(ValueError, match=r"\(s, s\) low-res logits"):
        seg.decode_with_mask(seg.embed(images[z]), np.zeros((3, 256, 256), np.float32), box=box)


@pytest.mark.slow
def test_mask_prompt_helps_the_brain2_chain_and_is_recorded():
    volume, reference = case("brain2")
    prompt = S.box_middle_slice(reference, 0, None)
    plain = promptseg.segment(volume, [prompt], litemedsam(), mode="3d")
    masked = promptseg.segment(volume, [prompt], litemedsam(), mode="3d", mask_prompt=True)
    before, after = promptseg.dice(plain.mask(1), reference), promptseg.dice(masked.mask(1), reference)
    assert after >= before + 0.08, (before, after)  # measured 0.484 -> 0.597
    assert masked.provenance["settings"]["mask_prompt"] is True
    assert "mask_prompt" not in plain.provenance["settings"]


def test_interior_point_is_the_deepest_pixel():
    mask = np.zeros((20, 30), bool)
    mask[2:7, 2:6] = True  # small blob
    mask[5:16, 12:23] = True  # the big one: 11 x 11, centre (17, 10)
    assert interior_point(mask).tolist() == [17.0, 10.0]


def _blob(cx, cy, r, shape=(64, 64)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def test_drift_test_stops_a_jump_and_a_swelling_and_keeps_a_steady_object():
    image = np.zeros((64, 64), np.uint8)
    previous = _blob(20, 20, 6)
    image[previous | _blob(34, 20, 6) | _blob(20, 20, 12)] = 200
    appearance = Appearance(200.0, 0.0)
    rule = StopRule(drift_shift=1.5, drift_growth=2.5)
    steady = check_slice(rule, image, _blob(21, 20, 6), previous, appearance, 1.0, 10.0)
    assert steady.keep and steady.shift == pytest.approx(1 / 6, abs=0.02)
    jump = check_slice(rule, image, _blob(34, 20, 6), previous, appearance, 1.0, 10.0)
    assert not jump.keep and jump.reason is StopReason.DRIFTED and jump.shift == pytest.approx(14 / 6, abs=0.05)
    assert "centroid moved 2.3" in jump.text
    swell = check_slice(rule, image, _blob(20, 20, 12), previous, appearance, 1.0, 10.0)
    assert not swell.keep and swell.reason is StopReason.DRIFTED and "area grew 3.9" in swell.text
    # off by default
    assert check_slice(StopRule(), image, _blob(34, 20, 6), previous, appearance, 1.0, 10.0).keep


@pytest.mark.parametrize("field, value", [("drift_shift", 0), ("drift_shift", float("inf")), ("drift_growth", 0.5),
                                          ("drift_growth", "x")])
def test_drift_parameters_are_checked(field, value):
    with pytest.raises(OptionError, match=f"stop rule {field} must be"):
        StopRule(**{field: value})
