"""SAM2 / SAM2.1 / MedSAM2 backends against upstream ``sam2`` on real CT slices.

No real weights can be downloaded here, so the networks are upstream's own
architectures (built from the configs packaged in ``sam2``) shrunk by hydra
overrides and randomly initialised, saved exactly as upstream releases them
(``torch.save({"model": state_dict})``). With random weights the masks mean
nothing: these tests check that promptseg loads what upstream loads, refuses
what it should, computes *the same numbers* as upstream's
``SAM2ImagePredictor`` and ``SAM2VideoPredictor`` on the same model object, and
the mechanics of memory propagation (directions, stops, largest component,
encoded slices, geometry), not how good the masks are.
"""

import dataclasses
import functools

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("sam2")

from datafiles import image as case_image
from model_cache import case

import promptseg
from promptseg.errors import CheckpointError
from promptseg.models import sam2 as sam2_module
from promptseg.models.sam2 import (
    SAM21_ONLY_KEYS,
    VARIANTS,
    SAM2Segmenter,
    SAM2TrainingView,
    build_network,
    detect_architecture,
    load_sam2_weights,
)
from promptseg.inference.memory import propagate_with_memory, results_from_tracks, tracks_from_prompts
from promptseg.models.sam2_memory import NO_OBJECT_LOGIT, Seed, Track, keep_largest_component, track
from promptseg.prompts import Point, make_object
from promptseg.models.base import half_logits
from promptseg.stops import StopReason

#: model input side of the test networks (upstream works at 256: the RoPE feature size follows)
SIZE = 256
#: the tumour of lung1 (slices 32-34): a box around it on its middle slice
TUMOUR_Z, TUMOUR_BOX = 33, (206.0, 347.0, 229.0, 368.0)
FAMILIES = ("sam2-hiera-tiny", "sam2.1-hiera-tiny")
#: random-weight seeds of the test checkpoints (with these the object score is positive on the
#: lung slices tracked below, so propagation has masks to carry)
SEEDS = {"sam2-hiera-tiny": 3, "sam2.1-hiera-tiny": 0}

def memory_on_model(model, frames, prompts, **options):
    """Memory propagation with an upstream SAM2 model (no segmenter): prompts -> tracks -> results."""
    tracks = tracks_from_prompts(prompts, tuple(frames.shape[:3]))
    encoded = track(model, frames, tracks, **options)
    return results_from_tracks(prompts, tracks), encoded


def texts(stops):
    """``{direction: str(stop)}``: the stops as the sentences users read."""
    return {d: str(s) for d, s in stops.items()}



def tiny(image_size=SIZE, width=8, stages="[1,1,2,1]", global_blocks="[3]"):
    """Hydra overrides shrinking a packaged SAM2 config to under a million parameters.

    A Hiera with 5 blocks of width ``width`` (upstream refuses a global-attention block at a
    stage change, hence ``[1,1,2,1]`` with block 3 global), a 32-wide neck / SAM heads,
    one memory-attention layer and a 16-wide memory. ``image_size=None`` keeps the
    variant's own input size (and RoPE feature size).
    """
    d, m = 32, 16
    channels = [8 * width, 4 * width, 2 * width, width]
    out = [
        f"++model.image_encoder.trunk.embed_dim={width}",
        f"++model.image_encoder.trunk.stages={stages}",
        f"++model.image_encoder.trunk.global_att_blocks={global_blocks}",
        f"++model.image_encoder.neck.backbone_channel_list=[{','.join(map(str, channels))}]",
        f"++model.image_encoder.neck.d_model={d}",
        f"++model.image_encoder.neck.position_encoding.num_pos_feats={d}",
        f"++model.memory_attention.d_model={d}",
        "++model.memory_attention.num_layers=1",
        f"++model.memory_attention.layer.d_model={d}",
        "++model.memory_attention.layer.dim_feedforward=64",
        f"++model.memory_attention.layer.self_attention.embedding_dim={d}",
        f"++model.memory_attention.layer.cross_attention.embedding_dim={d}",
        f"++model.memory_attention.layer.cross_attention.kv_in_dim={m}",
        f"++model.memory_encoder.out_dim={m}",
        f"++model.memory_encoder.in_dim={d}",
        f"++model.memory_encoder.position_encoding.num_pos_feats={m}",
        f"++model.memory_encoder.mask_downsampler.embed_dim={d}",
        f"++model.memory_encoder.fuser.layer.dim={d}",
        "++model.memory_encoder.fuser.num_layers=1",
    ]
    if image_size is not None:
        feat = image_size // 16
        out += [f"++model.image_size={image_size}",
                f"++model.memory_attention.layer.self_attention.feat_sizes=[{feat},{feat}]",
                f"++model.memory_attention.layer.cross_attention.feat_sizes=[{feat},{feat}]"]
    return out


TINY = tiny()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These networks are tiny: one thread is as fast, and far faster when other jobs share the CPUs."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _random_network(name, overrides=TINY, seed=0):
    torch.manual_seed(seed)
    return build_network(VARIANTS[name], overrides)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """``{backend: checkpoint}`` in upstream's release format, plus the state dicts saved."""
    root = tmp_path_factory.mktemp("sam2_weights")
    paths, states = {}, {}
    for name in FAMILIES:
        state = _random_network(name, seed=SEEDS[name]).state_dict()
        paths[name] = root / f"{name}.pt"
        torch.save({"model": state}, paths[name])
        states[name] = state
    return paths, states


