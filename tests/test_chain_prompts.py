"""Chaining prompts beyond the previous mask's box (issue 14): SAM's dense mask prompt
(``mask_prompt``), off by default; docs/quality.md
("Chaining prompts: what was measured") has their Dice on the five pyradiomics cases. Real
LiteMedSAM on the bundled cases.
"""

import numpy as np
import pytest
from model_cache import case, litemedsam, middle_slice_box

import promptseg
from promptseg.evaluation import simulate as S
from promptseg.intensity import NormalizedSlices


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


def test_a_backend_without_a_mask_prompt_is_refused_before_any_work():
    from fakes import ThresholdSegmenter

    from promptseg.errors import OptionError

    volume, reference = case("breast1")
    model = ThresholdSegmenter()
    with pytest.raises(OptionError, match=r"^model threshold does not take a mask prompt \(--mask-prompt needs"):
        promptseg.segment(volume, [S.box_middle_slice(reference, 0, None)], model, mode="3d", mask_prompt=True)
    assert model.embedded == 0
