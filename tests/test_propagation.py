"""Propagation logic on synthetic volumes with a deterministic fake model (exact answers)."""

import numpy as np
import pytest

from promptseg.prompts import box_from_mask, make_object
from promptseg.propagation import compose_labels, propagate
from promptseg.stop_rule import Appearance, StopRule, check_slice, object_radius_mm

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
    assert res.stops == {"up": "slice 22: empty mask (0 px)", "down": "slice 8: empty mask (0 px)"}
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
    assert res.stops["up"].startswith("slice 21: does not look like the object (0% object-like voxels)")


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
    assert res.stops["up"].startswith("slice 22: 6.5 mm from the prompt (> 5.5 mm) and IoU 0.33")
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
    assert res.stops == {"up": "end of z-range", "down": "end of z-range"}
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
    assert res.stops["up"] == "no object found on the prompted slice"


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
    with pytest.raises(ValueError):
        StopRule(continuity_iou=2)


def test_hooks_embedding_provider_one_direction_and_per_slice_reports():
    """The hooks an interactive session uses: where embeddings come from, which way to
    go, and a report per kept slice as soon as it is computed (or an exception to cancel)."""
    sphere = ball((30, 64, 64), (15, 32, 32), 6)
    img = _image((sphere, 200))
    seg = ThresholdSegmenter()
    asked = []

    def embed(z):
        asked.append(z)
        return seg.embed(img[z])

    reports = []
    (full,), _ = propagate(seg, img, [_seed(sphere, 15)])
    (res,), encoded = propagate(seg, img, [_seed(sphere, 15)], embed=embed,
                                on_slice=lambda i, z, pred: reports.append((i, z, pred.mask)))
    assert asked == encoded
    assert [z for _, z, _ in reports] == list(range(15, 22)) + list(range(14, 8, -1))
    assert all(np.array_equal(m, full.logits[z] > 0) for _, z, m in reports)
    (up,), enc_up = propagate(seg, img, [_seed(sphere, 15)], directions=("up",))
    assert up.slices == list(range(15, 22)) and up.stops == {"up": "slice 22: empty mask (0 px)"}
    assert min(enc_up) == 15
    (down,), enc_down = propagate(seg, img, [_seed(sphere, 15)], directions=("down",))
    assert down.slices == list(range(9, 16)) and down.stops == {"down": "slice 8: empty mask (0 px)"}
    assert max(enc_down) == 15
    for direction, part in (("up", up), ("down", down)):
        assert all(np.array_equal(part.logits[z], full.logits[z]) for z in part.slices)

    class Cancelled(Exception):
        pass

    def cancel_at_18(i, z, pred):
        if z == 18:
            raise Cancelled
    with pytest.raises(Cancelled):
        propagate(seg, img, [_seed(sphere, 15)], on_slice=cancel_at_18)
    with pytest.raises(ValueError, match="directions"):
        propagate(seg, img, [_seed(sphere, 15)], directions=("sideways",))