@pytest.fixture(scope="module")
def segmenters(weights):
    paths, _ = weights
    return {name: SAM2Segmenter(name, paths[name], hydra_overrides=TINY) for name in FAMILIES}


@pytest.fixture(scope="module")
def lung():
    """(Volume, normalised uint8 slices (Z, H, W), reference mask) of the bundled lung CT."""
    volume, reference = case("lung1")
    return volume, np.asarray(promptseg.normalize(volume)), reference


def _same_weights(model, state):
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


# ---------------------------------------------------------------------------
# (a) checkpoints
def _finetuned_layout(state, name):
    """What promptseg's training loop writes (best.pt): the training view's keys plus metadata."""
    from promptseg.training.trainable import inference_state_dict

    net = build_network(VARIANTS[name], TINY)
    net.load_state_dict(state)
    weights = inference_state_dict(SAM2TrainingView(net))
    assert any(k.startswith("mask_decoder.") for k in weights) and not any(k.startswith("sam_mask_decoder.") for k in weights)
    return {"model": weights, "epoch": 3, "val_dice": 0.5, "model_name": name, "config": {"model": {"name": name}}}


LAYOUTS = {
    "upstream": lambda state, name: {"model": state},
    "plain": lambda state, name: dict(state),
    "state_dict": lambda state, name: {"state_dict": state, "epoch": 7},
    "ddp": lambda state, name: {"model": {f"module.{k}": v for k, v in state.items()}},
    "lightning": lambda state, name: {"state_dict": {f"model.{k}": v for k, v in state.items()}},
    "finetuned": _finetuned_layout,
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_checkpoint_layout_loads_exactly(weights, tmp_path, layout):
    _, states = weights
    name = "sam2.1-hiera-tiny"
    path = tmp_path / "weights.pt"
    torch.save(LAYOUTS[layout](states[name], name), path)
    seg = SAM2Segmenter(name, path, hydra_overrides=TINY)
    _same_weights(seg.model, states[name])
    from promptseg.models.checkpoint import file_digest

    assert seg.weights_digest == file_digest(path)
    assert "sha256" in seg.describe() and "256 px" in seg.describe()


def test_a_finetuned_sam2_checkpoint_loads_too(weights, tmp_path):
    _, states = weights
    path = tmp_path / "tuned.pt"
    torch.save(_finetuned_layout(states["sam2-hiera-tiny"], "sam2-hiera-tiny"), path)
    _same_weights(SAM2Segmenter("sam2-hiera-tiny", path, hydra_overrides=TINY).model, states["sam2-hiera-tiny"])


def test_generation_mismatch_names_the_backend_to_use(weights):
    paths, _ = weights
    with pytest.raises(CheckpointError) as e:
        SAM2Segmenter("sam2.1-hiera-tiny", paths["sam2-hiera-tiny"], hydra_overrides=TINY)
    msg = str(e.value)
    assert str(paths["sam2-hiera-tiny"]) in msg and "is a SAM2 Hiera" in msg
    assert "lacks no_obj_embed_spatial" in msg and "use --model sam2-hiera-tiny" in msg
    assert "\n" not in msg
    with pytest.raises(CheckpointError) as e:
        SAM2Segmenter("sam2-hiera-tiny", paths["sam2.1-hiera-tiny"], hydra_overrides=TINY)
    msg = str(e.value)
    assert "is a SAM2.1 Hiera" in msg and "holds no_obj_embed_spatial, obj_ptr_tpos_proj.weight" in msg
    assert "use --model sam2.1-hiera-tiny (or medsam2" in msg


def test_medsam2_checkpoint_into_another_backend(weights, tmp_path, caplog):
    """MedSAM2 and SAM2.1-tiny checkpoints have identical keys: it loads, with a warning about 512 px."""
    _, states = weights
    path = tmp_path / "MedSAM2_latest.pt"
    torch.save({"model": states["sam2.1-hiera-tiny"]}, path)
    with caplog.at_level("WARNING", logger="promptseg.models.sam2"):
        SAM2Segmenter("sam2.1-hiera-tiny", path, hydra_overrides=TINY)
    assert "looks like MedSAM2 weights" in caplog.text and "--model medsam2" in caplog.text
    with pytest.raises(CheckpointError, match="use --model sam2.1-hiera-tiny"):
        SAM2Segmenter("sam2-hiera-tiny", path, hydra_overrides=TINY)


def test_wrong_hiera_size_is_refused(weights, tmp_path):
    # a real (random) network with a wider, deeper trunk
    other = build_network(VARIANTS["sam2.1-hiera-tiny"], tiny(width=16, stages="[1,1,3,1]", global_blocks="[4]"))
    path = tmp_path / "wider.pt"
    torch.save({"model": other.state_dict()}, path)
    with pytest.raises(CheckpointError) as e:
        SAM2Segmenter("sam2.1-hiera-tiny", path, hydra_overrides=TINY)
    msg = str(e.value)
    assert "SAM2.1 Hiera with 6 blocks of width 16 checkpoint" in msg
    assert "SAM2.1 Hiera with 5 blocks of width 8 model" in msg
    # a trunk of a released size (width 96, 16 blocks = Hiera-small) is named as such: the
    # architecture check runs before the key check, so the trunk's tell-tale tensors suffice
    small = {"image_encoder.trunk.patch_embed.proj.weight": torch.zeros(96, 3, 7, 7)}
    small.update({f"image_encoder.trunk.blocks.{i}.norm1.weight": torch.zeros(96) for i in range(16)})
    small.update({k: torch.zeros(1) for k in SAM21_ONLY_KEYS})
    torch.save({"model": small}, tmp_path / "small.pt")
    with pytest.raises(CheckpointError, match=r"is a SAM2\.1 Hiera-small checkpoint .* use --model sam2\.1-hiera-small$"):
        SAM2Segmenter("sam2.1-hiera-tiny", tmp_path / "small.pt", hydra_overrides=TINY)


def _drop(state):
    state = dict(state)
    del state["sam_mask_decoder.iou_token.weight"]
    return state, "missing keys: sam_mask_decoder.iou_token.weight"


def _extra(state):
    return {**state, "sam_mask_decoder.extra_head.weight": torch.zeros(3)}, "unexpected keys: sam_mask_decoder.extra_head.weight"


def _reshape(state):
    key = "sam_prompt_encoder.point_embeddings.0.weight"
    return {**state, key: torch.zeros(1, 7)}, f"shape mismatches: {key} (1, 7) != (1, 32)"


def _drop_sam21_key(state):
    state = dict(state)
    del state["no_obj_embed_spatial"]
    return state, "missing keys: no_obj_embed_spatial"


@pytest.mark.parametrize("edit", [_drop, _extra, _reshape, _drop_sam21_key], ids=lambda f: f.__name__.strip("_"))
def test_key_problems_are_named(weights, tmp_path, edit):
    _, states = weights
    state, expected = edit(states["sam2.1-hiera-tiny"])
    path = tmp_path / "edited.pt"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError) as e:
        SAM2Segmenter("sam2.1-hiera-tiny", path, hydra_overrides=TINY)
    assert expected in str(e.value) and str(path) in str(e.value)


