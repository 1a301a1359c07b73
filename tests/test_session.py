"""promptseg.Session: prompt, propagate (streamed, cancellable), correct, edit, undo -- and its embedding cache."""

import threading

import numpy as np
import pytest

from promptseg.stops import StopReason

import promptseg
from promptseg.errors import PromptError
from promptseg.prompts import box_from_mask, make_object
from promptseg.inference import compose_labels, propagate
from promptseg.session import EmbeddingCache, PropagationDone, Session, SessionBusy, SharedModel, SliceResult
from promptseg.volume import Volume

from fakes import ThresholdSegmenter, ball


def _scene():
    """A bright ball (label 1) and a bright cylinder beside it, on a dark background, uint8."""
    shape = (30, 64, 64)
    sphere = ball(shape, (15, 24, 24), 6)
    cylinder = np.zeros(shape, bool)
    cylinder[5:25] = ball((1,) + shape[1:], (0, 44, 44), 5)[0]
    image = np.full(shape, 40, np.uint8)
    image[sphere] = 200
    image[cylinder] = 180
    return Volume(image, spacing=(1.0, 1.0, 1.0)), sphere, cylinder


def _session(volume, **kw):
    kw.setdefault("prefetch", 0)
    return Session(volume, ThresholdSegmenter(), **kw)


def test_prompt_then_propagate_streams_slices_and_equals_the_library():
    volume, sphere, _ = _scene()
    session = _session(volume)
    box = box_from_mask(sphere[15])
    first = session.prompt(1, 15, box=box)
    assert isinstance(first, SliceResult) and first.z == 15 and first.source == "prompt"
    assert np.array_equal(first.mask, sphere[15])
    events = list(session.propagate(1))
    assert isinstance(events[-1], PropagationDone) and not events[-1].cancelled
    slices = [e.z for e in events[:-1]]
    assert slices == list(range(15, 22)) + list(range(14, 8, -1))  # up first, then down, as computed
    (expected,), _ = propagate(ThresholdSegmenter(), volume.array, [make_object(slice=15, box=box)])
    assert events[-1].stops == expected.stops
    assert np.array_equal(session.mask(1), compose_labels([expected], volume.shape) == 1)
    assert np.array_equal(session.mask(1), sphere)
    # every slice encoded once, although prompt and propagation both used slice 15
    assert sorted(session.embedder.encoded) == sorted(set(session.embedder.encoded))


def test_a_correction_on_a_propagated_slice_repropagates_outward_only():
    volume, sphere, _ = _scene()
    session = _session(volume)
    session.prompt(1, 15, box=box_from_mask(sphere[15]))
    list(session.propagate(1))
    before = session.mask(1).copy()
    # a smaller box on slice 18 (above the seed): that slice and the ones above change, the rest not
    small = (20, 20, 24, 24)
    result = session.prompt(1, 18, box=small)
    assert result.mask.sum() < sphere[18].sum()
    events = list(session.propagate(1))
    done = events[-1]
    assert done.directions == ("up",) and done.start == 18
    assert [e.z for e in events[:-1]][0] == 18 and all(e.z >= 18 for e in events[:-1])
    after = session.mask(1)
    assert np.array_equal(after[:18], before[:18])
    (expected,), _ = propagate(ThresholdSegmenter(), volume.array, [make_object(slice=18, box=small)], directions=("up",))
    assert np.array_equal(after[18:], (compose_labels([expected], volume.shape) == 1)[18:])
    assert not np.array_equal(after, before)


def test_points_on_a_propagated_slice_refine_it_with_the_box_around_its_mask():
    volume, sphere, _ = _scene()
    session = _session(volume)
    session.prompt(1, 15, box=box_from_mask(sphere[15]))
    list(session.propagate(1))
    refined = session.prompt(1, 17, points=[(24, 24, 1)])
    prompt = session.label(1).prompts[17]
    assert prompt.box == ThresholdSegmenter().box_from_mask(sphere[17])
    assert len(prompt.points) == 1
    assert np.array_equal(refined.mask, sphere[17])


