"""Metrics on hand-built shapes with known answers, and against an independent implementation.

The independent implementation below uses SciPy only (no MONAI) and is written from the
definitions, not from MONAI's code:

* HD95: boundary = mask voxels with a 6-neighbour (4 in 2D) outside the mask
  (``binary_erosion`` with an empty border), distances from
  ``distance_transform_edt(sampling=spacing)``, 95th percentile of each direction, the
  larger one. Same definition as the library's, so they must agree to float32 precision.
* NSD: boundary elements on the corners of the voxel grid (a corner whose 2x2(x2)
  neighbourhood is mixed), each weighted by the voxel faces (3D; edges in 2D) between an
  inside and an outside voxel that touch it (a quarter of each face's area in 3D, half of
  each edge's length in 2D). The library (MONAI, ``use_subvoxels=True``, as DeepMind's
  surface-distance) puts boundary elements at the same corners but weighs them by the
  area of the marching-cubes-like surface patch of the neighbourhood pattern. The two
  weightings legitimately differ on oblique and curved boundaries, so the two NSDs agree
  only approximately: on the random blobs below they differed by at most 0.005 when
  this test was written; the test allows 0.015.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from promptseg.errors import GeometryError, PromptsegError
from promptseg.evaluation.metrics import (
    EvaluationError,
    LabelMetrics,
    case_metrics,
    label_metrics,
)

ANISO = (3.0, 0.7, 0.9)  # z, y, x mm: thick slices, unequal in-plane spacing


# -- independent reference implementation (SciPy only) -------------------------------------

def _boundary_voxels(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def independent_hd95(pred: np.ndarray, ref: np.ndarray, spacing) -> float:
    bp, br = _boundary_voxels(pred), _boundary_voxels(ref)
    to_ref = ndimage.distance_transform_edt(~br, sampling=spacing)[bp]
    to_pred = ndimage.distance_transform_edt(~bp, sampling=spacing)[br]
    return float(max(np.percentile(to_ref, 95), np.percentile(to_pred, 95)))


def _corner_weights(mask: np.ndarray, spacing) -> np.ndarray:
    """Boundary weight per grid corner (array of shape ``mask.shape + 1``): face areas shared out."""
    padded = np.pad(mask, 1).astype(np.int8)
    ndim = mask.ndim
    weights = np.zeros(tuple(n + 1 for n in mask.shape))
    for axis in range(ndim):
        faces = (np.diff(padded, axis=axis) != 0).astype(float)  # faces across `axis`
        others = [a for a in range(ndim) if a != axis]
        size = math.prod(spacing[a] for a in others)  # face area (3D) or edge length (2D)
        for a in others:  # each face touches 2 corners along every other axis
            n = faces.shape[a]
            faces = faces.take(range(n - 1), axis=a) + faces.take(range(1, n), axis=a)
        weights += faces * size / 2 ** len(others)
    return weights


def independent_nsd(pred: np.ndarray, ref: np.ndarray, spacing, tolerance: float) -> float:
    wp, wr = _corner_weights(pred, spacing), _corner_weights(ref, spacing)
    on_p, on_r = wp > 0, wr > 0
    near_r = ndimage.distance_transform_edt(~on_r, sampling=spacing) <= tolerance
    near_p = ndimage.distance_transform_edt(~on_p, sampling=spacing) <= tolerance
    return float((wp[on_p & near_r].sum() + wr[on_r & near_p].sum()) / (wp.sum() + wr.sum()))


def _blob(rng, shape, sigma, fraction):
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field > np.quantile(field, 1 - fraction)


# -- helpers ------------------------------------------------------------------------------

def _cube(shape=(14, 20, 20), start=(2, 4, 4), size=8) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[tuple(slice(s, s + size) for s in start)] = True
    return mask


def _sphere(shape, spacing, radius, centre) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    squared = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing))
    return squared <= radius**2


# -- known answers ------------------------------------------------------------------------

def test_mask_against_itself():
    mask = _cube()
    m = label_metrics(mask, mask, ANISO, tolerance_mm=0.0, label=3)
    assert (m.label, m.dice, m.nsd, m.hd95) == (3, 1.0, 1.0, 0.0)
    assert m.pred_ml == m.ref_ml == pytest.approx(8**3 * 3.0 * 0.7 * 0.9 / 1000)
    assert m.as_dict() == {"label": 3, "dice": 1.0, "nsd": 1.0, "hd95": 0.0, "pred_ml": m.pred_ml,
                           "ref_ml": m.ref_ml, "tolerance_mm": 0.0}
    m2 = label_metrics(mask[5], mask[5], (0.7, 0.9))  # 2D
    assert (m2.dice, m2.nsd, m2.hd95) == (1.0, 1.0, 0.0)
    assert m2.pred_ml == pytest.approx(64 * 0.7 * 0.9 / 1000)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_shifted_cube_hd95_is_shift_times_spacing_of_that_axis(axis):
    ref = _cube()
    pred = np.roll(ref, 2, axis=axis)
    shift_mm = 2 * ANISO[axis]
    m = label_metrics(pred, ref, ANISO, tolerance_mm=shift_mm + 0.1)
    assert m.hd95 == pytest.approx(shift_mm, abs=1e-5)
    assert m.dice == pytest.approx(6 / 8)  # overlap 6 of 8 voxels along the shifted axis
    assert m.nsd == pytest.approx(1.0)  # every boundary element within the tolerance
    below = label_metrics(pred, ref, ANISO, tolerance_mm=shift_mm - 0.1)
    assert 0.3 < below.nsd < 0.95  # the faces across the shift are out; the side faces coincide
    assert below.dice == m.dice and below.hd95 == m.hd95


def test_shift_along_z_versus_x_depends_on_spacing_order():
    """The same voxel shift means 3 mm along z but 0.9 mm along x: spacing is per array axis."""
    ref = _cube()
    along_z = label_metrics(np.roll(ref, 1, axis=0), ref, ANISO, tolerance_mm=2.0)
    along_x = label_metrics(np.roll(ref, 1, axis=2), ref, ANISO, tolerance_mm=2.0)
    assert along_z.hd95 == pytest.approx(3.0, abs=1e-5)
    assert along_x.hd95 == pytest.approx(0.9, abs=1e-5)
    assert along_x.nsd == pytest.approx(1.0) and along_z.nsd < 0.95


def test_concentric_spheres():
    spacing = (1.5, 0.5, 0.6)
    shape, centre = (20, 56, 48), (9.3, 27.1, 23.8)  # off-grid centre
    inner = _sphere(shape, spacing, 8.0, centre)
    outer = _sphere(shape, spacing, 12.0, centre)
    m = label_metrics(inner, outer, spacing, tolerance_mm=2.0)
    # on a grid each boundary is off the true sphere by up to about half a voxel along the
    # coarsest axis: allow half the largest spacing
    assert m.hd95 == pytest.approx(4.0, abs=max(spacing) / 2)
    assert m.nsd == 0.0  # every boundary element ~4 mm from the other sphere
    assert label_metrics(inner, outer, spacing, tolerance_mm=5.5).nsd == pytest.approx(1.0)
    assert m.dice == pytest.approx(2 * 8**3 / (8**3 + 12**3), abs=0.02)
    assert m.pred_ml == pytest.approx(4 / 3 * math.pi * 8**3 / 1000, rel=0.03)
    assert m.ref_ml == pytest.approx(4 / 3 * math.pi * 12**3 / 1000, rel=0.03)


def test_volume_in_ml_is_count_times_voxel_volume():
    rng = np.random.default_rng(1)
    pred, ref = rng.random((5, 6, 7)) < 0.3, rng.random((5, 6, 7)) < 0.5
    m = label_metrics(pred, ref, (2.5, 0.8, 1.2))
    assert m.pred_ml == pytest.approx(pred.sum() * 2.5 * 0.8 * 1.2 / 1000)
    assert m.ref_ml == pytest.approx(ref.sum() * 2.5 * 0.8 * 1.2 / 1000)
    assert m.dice == pytest.approx(2 * (pred & ref).sum() / (pred.sum() + ref.sum()))


def test_no_dice_gating():
    """NSD and HD95 are computed also when the Dice is tiny (MedSAM's scripts skip NSD below 0.2)."""
    ref = _cube(size=4, start=(4, 4, 4))
    pred = np.roll(ref, 3, axis=2)  # overlap 1 of 4 columns
    m = label_metrics(pred, ref, ANISO, tolerance_mm=3.0)
    assert m.dice < 0.3
    assert m.nsd == pytest.approx(1.0)  # everything within 3 x 0.9 = 2.7 mm
    assert m.hd95 == pytest.approx(2.7, abs=1e-5)


def test_axis_permutation_gives_the_same_metrics():
    rng = np.random.default_rng(7)
    pred, ref = _blob(rng, (10, 24, 20), (1, 3, 3), 0.2), _blob(rng, (10, 24, 20), (1, 3, 3), 0.2)
    base = label_metrics(pred, ref, ANISO, 2.0)
    for order in [(2, 0, 1), (1, 2, 0)]:
        m = label_metrics(pred.transpose(order), ref.transpose(order), [ANISO[a] for a in order], 2.0)
        assert m.dice == base.dice
        assert m.hd95 == pytest.approx(base.hd95, abs=1e-5)
        assert m.nsd == pytest.approx(base.nsd, abs=1e-5)


# -- empty masks ---------------------------------------------------------------------------

def test_both_empty():
    empty = np.zeros((4, 5, 6), bool)
    m = label_metrics(empty, empty, ANISO)
    assert (m.dice, m.nsd, m.hd95, m.pred_ml, m.ref_ml) == (1.0, 1.0, 0.0, 0.0, 0.0)


@pytest.mark.parametrize("which", ["pred", "ref"])
def test_exactly_one_empty(which):
    mask, empty = _cube(), np.zeros((14, 20, 20), bool)
    pred, ref = (empty, mask) if which == "pred" else (mask, empty)
    m = label_metrics(pred, ref, ANISO)
    assert (m.dice, m.nsd) == (0.0, 0.0)
    assert m.hd95 == math.inf
    assert (m.pred_ml == 0.0) == (which == "pred") and (m.ref_ml == 0.0) == (which == "ref")


# -- independent implementation ------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_independent_implementation_3d(seed):
    rng = np.random.default_rng(seed)
    shape, sigma = (12, 40, 36), (0.8, 3.0, 3.0)
    pred = _blob(rng, shape, sigma, 0.2)
    ref = pred if seed == 0 else _blob(rng, shape, sigma, 0.15)
    if seed == 0:  # a related pair: grown by one voxel, with holes punched in
        ref = ndimage.binary_dilation(pred) & ~(_blob(rng, shape, sigma, 0.05) & pred)
    for tolerance in (1.0, 2.0, 4.0):
        m = label_metrics(pred, ref, ANISO, tolerance)
        assert m.nsd == pytest.approx(independent_nsd(pred, ref, ANISO, tolerance), abs=0.015)
    assert m.hd95 == pytest.approx(independent_hd95(pred, ref, ANISO), rel=1e-5, abs=1e-4)


def test_agrees_with_independent_implementation_2d():
    rng = np.random.default_rng(3)
    spacing = (0.7, 2.1)
    for _ in range(3):
        pred, ref = _blob(rng, (60, 30), (4, 1.5), 0.25), _blob(rng, (60, 30), (4, 1.5), 0.25)
        for tolerance in (1.0, 3.0):
            m = label_metrics(pred, ref, spacing, tolerance)
            assert m.nsd == pytest.approx(independent_nsd(pred, ref, spacing, tolerance), abs=0.015)
        assert m.hd95 == pytest.approx(independent_hd95(pred, ref, spacing), rel=1e-5, abs=1e-4)


def test_object_touching_the_array_border():
    """Outside the array is background: a mask filling a corner has its boundary on the border."""
    ref = np.zeros((6, 10, 10), bool)
    ref[:3, :5, :5] = True
    pred = np.roll(ref, 1, axis=1)
    m = label_metrics(pred, ref, ANISO, 1.0)
    assert m.hd95 == pytest.approx(independent_hd95(pred, ref, ANISO), abs=1e-4)
    assert m.nsd == pytest.approx(independent_nsd(pred, ref, ANISO, 1.0), abs=0.015)


# -- label maps ---------------------------------------------------------------------------

def test_case_metrics_labels():
    pred = np.zeros((6, 12, 12), np.uint8)
    ref = np.zeros_like(pred)
    ref[1:4, 2:6, 2:6] = 1
    pred[1:4, 2:6, 2:6] = 1
    ref[1:4, 7:10, 7:10] = 5  # label 5 missed
    pred[2:5, 1:3, 8:11] = 7  # label 7 only predicted
    got = case_metrics(pred, ref, ANISO)
    assert [m.label for m in got] == [1, 5, 7]
    assert isinstance(got[0], LabelMetrics)
    assert (got[0].dice, got[0].hd95) == (1.0, 0.0)
    assert (got[1].dice, got[1].hd95, got[1].pred_ml) == (0.0, math.inf, 0.0)
    assert (got[2].dice, got[2].hd95, got[2].ref_ml) == (0.0, math.inf, 0.0)
    chosen = case_metrics(pred, ref, ANISO, labels=[5, 2], tolerance_mm=1.0)
    assert [m.label for m in chosen] == [5, 2]
    assert (chosen[1].dice, chosen[1].nsd, chosen[1].hd95) == (1.0, 1.0, 0.0)  # absent from both
    assert chosen[0].tolerance_mm == 1.0


def test_input_errors():
    mask = _cube()
    with pytest.raises(GeometryError, match="shape"):
        label_metrics(mask, mask[:-1], ANISO)
    with pytest.raises(GeometryError):
        case_metrics(mask.astype(np.uint8), mask[:, :-1].astype(np.uint8), ANISO)
    with pytest.raises(EvaluationError, match="one value per array axis"):
        label_metrics(mask, mask, (1.0, 1.0))
    with pytest.raises(EvaluationError, match="positive"):
        label_metrics(mask, mask, (1.0, 0.0, 1.0))
    with pytest.raises(EvaluationError, match="tolerance"):
        label_metrics(mask, mask, ANISO, tolerance_mm=-1)
    with pytest.raises(EvaluationError, match="positive integers"):
        case_metrics(mask, mask, ANISO, labels=[0])
    with pytest.raises(EvaluationError, match="2D"):
        label_metrics(mask[0, 0], mask[0, 0], (1.0,))
    assert issubclass(EvaluationError, PromptsegError) and issubclass(EvaluationError, ValueError)