@pytest.mark.parametrize("name,file,source", [
    ("sam2.1-hiera-tiny", "sam2.1_hiera_tiny.pt", "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"),
    ("sam2-hiera-large", "sam2_hiera_large.pt", "https://dl.fbaipublicfiles.com/segment_anything_2/072824/"),
    ("medsam2", "MedSAM2_latest.pt", "huggingface.co/wanglab/MedSAM2"),
])
def test_missing_weights_name_the_file_and_where_to_get_it(segmenters, tmp_path, name, file, source):
    from promptseg.models.registry import build_segmenter

    missing = tmp_path / "missing.pt"
    for build in (lambda: SAM2Segmenter(name, missing), lambda: build_segmenter(name, checkpoint=missing)):
        with pytest.raises(CheckpointError) as e:
            build()
        assert str(missing) in str(e.value) and file in str(e.value) and source in str(e.value)
    if name in segmenters:  # the loader itself says so too
        with pytest.raises(CheckpointError, match=f"checkpoint not found: {missing} .*{source}"):
            load_sam2_weights(segmenters[name].model, missing, VARIANTS[name])
    for build in (lambda: SAM2Segmenter(name, None), lambda: build_segmenter(name)):
        with pytest.raises(CheckpointError) as e:
            build()
        assert "needs weights" in str(e.value) and file in str(e.value) and source in str(e.value)


def test_an_unbuildable_config_is_one_line():
    from promptseg.errors import ModelError

    with pytest.raises(ModelError) as e:
        build_network(VARIANTS["sam2.1-hiera-tiny"], ["++model.image_encoder.trunk.stages=[1]"])
    msg = str(e.value)
    assert msg.startswith("cannot build sam2.1-hiera-tiny from sam2's configs/sam2.1/sam2.1_hiera_t.yaml: ")
    assert "hieradet.Hiera" in msg and "\n" not in msg


