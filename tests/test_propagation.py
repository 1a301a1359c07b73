"""Propagation logic on synthetic volumes with a deterministic fake model (exact answers)."""

import numpy as np
import pytest

from promptseg.prompts import box_from_mask, make_object
from promptseg.errors import OptionError
from promptseg.inference import compose_labels, iter_chain, propagate
from promptseg.stops import Stop, StopReason
from promptseg.inference.stop_rule import Appearance, StopRule, check_slice, object_radius_mm

from fakes import ThresholdSegmenter, ball


def _image(*objects, shape=(30, 64, 64), background=40):
    img = np.full(shape, background, dtype=np.uint8)
    for mask, value in objects:
        img[mask] = value
    return img


def _seed(mask, z, **kw):
    return make_object(slice=z, box=box_from_mask(mask[z]), **kw)


def test_ball_is_followed_up_and_down_and_stops_where_it_ends():
    sphere = ball((30, 64, 64), (15, 32, 32), 6)
    img = _image((sphere, 200))
    seg = ThresholdSegmenter()
    (res,), encoded = propagate(seg, img, [_seed(sphere, 15)])
    out = compose_labels([res], img.shape) == 1
    assert np.array_equal(out, sphere)
    assert res.slices == list(range(9, 22))
    assert {d: str(s) for d, s in res.stops.items()} == {"up": "slice 22: empty mask (0 px)", "down": "slice 8: empty mask (0 px)"}
    assert res.stops["up"] == Stop(StopReason.EMPTY_MASK, 22, "empty mask (0 px)")
    # each slice embedded once: the object's slices plus the two where it stopped
    assert sorted(encoded) == list(range(8, 23)) and len(encoded) == len(set(encoded))
    assert seg.embedded == len(encoded)


def test_two_d_mode_segments_only_the_prompted_slice():
    sphere = ball((30, 64, 64), (15, 32, 32), 6)
    img = _image((sphere, 200))
    (res,), encoded = propagate(ThresholdSegmenter(), img, [_seed(sphere, 13)], mode="2d")
    assert res.slices == [13] and encoded == [13]
    assert np.array_equal(compose_labels([res], img.shape)[13] == 1, sphere[13])


def test_drifting_onto_a_darker_neighbour_stops_on_appearance():
    sphere = ball((30, 64, 64), (15, 32, 32), 5)
    # a dimmer structure (but still above the fake's threshold) continues right above the sphere
    rod = np.zeros_like(sphere)
    rod[21:28, 28:37, 28:37] = True
    img = _image((rod, 132), (sphere, 230))
    (res,), _ = propagate(ThresholdSegmenter(), img, [_seed(sphere, 15)])
    assert res.slices == list(range(10, 21))
    assert str(res.stops["up"]).startswith("slice 21: does not look like the object (0% object-like voxels)")
    assert res.stops["up"].reason is StopReason.NOT_OBJECT_LIKE


def test_drifting_onto_a_thin_neighbour_beyond_the_reach_stops_on_extent():
    spacing = (1.0, 1.0)
    sphere = ball((30, 64, 64), (15, 32, 32), 5)
    # an oblique vessel as bright as the sphere leaves its top: 2 px wide, shifting 1 px per
    # slice, so consecutive masks overlap with IoU 1/3
    rod = np.zeros_like(sphere)
    for z in range(20, 28):
        rod[z, 30:33, 33 + z - 20 : 35 + z - 20] = True
    img = _image((sphere | rod, 200))
    (res,), _ = propagate(ThresholdSegmenter(), img, [_seed(sphere, 15)], spacing_xy=spacing, slice_thickness=1.0)
    # box of the sphere's middle slice is 11 px -> reach R = 5.5 mm; slice 21 is 5.5 mm away (near face)
    assert res.slices[-1] == 21
    assert str(res.stops["up"]).startswith("slice 22: 6.5 mm from the prompt (> 5.5 mm) and IoU 0.33")
    assert res.stops["up"].reason is StopReason.BEYOND_REACH
    # the same chain with a long reach (appearance only) follows the rod to its end
    (res2,), _ = propagate(ThresholdSegmenter(), img, [_seed(sphere, 15)], stop_rule=StopRule(extent_factor=100))
    assert res2.slices[-1] == 27