def test_undo_redo_step_through_prompt_propagation_and_edit():
    volume, sphere, _ = _scene()
    session = _session(volume)
    empty = session.mask(1) if False else np.zeros(volume.shape, bool)
    session.prompt(1, 15, box=box_from_mask(sphere[15]))
    after_prompt = session.mask(1).copy()
    list(session.propagate(1))
    after_propagation = session.mask(1).copy()
    painted = np.zeros(volume.shape[1:], bool)
    painted[0:5, 0:5] = True
    session.edit(1, {3: painted})
    after_edit = session.mask(1).copy()
    assert after_edit[3].sum() == 25
    assert session.undo() == 1 and np.array_equal(session.mask(1), after_propagation)
    assert session.undo() == 1 and np.array_equal(session.mask(1), after_prompt)
    assert session.undo() == 1
    assert session.labels == [] and not session.can_undo and session.undo() is None
    assert np.array_equal(session.label_map().array > 0, empty)
    assert session.redo() == 1 and np.array_equal(session.mask(1), after_prompt)
    assert session.redo() == 1 and np.array_equal(session.mask(1), after_propagation)
    assert session.redo() == 1 and np.array_equal(session.mask(1), after_edit)
    assert session.redo() is None
    # a new change after undo drops the redo branch
    session.undo()
    session.prompt(2, 10, box=(40, 40, 50, 50))
    assert not session.can_redo


class _GatedSegmenter(ThresholdSegmenter):
    """Blocks its n-th encoder call until ``gate`` is set (to cancel at a known point)."""

    def __init__(self, block_at):
        super().__init__()
        self.block_at, self.gate = block_at, threading.Event()

    def embed(self, image):
        if self.embedded + 1 == self.block_at:
            assert self.gate.wait(20)
        return super().embed(image)


def test_cancel_keeps_what_was_done_as_one_undo_step():
    volume, sphere, _ = _scene()
    model = _GatedSegmenter(block_at=4)  # slice 15 (prompt), 16, 17, then 18 waits
    session = Session(volume, model, prefetch=0)
    session.prompt(1, 15, box=box_from_mask(sphere[15]))
    cancel = threading.Event()
    seen = []
    for event in session.propagate(1, cancel=cancel):
        seen.append(event)
        if isinstance(event, SliceResult) and event.z == 17:
            cancel.set()
            model.gate.set()
    done = seen[-1]
    assert done.cancelled and {d: str(s) for d, s in done.stops.items()} == {"up": "cancelled", "down": "cancelled"}
    assert {s.reason for s in done.stops.values()} == {StopReason.CANCELLED}
    assert [e.z for e in seen[:-1]] == [15, 16, 17] == sorted(done.slices)
    assert session.label(1).slices == [15, 16, 17]
    assert not session.is_propagating()
    session.undo()
    assert session.label(1).slices == [15]


def test_a_label_being_propagated_refuses_other_changes():
    volume, sphere, _ = _scene()
    model = _GatedSegmenter(block_at=2)  # the propagation waits before encoding slice 16
    session = Session(volume, model, prefetch=0)
    session.prompt(1, 15, box=box_from_mask(sphere[15]))
    stream = session.propagate(1)
    assert next(stream).z == 15
    with pytest.raises(SessionBusy, match="being propagated"):
        session.prompt(1, 15, box=(1, 1, 9, 9))
    with pytest.raises(SessionBusy):
        session.propagate(1)
    session.cancel(1)
    model.gate.set()
    assert list(stream)[-1].cancelled
    assert not session.is_propagating()
    session.prompt(1, 15, box=box_from_mask(sphere[15]))


def test_labels_overlap_like_compose_labels_and_carry_names_and_colours():
    volume, sphere, cylinder = _scene()
    session = _session(volume)
    session.set_label(2, name="cylinder", color=(0, 128, 255))
    session.prompt(1, 15, box=box_from_mask(sphere[15]))
    session.prompt(2, 15, box=(18, 18, 50, 50))  # a box over both: takes the sphere (logit 72) and the cylinder (52)
    composed = session.label_slice(15)
    # the sphere's voxels have the same logit in both labels: the first label keeps them, as compose_labels does
    assert np.array_equal(composed == 1, sphere[15])
    assert np.array_equal(composed == 2, cylinder[15])
    label = session.label(2)
    assert (label.name, label.color) == ("cylinder", (0, 128, 255))
    with pytest.raises(PromptError, match="0..255"):
        session.set_label(2, color=(0, 0, 300))
    session.remove_label(2)
    assert [lab.value for lab in session.labels] == [1]
    session.undo()
    assert [lab.value for lab in session.labels] == [1, 2]


def test_bad_prompts_are_refused_with_a_clear_message():
    volume, _, _ = _scene()
    session = _session(volume)
    with pytest.raises(PromptError, match="box or at least one point"):
        session.prompt(1, 15)
    with pytest.raises(PromptError, match="outside the image"):
        session.prompt(1, 15, box=(10, 10, 70, 20))
    with pytest.raises(PromptError, match="slice 30 is outside"):
        session.prompt(1, 30, box=(10, 10, 20, 20))
    with pytest.raises(PromptError, match="1..65535"):
        session.prompt(0, 15, box=(10, 10, 20, 20))
    with pytest.raises(PromptError, match="no label 1"):
        list(session.propagate(1))
    assert session.labels == [] and not session.can_undo