# ---------------------------------------------------------------------------
# (b) 2D: the same numbers as SAM2ImagePredictor
@pytest.fixture(scope="module")
def image_predictors(segmenters, lung):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    _, slices, _ = lung
    grey = slices[TUMOUR_Z]
    out = {}
    for name, seg in segmenters.items():
        predictor = SAM2ImagePredictor(seg.model)
        # upstream hard-codes the feature sizes of a 1024 px model; ours are SIZE / 4, / 8, / 16
        predictor._bb_feat_sizes = [(SIZE // 4, SIZE // 4), (SIZE // 8, SIZE // 8), (SIZE // 16, SIZE // 16)]
        predictor.set_image(np.repeat(grey[..., None], 3, axis=2))  # grey -> RGB uint8
        out[name] = (predictor, seg.embed(grey))
    return out


PROMPTS_2D = {
    "box": {"box": TUMOUR_BOX},
    "point": {"points": [[217.0, 357.0]], "point_labels": [1]},
    "box+points": {"box": TUMOUR_BOX, "points": [[217.0, 357.0], [240.0, 357.0]], "point_labels": [1, 0]},
    "points": {"points": [[217.0, 357.0], [221.0, 350.0], [150.0, 300.0]], "point_labels": [1, 1, 0]},
}


def test_embedding_equals_set_image(image_predictors):
    for predictor, emb in image_predictors.values():
        assert emb.original_size == (512, 512) and emb.input_size == (SIZE, SIZE)
        assert torch.equal(emb.features["image_embed"], predictor._features["image_embed"])
        for ours, theirs in zip(emb.features["high_res_feats"], predictor._features["high_res_feats"], strict=True):
            assert torch.equal(ours, theirs)


@pytest.mark.parametrize("prompt", sorted(PROMPTS_2D))
@pytest.mark.parametrize("name", FAMILIES)
def test_decode_equals_sam2_image_predictor(segmenters, image_predictors, name, prompt):
    seg, (predictor, emb) = segmenters[name], image_predictors[name]
    p = PROMPTS_2D[prompt]
    box = None if "box" not in p else np.asarray(p["box"], dtype=np.float32)
    points = None if "points" not in p else np.asarray(p["points"], dtype=np.float32)
    labels = None if "points" not in p else np.asarray(p["point_labels"])
    multimask = box is None and len(points) == 1  # upstream's advice; what decode does
    logits, scores, _ = predictor.predict(point_coords=points, point_labels=labels, box=box,
                                          multimask_output=multimask, return_logits=True)
    best = int(np.argmax(scores))
    assert logits.shape == ((3 if multimask else 1), 512, 512)
    pred = seg.decode(emb, box=box, points=points, point_labels=labels)
    assert pred.logits.shape == (512, 512) and pred.logits.dtype == np.float32
    np.testing.assert_allclose(pred.logits, logits[best], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(pred.mask, logits[best] > 0)
    assert pred.score == pytest.approx(float(scores[best]), abs=1e-6)
    assert pred.mask.any()


def test_decode_equals_upstream_on_a_non_square_slice(segmenters, lung):
    """x and y scale differently to the square model input: a 160 x 192 crop, RGB input."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    _, slices, _ = lung
    seg = segmenters["sam2.1-hiera-tiny"]
    crop = np.repeat(slices[TUMOUR_Z, 280:440, 120:312, None], 3, axis=2)
    predictor = SAM2ImagePredictor(seg.model)
    predictor._bb_feat_sizes = [(SIZE // 4, SIZE // 4), (SIZE // 8, SIZE // 8), (SIZE // 16, SIZE // 16)]
    predictor.set_image(crop)
    box = np.array([86.0, 67.0, 109.0, 88.0], dtype=np.float32)
    points, labels = np.array([[97.0, 77.0], [150.0, 20.0]], dtype=np.float32), np.array([1, 0])
    logits, scores, _ = predictor.predict(point_coords=points, point_labels=labels, box=box,
                                          multimask_output=False, return_logits=True)
    pred = seg.decode(seg.embed(crop), box=box, points=points, point_labels=labels)
    assert pred.logits.shape == (160, 192)
    np.testing.assert_allclose(pred.logits, logits[0], rtol=0, atol=1e-5)
    assert pred.score == pytest.approx(float(scores[0]), abs=1e-6)


# ---------------------------------------------------------------------------
# (c) memory propagation: the same masks as SAM2VideoPredictor on a JPEG folder
#: slices 29-36 of lung1 around the tumour, cropped (non-square, so x and y scale differently)
CLIP_Z, CLIP_ROWS, CLIP_COLS = (29, 37), (280, 440), (120, 312)
CLIP_PROMPT = TUMOUR_Z - CLIP_Z[0]
CLIP_BOX = (TUMOUR_BOX[0] - CLIP_COLS[0], TUMOUR_BOX[1] - CLIP_ROWS[0],
            TUMOUR_BOX[2] - CLIP_COLS[0], TUMOUR_BOX[3] - CLIP_ROWS[0])


@pytest.fixture(scope="module")
def jpeg_clip(lung, tmp_path_factory):
    """A folder 0.jpg, 1.jpg, ... of real slices, and those JPEGs read back as uint8 (Z, H, W)."""
    _, slices, _ = lung
    folder = tmp_path_factory.mktemp("jpeg_frames")
    clip = slices[CLIP_Z[0]:CLIP_Z[1], CLIP_ROWS[0]:CLIP_ROWS[1], CLIP_COLS[0]:CLIP_COLS[1]]
    for i, frame in enumerate(clip):
        Image.fromarray(frame).save(folder / f"{i}.jpg", quality=95)
    frames = np.stack([np.asarray(Image.open(folder / f"{i}.jpg")) for i in range(len(clip))])
    assert frames.dtype == np.uint8 and frames.shape == clip.shape
    return str(folder), frames


def _upstream_protocol(model, folder, frame, box=None, points=None, labels=None):
    """MedSAM2's protocol with upstream calls: prompt, propagate up; reset, prompt again, propagate down.

    Returns ``{frame: (logits (H, W) float32, object score logit)}`` per direction.
    """
    state = model.init_state(video_path=folder)
    out = {}
    for reverse in (False, True):
        model.reset_state(state)
        model.add_new_points_or_box(state, frame_idx=frame, obj_id=1, box=box, points=points, labels=labels)
        found = {}
        for f, obj_ids, masks in model.propagate_in_video(state, reverse=reverse):
            assert obj_ids == [1] and masks.shape[:2] == (1, 1)
            outputs = state["output_dict_per_obj"][0]
            step = outputs["cond_frame_outputs"].get(f) or outputs["non_cond_frame_outputs"][f]
            found[f] = (masks[0, 0].numpy().copy(), float(step["object_score_logits"].reshape(-1)[0]))
        out["down" if reverse else "up"] = found
    return out


VIDEO_PROMPTS = {
    "box": {"box": CLIP_BOX},
    "box+points": {"box": CLIP_BOX, "points": [Point(97, 77), Point(120, 77, positive=False)]},
    "point": {"points": [Point(97, 77)]},
}


#: (backend, seed, what the object score does on the clip with these random weights)
VIDEO_CASES = [
    ("sam2-hiera-tiny", SEEDS["sam2-hiera-tiny"], "present everywhere"),
    ("sam2.1-hiera-tiny", SEEDS["sam2.1-hiera-tiny"], "present everywhere"),
    ("sam2-hiera-tiny", 2, "only on the prompted slice"),
    ("sam2.1-hiera-tiny", 3, "everywhere but the prompted slice"),
]


@functools.cache
def _clip_network(name, seed):
    return _random_network(name, seed=seed)


@pytest.mark.parametrize("prompt", sorted(VIDEO_PROMPTS))
@pytest.mark.parametrize("name,seed,expected", VIDEO_CASES, ids=[f"{n}-seed{s}" for n, s, _ in VIDEO_CASES])
def test_memory_propagation_equals_sam2_video_predictor(segmenters, jpeg_clip, name, seed, expected, prompt):
    folder, frames = jpeg_clip
    model = segmenters[name].model if seed == SEEDS[name] else _clip_network(name, seed)
    obj = make_object(slice=CLIP_PROMPT, **VIDEO_PROMPTS[prompt])
    coords, labels = obj.slices[CLIP_PROMPT].point_arrays()
    box = None if obj.slices[CLIP_PROMPT].box is None else np.asarray(obj.slices[CLIP_PROMPT].box, dtype=np.float32)
    upstream = _upstream_protocol(model, folder, CLIP_PROMPT, box=box, points=coords, labels=labels)
    assert sorted(upstream["up"]) == list(range(CLIP_PROMPT, len(frames)))
    assert sorted(upstream["down"]) == list(range(CLIP_PROMPT + 1))

    # stop_after=None: tracked to both ends whatever the object score, as upstream does
    (result,), encoded = memory_on_model(model, frames, [obj], stop_after=None)
    # each slice encoded once: the prompted one, then up, then down
    assert encoded == list(range(CLIP_PROMPT, len(frames))) + list(range(CLIP_PROMPT - 1, -1, -1))
    assert texts(result.stops) == {"up": "end of volume", "down": "end of volume"}
    assert {s.reason for s in result.stops.values()} == {StopReason.END_OF_VOLUME}
    np.testing.assert_array_equal(upstream["up"][CLIP_PROMPT][0], upstream["down"][CLIP_PROMPT][0])
    for f in range(len(frames)):
        logits, score = upstream["up" if f >= CLIP_PROMPT else "down"][f]
        if score > 0 and (logits > 0).any():
            ours = result.logits[f]
            assert ours.shape == frames.shape[1:] and ours.dtype == np.float16
            # promptseg stores float16 logits: exactly upstream's float32 logits rounded, except
            # that a positive logit rounding to 0 keeps its sign (half_logits), so the mask is kept
            np.testing.assert_array_equal(ours, half_logits(logits))
            changed = ours != logits.astype(np.float16)
            assert ((logits[changed] > 0) & (logits[changed] < 2.0**-24)).all()
            np.testing.assert_array_equal(ours > 0, logits > 0)
            assert result.scores[f] == pytest.approx(1 / (1 + np.exp(-score)), abs=1e-12)
        else:
            assert f not in result.logits and not (logits > 0).any()
    others = set(range(len(frames))) - {CLIP_PROMPT}
    if expected == "present everywhere":
        assert result.slices == list(range(len(frames)))
    elif expected == "only on the prompted slice":
        assert result.slices == [CLIP_PROMPT]
    else:
        assert set(result.slices) == others


def test_key_slices_equal_upstream_with_several_conditioning_slices(segmenters, jpeg_clip):
    """Boxes on two key slices are two conditioning slices; the slices between follow from memory."""
    folder, frames = jpeg_clip
    model = segmenters["sam2.1-hiera-tiny"].model
    low, high = 1, 6
    shift = np.array([3.0, -2.0, 3.0, -2.0])
    keys = {low: CLIP_BOX, high: tuple(np.asarray(CLIP_BOX) + shift)}
    state = model.init_state(video_path=folder)
    for z, box in keys.items():
        model.add_new_points_or_box(state, frame_idx=z, obj_id=1, box=np.asarray(box, dtype=np.float32))
    upstream = {f: masks[0, 0].numpy().copy() for f, _, masks in model.propagate_in_video(state)}

    (result,), encoded = memory_on_model(model, frames, [make_object(key_boxes=keys)], stop_after=1)
    # upstream's one-slice feature cache encodes the key slices again when their masks
    # enter the memory; then every slice between them once
    assert encoded == [low, high, low, high] + list(range(low + 1, high))
    assert result.slices == list(range(low, high + 1)) and result.stops == {}
    for f in range(low, high + 1):
        np.testing.assert_array_equal(result.logits[f], upstream[f].astype(np.float16))


# ---------------------------------------------------------------------------
# (d) memory propagation through promptseg.segment on the real volume
@pytest.fixture(scope="module")
def tumour_run(segmenters, lung):
    volume, _, _ = lung
    seg = segmenters["sam2.1-hiera-tiny"]
    assert seg.stop_after == 1 and not seg.largest_component
    obj = make_object(slice=TUMOUR_Z, box=TUMOUR_BOX, label=1, name="tumour")
    return promptseg.segment(volume, [obj], seg, mode="3d", propagation="memory")


def _same_grid(labels, volume):
    assert labels.array.shape == volume.shape
    assert labels.spacing == volume.spacing and labels.origin == volume.origin
    np.testing.assert_array_equal(labels.direction, volume.direction)


def test_segment_with_memory_propagates_both_ways_on_the_input_grid(tumour_run, lung):
    volume, _, _ = lung
    result = tumour_run
    _same_grid(result.labels, volume)
    (obj,) = result.objects
    depth = volume.shape[0]
    zs = obj.slices
    assert TUMOUR_Z in zs and min(zs) < TUMOUR_Z < max(zs)
    # with these random weights the object score stays positive: tracked to both ends
    assert texts(obj.stops) == {"up": "end of volume", "down": "end of volume"}
    assert zs == list(range(depth))
    assert result.encoded_slices == list(range(TUMOUR_Z, depth)) + list(range(TUMOUR_Z - 1, -1, -1))
    assert all(0.5 < s < 1 for s in obj.scores.values())
    for z in zs:
        np.testing.assert_array_equal(result.labels.array[z] == 1, obj.logits[z] > 0)
    assert set(np.unique(result.labels.array)) == {0, 1}


def test_segment_with_memory_keeps_the_largest_component(weights, tumour_run, lung):
    from scipy import ndimage

    paths, _ = weights
    volume, _, _ = lung
    seg = SAM2Segmenter("sam2.1-hiera-tiny", paths["sam2.1-hiera-tiny"], hydra_overrides=TINY, largest_component=True)
    obj = make_object(slice=TUMOUR_Z, box=TUMOUR_BOX, label=1)
    result = promptseg.segment(volume, [obj], seg, mode="3d", propagation="memory")
    _same_grid(result.labels, volume)
    full = tumour_run.labels.array == 1
    kept = result.labels.array == 1
    cube = np.ones((3, 3, 3), dtype=bool)
    components = ndimage.label(full, structure=cube)[1]
    assert components > 1  # the random masks are fragmented, so the option has work to do
    assert ndimage.label(kept, structure=cube)[1] == 1
    sizes = np.bincount(ndimage.label(full, structure=cube)[0].ravel())[1:]
    assert kept.sum() == sizes.max() and not (kept & ~full).any()
    for z, logits in result.objects[0].logits.items():
        assert (logits > 0).any()
        np.testing.assert_array_equal(logits > 0, kept[z])


def test_keep_largest_component_mechanics():
    result = Track(seeds={1: Seed(box=np.array([0, 0, 5, 5], dtype=np.float32))}, low=0, high=7)
    big = np.full((8, 8), -3.0, dtype=np.float16)
    big[1:4, 1:4] = 2.0
    for z in (0, 1, 2):
        result.logits[z] = big.copy()
        result.scores[z] = 0.9
    small = np.full((8, 8), -3.0, dtype=np.float16)
    small[6, 6] = 5.0  # a second blob on slice 1, not 26-connected to the first
    result.logits[1][6, 6] = 5.0
    result.logits[4] = small  # and one on slice 4 alone (slice 3 is empty)
    result.scores[4] = 0.8
    keep_largest_component(result)
    assert sorted(result.logits) == [0, 1, 2] and sorted(result.scores) == [0, 1, 2]
    assert result.logits[1][6, 6] == NO_OBJECT_LOGIT
    for z in (0, 1, 2):
        np.testing.assert_array_equal(result.logits[z] > 0, big > 0)


def test_several_objects_are_tracked_independently_and_slices_encoded_once_per_pass(segmenters, tumour_run, lung):
    volume, _, _ = lung
    seg = segmenters["sam2.1-hiera-tiny"]
    tumour = make_object(slice=TUMOUR_Z, box=TUMOUR_BOX, label=1, name="tumour")
    heart = make_object(slice=TUMOUR_Z, box=(230.0, 250.0, 330.0, 330.0), z_range=(28, 38), label=2, name="heart")
    spine = make_object(slice=20, box=(230.0, 380.0, 290.0, 440.0), z_range=(15, 25), label=3, name="spine")
    result = promptseg.segment(volume, [tumour, heart, spine], seg, mode="3d", propagation="memory")
    _same_grid(result.labels, volume)
    depth = volume.shape[0]
    # one pass per prompted slice, in slice order; within a pass every slice is encoded once
    # for all of its objects (the heart's slices 28-38 are the tumour's too)
    pass20 = list(range(20, 26)) + list(range(19, 14, -1))
    pass33 = list(range(TUMOUR_Z, depth)) + list(range(TUMOUR_Z - 1, -1, -1))
    assert result.encoded_slices == pass20 + pass33
    assert [o.prompt.label for o in result.objects] == [1, 2, 3]
    # objects do not see each other: the tumour comes out exactly as when segmented alone
    alone = tumour_run.objects[0]
    assert result.objects[0].slices == alone.slices and result.objects[0].stops == alone.stops
    for z in alone.slices:
        np.testing.assert_array_equal(result.objects[0].logits[z], alone.logits[z])
        assert result.objects[0].scores[z] == alone.scores[z]
    for obj, (low, high) in zip(result.objects[1:], [(28, 38), (15, 25)]):
        assert texts(obj.stops) == {"up": "end of z-range", "down": "end of z-range"}
        assert obj.slices and low <= obj.slices[0] < obj.prompt.start_slice < obj.slices[-1] <= high
    labels = result.labels.array
    for label, (low, high) in ((2, (28, 38)), (3, (15, 25))):
        zs = np.nonzero((labels == label).any(axis=(1, 2)))[0]
        assert zs.size and low <= zs.min() and zs.max() <= high


@pytest.fixture(scope="module")
def absent_segmenter(weights, tmp_path_factory):
    """SAM2.1 weights whose object-score head always says "no object" (logit -5).

    Slices tracked from memory then have no object; a *mask* prompt still makes its own
    slice present (SAM2 takes the object score of a mask input from the mask itself).
    """
    _, states = weights
    state = dict(states["sam2.1-hiera-tiny"])
    head = "sam_mask_decoder.pred_obj_score_head.layers.2"
    state[f"{head}.weight"] = torch.zeros_like(state[f"{head}.weight"])
    state[f"{head}.bias"] = torch.full_like(state[f"{head}.bias"], -5.0)
    path = tmp_path_factory.mktemp("absent") / "absent.pt"
    torch.save({"model": state}, path)
    return SAM2Segmenter("sam2.1-hiera-tiny", path, hydra_overrides=TINY)


def test_no_object_on_the_prompted_slice_stops_at_once(absent_segmenter, lung):
    volume, _, _ = lung
    obj = make_object(slice=TUMOUR_Z, box=TUMOUR_BOX)
    result = promptseg.segment(volume, [obj], absent_segmenter, mode="3d", propagation="memory")
    reason = "no object found on the prompted slice"
    assert texts(result.objects[0].stops) == {"up": reason, "down": reason}
    assert result.objects[0].stops["up"].reason is StopReason.NOTHING_ON_PROMPTED_SLICE
    assert result.objects[0].slices == [] and not result.labels.array.any()
    assert result.encoded_slices == [TUMOUR_Z]


@pytest.mark.parametrize("stop_after", [1, 2, 3, None])
def test_stop_on_object_score(absent_segmenter, lung, stop_after):
    _, slices, reference = lung
    z = TUMOUR_Z
    obj = make_object(slice=z, box=TUMOUR_BOX, label=1)
    (result,), encoded = propagate_with_memory(
        absent_segmenter, slices, [obj], masks={1: {z: reference[z]}}, stop_after=stop_after)
    assert result.slices == [z]  # the mask prompt's slice only
    assert result.scores[z] == pytest.approx(1 / (1 + np.exp(-10.0)))
    if stop_after is None:
        assert texts(result.stops) == {"up": "end of volume", "down": "end of volume"}
        assert encoded == list(range(z, len(slices))) + list(range(z - 1, -1, -1))
        return
    # each direction stops after stop_after slices without the object, counted per direction
    assert result.stops["up"].reason is StopReason.NO_OBJECT_SCORE and result.stops["up"].slice == z + stop_after
    assert texts(result.stops) == {
        "up": f"slice {z + stop_after}: no object (SAM2 object score logit -5.00)",
        "down": f"slice {z - stop_after}: no object (SAM2 object score logit -5.00)",
    }
    assert encoded == list(range(z, z + stop_after + 1)) + list(range(z - 1, z - stop_after - 1, -1))


def test_a_z_range_ignores_the_object_score(absent_segmenter, lung):
    volume, _, reference = lung
    obj = make_object(slice=TUMOUR_Z, box=TUMOUR_BOX, z_range=(30, 36))
    (result,), encoded = propagate_with_memory(
        absent_segmenter, np.asarray(promptseg.normalize(volume)), [obj], masks={1: {TUMOUR_Z: reference[TUMOUR_Z]}})
    assert encoded == [33, 34, 35, 36, 32, 31, 30]
    assert result.slices == [TUMOUR_Z]
    assert texts(result.stops) == {"up": "end of z-range", "down": "end of z-range"}


def test_mask_prompts_are_checked(segmenters, lung):
    from promptseg.errors import PromptError

    _, slices, reference = lung
    seg = segmenters["sam2.1-hiera-tiny"]
    obj = make_object(slice=TUMOUR_Z, box=TUMOUR_BOX, label=1)
    with pytest.raises(PromptError, match="labels \\[2\\]"):
        propagate_with_memory(seg, slices, [obj], masks={2: {TUMOUR_Z: reference[TUMOUR_Z]}})
    with pytest.raises(PromptError, match="slice 30, which has no prompt"):
        propagate_with_memory(seg, slices, [obj], masks={1: {30: reference[30]}})
    with pytest.raises(PromptError, match="stop_after"):
        propagate_with_memory(seg, slices, [obj], stop_after=-1)
    with pytest.raises(ValueError, match="stop_after"):  # the engine itself: >= 1 or None
        seg.propagate_memory(slices, tracks_from_prompts([obj], slices.shape[:3]), stop_after=0)


# ---------------------------------------------------------------------------
# (e) MedSAM2 and architecture detection at full size
def test_medsam2_is_sam21_tiny_at_512_px():
    full = build_network(VARIANTS["medsam2"])
    assert full.image_size == 512
    arch = detect_architecture(full.state_dict())
    assert (arch.family, arch.size) == ("sam2.1", "tiny") and arch.describe() == "SAM2.1 Hiera-tiny"
    reference = build_network(VARIANTS["sam2.1-hiera-tiny"]).state_dict()
    assert {k: v.shape for k, v in full.state_dict().items()} == {k: v.shape for k, v in reference.items()}
    sam2_tiny = detect_architecture(build_network(VARIANTS["sam2-hiera-tiny"]).state_dict())
    assert (sam2_tiny.family, sam2_tiny.size) == ("sam2", "tiny")


def test_medsam2_backend_runs_at_512(lung, tmp_path):
    _, slices, _ = lung
    overrides = tiny(image_size=None)  # keep medsam2's 512 px and its 32 x 32 RoPE grid
    path = tmp_path / "MedSAM2_latest.pt"
    torch.save({"model": _random_network("medsam2", overrides).state_dict()}, path)
    seg = SAM2Segmenter("medsam2", path, hydra_overrides=overrides)
    assert seg.input_size == 512 and seg.name == "medsam2"
    emb = seg.embed(slices[TUMOUR_Z])
    assert tuple(emb.features["image_embed"].shape) == (1, 32, 32, 32)
    assert seg.decode(emb, box=TUMOUR_BOX).logits.shape == (512, 512)
    clip = slices[32:35, 256:448, 128:320]
    obj = make_object(slice=1, box=(TUMOUR_BOX[0] - 128, TUMOUR_BOX[1] - 256, TUMOUR_BOX[2] - 128, TUMOUR_BOX[3] - 256))
    (result,), encoded = propagate_with_memory(seg, clip, [obj], stop_after=None)
    assert encoded == [1, 2, 0]
    assert all(v.shape == (192, 192) for v in result.logits.values())


# ---------------------------------------------------------------------------
# (f) command line
def test_cli_memory_propagation_matches_the_api(segmenters, weights, lung, tmp_path, monkeypatch, capsys):
    from promptseg.cli import main
    from promptseg.io import load_labels, load_volume

    paths, _ = weights
    name = "sam2.1-hiera-tiny"
    variant = VARIANTS[name]
    monkeypatch.setitem(sam2_module.VARIANTS, name, dataclasses.replace(variant, overrides=variant.overrides + tuple(TINY)))
    out = tmp_path / "tumour.nrrd"
    code = main(["segment", str(case_image("lung1")), "-o", str(out), "--model", name, "--checkpoint", str(paths[name]),
                 "--box", ",".join(f"{v:g}" for v in TUMOUR_BOX), "--slice", str(TUMOUR_Z), "--3d",
                 "--propagation", "memory", "--z-range", "30,36", "--no-progress"])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "label 1 (object 1): slices 30-36" in stdout
    assert "stopped up: end of z-range; down: end of z-range" in stdout

    volume, _, _ = lung
    obj = make_object(slice=TUMOUR_Z, box=TUMOUR_BOX, z_range=(30, 36))
    api = promptseg.segment(volume, [obj], segmenters[name], mode="3d", propagation="memory")
    assert api.encoded_slices == [33, 34, 35, 36, 32, 31, 30]
    written = load_labels(out, reference=volume)
    np.testing.assert_array_equal(written.array, api.labels.array)
    assert written.array[:30].sum() == 0 and written.array[37:].sum() == 0 and written.array[30:37].any()
    _same_grid(load_volume(out), volume)


def test_cli_memory_options_match_the_api(segmenters, weights, lung, tmp_path, monkeypatch, capsys):
    from promptseg.cli import main
    from promptseg.io import load_labels

    paths, _ = weights
    name = "sam2.1-hiera-tiny"
    variant = VARIANTS[name]
    monkeypatch.setitem(sam2_module.VARIANTS, name, dataclasses.replace(variant, overrides=variant.overrides + tuple(TINY)))
    args = ["segment", str(case_image("lung1")), "--model", name, "--checkpoint", str(paths[name]),
            "--box", ",".join(f"{v:g}" for v in TUMOUR_BOX), "--slice", str(TUMOUR_Z), "--no-progress"]
    out = tmp_path / "tracked.nrrd"
    assert main([*args, "-o", str(out), "--propagation", "memory", "--memory-stop-after", "0",
                 "--largest-component"]) == 0
    volume, _, _ = lung
    obj = make_object(slice=TUMOUR_Z, box=TUMOUR_BOX)
    api = promptseg.segment(volume, [obj], segmenters[name], mode="3d", propagation="memory",
                            memory_options={"stop_after": None, "largest_component": True})
    np.testing.assert_array_equal(load_labels(out, reference=volume).array, api.labels.array)
    assert sorted(api.encoded_slices) == list(range(volume.num_slices))  # tracked to both ends
    capsys.readouterr()
    assert main([*args, "-o", str(tmp_path / "no.nrrd"), "--largest-component"]) == 2
    assert "apply to --propagation memory only" in capsys.readouterr().err
    assert not (tmp_path / "no.nrrd").exists()


def test_cli_memory_propagation_needs_a_sam2_model(tmp_path, monkeypatch, capsys):
    from model_cache import litemedsam

    import promptseg.models
    from promptseg.cli import main

    monkeypatch.setattr(promptseg.models, "build_segmenter", lambda *a, **k: litemedsam())
    out = tmp_path / "never.nrrd"
    code = main(["segment", str(case_image("lung1")), "-o", str(out), "--model", "litemedsam",
                 "--box", ",".join(f"{v:g}" for v in TUMOUR_BOX), "--slice", str(TUMOUR_Z), "--3d",
                 "--propagation", "memory", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("promptseg: error: model litemedsam has no memory propagation")
    assert "--propagation chain" in err
    assert not out.exists()



def test_chaining_works_with_sam2_backends_too(segmenters, lung):
    """--propagation chain (the default) is available for every backend: boxes from each mask prompt the next slice."""
    volume, images, _ = lung
    seg = segmenters["sam2.1-hiera-tiny"]
    obj = make_object(slice=TUMOUR_Z, box=TUMOUR_BOX, z_range=(31, 35))
    result = promptseg.segment(volume, [obj], seg, mode="3d", propagation="chain")
    assert sorted(result.encoded_slices) == [31, 32, 33, 34, 35]  # each slice of the range encoded once
    direct = seg.decode(seg.embed(images[TUMOUR_Z]), box=TUMOUR_BOX).mask
    np.testing.assert_array_equal(result.labels.array[TUMOUR_Z] == 1, direct)
    assert result.labels.array[:31].sum() == 0 and result.labels.array[36:].sum() == 0
    _same_grid(result.labels, volume)