def test_long_object_continues_beyond_the_reach_while_masks_overlap():
    # a cylinder 25 slices long but only 10 px wide: consecutive masks are identical (IoU 1)
    cyl = np.zeros((30, 64, 64), bool)
    cyl[3:28] = ball((1, 64, 64), (0, 32, 32), 5)[0]
    img = _image((cyl, 200))
    (res,), _ = propagate(ThresholdSegmenter(), img, [_seed(cyl, 15)])
    assert res.slices == list(range(3, 28))


def test_z_range_turns_the_stop_rule_off_and_bounds_the_chain():
    cyl = np.zeros((30, 64, 64), bool)
    cyl[3:28] = ball((1, 64, 64), (0, 32, 32), 5)[0]
    img = _image((cyl, 200))
    (res,), encoded = propagate(ThresholdSegmenter(), img, [_seed(cyl, 15, z_range=(12, 20))])
    assert res.slices == list(range(12, 21))
    assert res.stops == {"up": Stop(StopReason.END_OF_Z_RANGE), "down": Stop(StopReason.END_OF_Z_RANGE)}
    assert str(res.stops["up"]) == "end of z-range"
    assert sorted(encoded) == list(range(12, 21))


def test_key_slices_segment_every_slice_between_them_with_interpolated_boxes():
    # a bar moving right by 1 px per slice; boxes only on slices 5 and 15
    img = np.full((20, 40, 60), 40, np.uint8)
    for z in range(20):
        img[z, 10:20, 5 + z : 15 + z] = 200
    obj = make_object(key_boxes={5: (10, 10, 19, 19), 15: (20, 10, 29, 19)})
    (res,), encoded = propagate(ThresholdSegmenter(), img, [obj])
    assert res.slices == list(range(5, 16)) and sorted(encoded) == list(range(5, 16))
    labels = compose_labels([res], img.shape)
    assert np.array_equal(labels[10] == 1, img[10] == 200)


def test_many_objects_each_slice_embedded_once_and_overlaps_go_to_the_stronger_logit():
    a = ball((30, 64, 64), (10, 20, 20), 6)
    b = ball((30, 64, 64), (16, 40, 40), 6)
    c = ball((30, 64, 64), (13, 22, 40), 4)
    img = _image((a, 150), (b, 200), (c, 250))
    seg = ThresholdSegmenter()
    prompts = [_seed(a, 10, label=1), _seed(b, 16, label=2), _seed(c, 13, label=3)]
    results, encoded = propagate(seg, img, prompts)
    assert len(encoded) == len(set(encoded)) == seg.embedded
    assert set(encoded) == set(range(3, 24))  # union of the three chains (+ one stop slice each side)
    labels = compose_labels(results, img.shape)
    assert np.array_equal(labels == 2, b) and np.array_equal(labels == 3, c)
    assert np.array_equal(labels == 1, a)


def test_overlapping_prompts_resolved_by_score():
    # two prompts whose boxes both cover the bright core: the core goes to the object with the higher logit
    img = np.full((1, 40, 40), 40, np.uint8)
    img[0, 10:30, 10:30] = 180
    img[0, 15:25, 15:25] = 250
    p1 = make_object(slice=0, box=(10, 10, 29, 29), label=1)
    p2 = make_object(slice=0, box=(15, 15, 24, 24), label=2)
    results, _ = propagate(ThresholdSegmenter(), img, [p1, p2], mode="2d")
    labels = compose_labels(results, img.shape)
    # both see the same logits on the core; the tie keeps the first object's voxels
    assert (labels[0, 15:25, 15:25] == 1).all()
    results[1].logits[0] = results[1].logits[0] + 1  # object 2 more confident
    labels = compose_labels(results, img.shape)
    assert (labels[0, 15:25, 15:25] == 2).all() and (labels[0, 10:15, 10:30] == 1).all()


def test_nothing_found_on_the_prompted_slice_stops_both_ways():
    img = np.full((10, 32, 32), 40, np.uint8)
    (res,), encoded = propagate(ThresholdSegmenter(), img, [make_object(slice=5, box=(5, 5, 20, 20))])
    assert res.slices == [] and encoded == [5]
    assert res.stops["up"] == Stop(StopReason.NOTHING_ON_PROMPTED_SLICE)
    assert str(res.stops["up"]) == "no object found on the prompted slice"


def test_labels_above_255_use_uint16():
    img = np.full((1, 16, 16), 200, np.uint8)
    results, _ = propagate(ThresholdSegmenter(), img, [make_object(slice=0, box=(2, 2, 10, 10), label=300)], mode="2d")
    labels = compose_labels(results, img.shape)
    assert labels.dtype == np.uint16 and labels.max() == 300