def test_export_round_trip_keeps_the_geometry(tmp_path):
    volume, sphere, _ = _scene()
    volume = Volume(volume.array, spacing=(0.7, 0.8, 2.5), origin=(-10, 20, 30),
                    direction=np.array([[0, 1, 0], [1, 0, 0], [0, 0, -1]], float))
    session = _session(volume)
    session.prompt(1, 15, box=box_from_mask(sphere[15]))
    list(session.propagate(1))
    path = session.export(tmp_path / "out.nii.gz")
    back = promptseg.load_labels(path, reference=volume)
    assert back.same_grid(volume)
    assert np.array_equal(back.array, session.label_map().array)


# -- embedding cache -----------------------------------------------------------
def test_prefetch_encodes_neighbours_in_the_background_so_the_next_prompt_only_decodes():
    volume, sphere, _ = _scene()
    model = ThresholdSegmenter()
    session = Session(volume, model, prefetch=2)
    session.focus(15)
    for z in range(13, 18):
        _wait_for(lambda: session.embedder.is_embedded(z))
    assert 16 in session.embedder.encoded
    session.prompt(1, 16, box=box_from_mask(sphere[16]))
    session.close()  # (the prompt moved the focus: the thread may be encoding slice 18)
    assert session.embedder.encoded.count(16) == 1  # slice 16 was ready: the prompt only decoded
    assert sorted(session.embedder.encoded) == sorted(set(session.embedder.encoded))


def test_memory_budget_and_disk_cache_make_a_reopened_scan_need_no_encoder(tmp_path):
    volume, sphere, _ = _scene()
    one = ThresholdSegmenter().embed(volume.array[0]).features.nbytes
    cache = EmbeddingCache(max_bytes=3 * one, directory=tmp_path / "cache")
    model = ThresholdSegmenter()
    session = Session(volume, model, cache=cache, prefetch=0)
    for z in (10, 11, 12, 13):
        session.embedder.get(z)
    assert len(cache) == 3 and cache.bytes == 3 * one  # slice 10 dropped from memory
    assert model.embedded == 4
    # a new cache on the same folder (a restarted server) reads the files instead of encoding
    fresh = EmbeddingCache(directory=tmp_path / "cache")
    again = Session(volume, model, cache=fresh, prefetch=0)
    emb = again.embedder.get(10)
    assert model.embedded == 4 and fresh.disk_hits == 1
    assert np.array_equal(emb.features, volume.array[10].astype(np.float32))
    # a damaged file is a miss, not an error
    path = next((tmp_path / "cache").glob("*/11.pt"))
    path.write_bytes(b"not a torch file")
    fresh2 = EmbeddingCache(directory=tmp_path / "cache")
    Session(volume, model, cache=fresh2, prefetch=0).embedder.get(11)
    assert model.embedded == 5
    # a different intensity mapping is a different embedding
    other = Session(volume, model, cache=fresh, prefetch=0, window=(100, 50))
    other.embedder.get(10)
    assert model.embedded == 6


def test_one_shared_model_serves_sessions_in_threads_without_cross_talk():
    volume, sphere, cylinder = _scene()
    shared = SharedModel(ThresholdSegmenter())
    cache = EmbeddingCache()
    results = {}

    def work(i):
        session = Session(volume, shared, cache=cache, prefetch=1)
        target = sphere if i % 2 == 0 else cylinder
        session.prompt(1, 15, box=box_from_mask(target[15]))
        list(session.propagate(1))
        results[i] = np.array_equal(session.mask(1), target)
        session.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: True for i in range(8)}


def _wait_for(condition, timeout=20.0):
    import time

    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


# -- the real model ------------------------------------------------------------
@pytest.mark.slow
def test_session_gives_segment_masks_on_the_bundled_ct():
    from model_cache import case, litemedsam

    volume, reference = case("lung1")
    box = (206, 347, 229, 368)
    session = Session(volume, litemedsam(), prefetch=0)
    first = session.prompt(1, 33, box=box)
    events = list(session.propagate(1))
    expected = promptseg.segment(volume, make_object(slice=33, box=box), litemedsam())
    assert np.array_equal(session.mask(1), expected.mask(1))
    assert np.array_equal(first.mask, expected.mask(1)[33])
    assert events[-1].stops == expected.objects[0].stops
    assert promptseg.dice(session.mask(1), reference) == pytest.approx(0.795, abs=0.001)
    assert sorted(session.embedder.encoded) == sorted(set(session.embedder.encoded))
