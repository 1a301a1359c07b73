"""3D propagation on real scans with expert masks: the core promise, measured.

Reference (issue 2): LiteMedSAM's own chaining, given the lesion's full 3D box
and the ground-truth z-range, reaches Dice lung1 0.795, brain2 0.487,
breast1 0.462. promptseg gets only the ground-truth box on the lesion's middle
slice and no z-range; it must reach those minus 0.02.
"""

import numpy as np
import pytest

import promptseg

from model_cache import case, litemedsam, middle_slice_box

TARGETS = {"lung1": 0.795 - 0.02, "brain2": 0.487 - 0.02, "breast1": 0.462 - 0.02}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_middle_slice_box_without_z_range(name):
    volume, reference = case(name)
    z, box = middle_slice_box(reference)
    result = promptseg.segment(volume, [promptseg.make_object(slice=z, box=box)], litemedsam(), mode="3d")
    score = promptseg.dice(result.mask(1), reference)
    assert score >= TARGETS[name], f"{name}: Dice {score:.3f} < {TARGETS[name]:.3f}"
    # never encodes a slice twice, and stops on its own: one slice past each end at most
    assert len(result.encoded_slices) == len(set(result.encoded_slices))
    ref_z = np.nonzero(reference.any(axis=(1, 2)))[0]
    assert len(result.encoded_slices) <= len(ref_z) + 2
    # the label map keeps the scan's geometry
    assert result.labels.same_grid(volume)


@pytest.mark.slow
def test_challenge_3d_box_chains_over_its_z_range():
    volume, reference = case("lung1")
    zs = np.nonzero(reference.any(axis=(1, 2)))[0]
    rows, cols = np.nonzero(reference.any(axis=0))
    box3d = (cols.min(), rows.min(), zs[0], cols.max(), rows.max(), zs[-1])
    result = promptseg.segment(volume, [promptseg.make_object(box3d=box3d)], litemedsam())
    assert result.objects[0].slices == zs.tolist()
    assert promptseg.dice(result.mask(1), reference) >= 0.775