def test_stop_rule_pieces():
    img = np.zeros((20, 20), np.uint8)
    img[5:10, 5:10] = 200
    img[0:20, 0:4] = 90
    mask = img == 200
    app = Appearance.learn(img, mask, (5, 5, 9, 9))
    assert app.object_level == 200 and app.background_level == 0
    assert app.object_fraction(img, mask) == 1.0
    dim = img == 90
    assert app.object_fraction(img, dim) == 0.0
    assert object_radius_mm((5, 5, 9, 14), (0.5, 2.0)) == 10.0
    rule = StopRule()
    assert check_slice(rule, img, mask, mask, app, 1.0, 5.0).keep
    far = check_slice(rule, img, mask, np.zeros_like(mask), app, 6.0, 5.0)
    assert not far.keep and far.iou_previous == 0.0
    assert not check_slice(rule, img, np.zeros_like(mask), mask, app, 1.0, 5.0).keep
    with pytest.raises(OptionError, match=r"stop rule continuity_iou must be a number in \[0, 1\], got 2"):
        StopRule(continuity_iou=2)
    with pytest.raises(OptionError, match="continuity_iou"):
        StopRule(continuity_iou=float("nan"))
    with pytest.raises(OptionError, match="extent_factor"):
        StopRule(extent_factor=-1)


def test_stored_float16_logits_keep_the_mask():
    from promptseg.models.base import half_logits

    logits = np.array([[1e-9, -1e-9, 0.0, 3.5, -60000.0, 1e-5]], dtype=np.float32)
    half = half_logits(logits)
    assert half.dtype == np.float16
    np.testing.assert_array_equal(half > 0, logits > 0)
    # everything but the positive value that would round to zero is plain rounding
    np.testing.assert_array_equal(half[0, 1:], logits[0, 1:].astype(np.float16))
    assert half[0, 0] == np.float16(2.0**-24)


def test_iter_chain_embedding_source_one_direction_and_steps_as_they_come():
    """What an interactive session uses: where embeddings come from, which way to go, and
    each slice's decision as soon as it is computed (closing the generator cancels)."""
    sphere = ball((30, 64, 64), (15, 32, 32), 6)
    img = _image((sphere, 200))
    seg = ThresholdSegmenter()

    class Source:
        def __init__(self):
            self.encoded, self.released = [], []

        def get(self, z):
            self.encoded.append(z)
            return seg.embed(img[z])

        def release(self, z):
            self.released.append(z)

    (full,), encoded = propagate(seg, img, [_seed(sphere, 15)])
    source = Source()
    steps = list(iter_chain(seg, img, [_seed(sphere, 15)], embeddings=source))
    assert source.encoded == encoded
    kept = [s for s in steps if s.kept]
    assert [s.z for s in kept] == list(range(15, 22)) + list(range(14, 8, -1))
    assert all(np.array_equal(s.result.logits[s.z], full.logits[s.z]) for s in kept)
    assert [str(s.stop) for s in steps if s.stop] == ["slice 22: empty mask (0 px)", "slice 8: empty mask (0 px)"]
    (up,), enc_up = propagate(seg, img, [_seed(sphere, 15)], directions=("up",))
    assert up.slices == list(range(15, 22)) and {d: str(s) for d, s in up.stops.items()} == {"up": "slice 22: empty mask (0 px)"}
    assert min(enc_up) == 15
    (down,), enc_down = propagate(seg, img, [_seed(sphere, 15)], directions=("down",))
    assert down.slices == list(range(9, 16)) and {d: str(s) for d, s in down.stops.items()} == {"down": "slice 8: empty mask (0 px)"}
    assert max(enc_down) == 15
    for part in (up, down):
        assert all(np.array_equal(part.logits[z], full.logits[z]) for z in part.slices)
    # cancelling: stop iterating at slice 18; nothing beyond it is computed, no stop is invented
    chain = iter_chain(seg, img, [_seed(sphere, 15)])
    for step in chain:
        if step.z == 18:
            chain.close()
            break
    assert step.result.slices == [15, 16, 17, 18] and step.result.stops == {}
    with pytest.raises(ValueError, match="directions"):
        propagate(seg, img, [_seed(sphere, 15)], directions=("sideways",))
