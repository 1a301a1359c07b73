"""The SAM / MedSAM backends against the upstream code paths, on real slices.

No real weights can be downloaded here, so every test uses one small random SAM
(the upstream architecture with a 2-block, 64-wide ViT; prompt encoder and mask
decoder are SAM's own) saved as upstream releases ``sam_vit_*.pth`` and
``medsam_vit_b.pth``: a plain ``torch.save(state_dict)``. The references are
upstream's ``SamPredictor`` on a network built and loaded by ``segment_anything``
itself, and MedSAM's published inference recipe (``MedSAM_Inference.py``),
written out below from its documented steps.
"""

import logging
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datafiles import DATA, image
from model_cache import case, middle_slice_box

import promptseg
from promptseg.cli import main
from promptseg.errors import CheckpointError
from promptseg.models.registry import build_segmenter
from promptseg.models.sam import (
    MEDSAM_URL,
    VIT_SIZES,
    SamSegmenter,
    ViTSize,
    build_sam_network,
    medsam_resize,
)
from promptseg.prompts import make_object

#: a SAM ViT with 2 blocks of width 64
TINY = ViTSize(64, 2, 2, (1,))
#: lung1's tumour: slices 32-34, box on the middle one
LUNG_Z, LUNG_BOX = 33, (206.0, 347.0, 229.0, 368.0)
#: a non-square crop of the lung slice (rows 60..459: 400 x 512) holding the tumour
CROP_ROWS = slice(60, 460)


def _skimage_resize(img):
    from skimage.transform import resize

    return resize(img, (1024, 1024), order=3, preserve_range=True, anti_aliasing=True).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(path of the tiny SAM saved in the release format, its state dict)."""
    torch.manual_seed(0)
    state = build_sam_network(TINY).state_dict()
    path = tmp_path_factory.mktemp("sam") / "tiny_sam.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def upstream_net(tiny):
    """The tiny SAM built and loaded by segment_anything's own builder (``torch.load`` + ``load_state_dict``)."""
    from segment_anything.build_sam import _build_sam

    return _build_sam(encoder_embed_dim=TINY.embed_dim, encoder_depth=TINY.depth, encoder_num_heads=TINY.num_heads,
                      encoder_global_attn_indexes=list(TINY.global_attn_indexes), checkpoint=str(tiny[0])).eval()


@pytest.fixture(scope="module")
def sam(tiny):
    return SamSegmenter(tiny[0], variant="sam-vit-b", vit=TINY)


@pytest.fixture(scope="module")
def medsam(tiny):
    return SamSegmenter(tiny[0], variant="medsam-vit-b", vit=TINY)


@pytest.fixture(scope="module")
def sam_embed(sam, lung):
    """``sam_embed(z)``: the tiny SAM's embedding of lung1 slice ``z`` (computed once per module)."""
    cache = {}

    def get(z):
        if z not in cache:
            cache[z] = sam.embed(lung[2][z])
        return cache[z]

    return get


@pytest.fixture(scope="module")
def lung():
    volume, reference = case("lung1")
    return volume, reference, promptseg.normalize(volume)


def test_lung_fixture_is_the_tumour_slice(lung):
    volume, reference, img = lung
    assert volume.shape == (48, 512, 512) and img.dtype == np.uint8
    assert middle_slice_box(reference) == (LUNG_Z, LUNG_BOX)


# -- MedSAM's resize ---------------------------------------------------------
def test_medsam_resize_is_scikit_image_for_non_square_and_down_sampled_input(lung):
    crop = np.ascontiguousarray(lung[2][LUNG_Z][CROP_ROWS])  # 400 x 512: up-sampled, aspect ratio changes
    big = np.kron(lung[2][LUNG_Z][:440], np.ones((3, 3), np.uint8))[:1300, :1100]  # 1300 x 1100: down-sampled
    assert big.shape == (1300, 1100)
    for img in (crop, big):
        out = medsam_resize(img)
        assert out.shape == (1024, 1024) and out.dtype == np.uint8
        assert np.array_equal(out, _skimage_resize(img))
    with pytest.raises(ValueError, match="one"):
        medsam_resize(np.zeros((4, 4, 3), np.uint8))


# -- checkpoint layouts --------------------------------------------------------
def _training_payload(state, latest):
    """The layout promptseg.training.loop writes: best.pt / latest.pt with the weights under "model"."""
    from promptseg.training.trainable import inference_state_dict

    net = build_sam_network(TINY)
    net.load_state_dict(state)
    payload = {"model": inference_state_dict(net), "epoch": 2, "val_dice": 0.5, "model_name": "sam-vit-b",
               "config": {"model": {"name": "sam-vit-b", "checkpoint": "sam_vit_b_01ec64.pth"}}}
    if latest:
        decoder = list(net.mask_decoder.parameters())
        optimizer = torch.optim.AdamW(decoder, lr=1e-4)
        sum(p.sum() for p in decoder).backward()
        optimizer.step()
        payload["train_state"] = {"model": {k: v.clone() for k, v in net.state_dict().items()},
                                  "optimizer": optimizer.state_dict(), "scheduler": {"last_epoch": 2}, "scaler": {},
                                  "epoch": 2, "step": 10, "best": 0.5, "best_epoch": 2, "history": [], "stale": 0}
    return payload


LAYOUTS = {
    "plain": lambda sd: sd,
    "model-wrapper": lambda sd: {"model": sd},
    "state_dict-wrapper": lambda sd: {"state_dict": sd, "epoch": 3},
    "module-prefix": lambda sd: {f"module.{k}": v for k, v in sd.items()},
    "lightning": lambda sd: {"state_dict": {f"sam.{k}": v for k, v in sd.items()}, "global_step": 5},
    "promptseg-best.pt": lambda sd: _training_payload(sd, latest=False),
    "promptseg-latest.pt": lambda sd: _training_payload(sd, latest=True),
}


@pytest.fixture(scope="module")
def reference_box_logits(sam, sam_embed):
    return sam.decode(sam_embed(LUNG_Z), box=LUNG_BOX).logits


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_checkpoint_layout_loads_the_same_weights_and_masks(tmp_path, tiny, sam_embed, reference_box_logits, layout):
    state = tiny[1]
    target = tmp_path / f"{layout}.pth"
    torch.save(LAYOUTS[layout](state), target)
    seg = SamSegmenter(target, variant="sam-vit-b", vit=TINY)
    loaded = seg.net.state_dict()
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    # every weight is bit-identical, the image encoder's included; the prompt side decodes the same mask
    logits = seg.decode(sam_embed(LUNG_Z), box=LUNG_BOX).logits
    assert np.array_equal(logits, reference_box_logits)
    assert 0 < (logits > 0).sum() < logits.size


def _missing(sd):
    sd = dict(sd)
    del sd["mask_decoder.iou_prediction_head.layers.2.bias"]
    return sd


BROKEN = {
    "missing key": (_missing, r"1 missing keys: mask_decoder\.iou_prediction_head\.layers\.2\.bias"),
    "unexpected key": (lambda sd: {**sd, "image_encoder.extra.weight": torch.zeros(3)},
                       r"1 unexpected keys: image_encoder\.extra\.weight"),
    "not a state dict": (lambda sd: {"epoch": 3, "note": "no weights"},
                         r"is not a state dict and has no 'model' or 'state_dict' entry \(top-level keys: epoch, note\)"),
    "a list": (lambda sd: [1, 2, 3], r"holds no state dict \(found list\)"),
}


@pytest.mark.parametrize("problem", list(BROKEN))
def test_broken_checkpoints_fail_naming_the_problem(tmp_path, tiny, problem):
    make, message = BROKEN[problem]
    target = tmp_path / "broken.pth"
    torch.save(make(tiny[1]), target)
    with pytest.raises(CheckpointError, match=message) as err:
        SamSegmenter(target, variant="sam-vit-b", vit=TINY)
    assert str(target) in str(err.value) and "\n" not in str(err.value)


def test_a_checkpoint_of_another_vit_size_names_keys_and_both_shapes(tmp_path, tiny):
    other = build_sam_network(ViTSize(32, 2, 2, (1,))).state_dict()
    target = tmp_path / "vit32.pth"
    torch.save(other, target)
    with pytest.raises(CheckpointError, match="shape mismatches") as err:
        SamSegmenter(target, variant="sam-vit-b", vit=TINY)
    named = re.findall(r"(image_encoder\.[\w.]+) (\([\d, ]+\)) != (\([\d, ]+\))", str(err.value))
    assert named, str(err.value)
    for key, found, expected in named:  # "key (checkpoint's shape) != (model's shape)"
        assert found == str(tuple(other[key].shape)) and expected == str(tuple(tiny[1][key].shape))


NOT_CHECKPOINTS = {
    "empty": lambda: b"",
    "truncated": lambda path: path.read_bytes()[:100_000],
    "png": lambda: (DATA / "ct_small_aorta_mask.png").read_bytes(),
    "nrrd": lambda: image("lung1").read_bytes()[:50_000],
    "text": lambda: b"these are not weights\n",
}


@pytest.mark.parametrize("kind", list(NOT_CHECKPOINTS))
def test_a_file_that_is_not_a_checkpoint_is_a_checkpoint_error(tmp_path, tiny, kind):
    make = NOT_CHECKPOINTS[kind]
    target = tmp_path / f"{kind}.pth"
    target.write_bytes(make(tiny[0]) if kind == "truncated" else make())
    with pytest.raises(CheckpointError) as err:
        SamSegmenter(target, variant="sam-vit-b", vit=TINY)
    assert str(target) in str(err.value) and "\n" not in str(err.value)
    if kind in ("empty", "png", "nrrd", "text"):
        assert "is not a PyTorch checkpoint" in str(err.value)


@pytest.mark.parametrize("variant, file, source", [
    ("sam-vit-b", "sam_vit_b_01ec64.pth", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"),
    ("sam-vit-h", "sam_vit_h_4b8939.pth", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth"),
    ("medsam-vit-b", "medsam_vit_b.pth", MEDSAM_URL),
])
def test_missing_weights_name_the_file_and_where_to_get_it(tmp_path, variant, file, source):
    missing = tmp_path / "nowhere" / "weights.pth"
    for build in (lambda: SamSegmenter(missing, variant=variant, vit=TINY),
                  lambda: build_segmenter(variant, checkpoint=missing)):
        with pytest.raises(CheckpointError) as err:
            build()
        text = str(err.value)
        assert text.startswith(f"checkpoint not found: {missing} ({variant} expects {file} from ")
        assert source in text and "\n" not in text
    with pytest.raises(CheckpointError) as err:
        build_segmenter(variant)
    assert str(err.value).startswith(f"model {variant} needs weights: --checkpoint FILE ({file} from ")
    assert source in str(err.value)


# -- equality with upstream SamPredictor ---------------------------------------
def _prompts(box):
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return {
        "box": {"box": box},
        "single point": {"points": [[cx, cy]], "labels": [1]},
        "box + points": {"box": box, "points": [[cx, cy], [x1 + 15, cy]], "labels": [1, 0]},
        "points with negatives": {"points": [[cx - 3, cy], [cx + 3, cy + 2], [x0 - 20, y0 - 20], [x1 + 25, cy]],
                                      "labels": [1, 1, 0, 0]},
    }


@pytest.fixture(scope="module")
def sam_pairs(sam, sam_embed, upstream_net, lung):
    """``sam_pairs(name)``: promptseg's embedding, upstream's SamPredictor and the tumour box on the
    real lung slice (``"square"``, 512 x 512) or its 400 x 512 crop (``"crop"``: padding, unequal x/y scales)."""
    from segment_anything import SamPredictor

    _, reference, img = lung
    cache = {}

    def get(name):
        if name not in cache:
            if name == "square":
                grey, box, embedding = img[LUNG_Z], LUNG_BOX, sam_embed(LUNG_Z)
            else:
                grey = np.ascontiguousarray(img[LUNG_Z][CROP_ROWS])
                box, embedding = middle_slice_box(reference[:, CROP_ROWS])[1], sam.embed(grey)
            predictor = SamPredictor(upstream_net)
            predictor.set_image(np.repeat(grey[..., None], 3, axis=-1))
            cache[name] = embedding, predictor, box
        return cache[name]

    return get


@pytest.mark.parametrize("image_name, kind", [
    ("square", "box"), ("square", "single point"), ("square", "box + points"), ("square", "points with negatives"),
    ("crop", "single point"), ("crop", "box + points"),
])
def test_sam_logits_and_scores_equal_upstream_sam_predictor(sam, sam_pairs, image_name, kind):
    embedding, predictor, box = sam_pairs(image_name)
    assert torch.equal(embedding.features, predictor.features)
    p = _prompts(box)[kind]
    points = np.asarray(p["points"], dtype=np.float64) if "points" in p else None
    labels = np.asarray(p["labels"]) if "labels" in p else None
    box_arr = np.asarray(p["box"]) if "box" in p else None
    ours = sam.decode(embedding, box=box_arr, points=points, point_labels=labels)
    single = kind == "single point"  # ambiguous: three proposals, the best predicted IoU is kept
    logits, scores, _ = predictor.predict(point_coords=points, point_labels=labels, box=box_arr,
                                          multimask_output=single, return_logits=True)
    best = int(np.argmax(scores)) if single else 0
    assert logits.shape[1:] == ours.logits.shape == embedding.original_size
    np.testing.assert_allclose(ours.logits, logits[best], rtol=0, atol=1e-5)
    assert np.array_equal(ours.mask, logits[best] > 0)
    assert ours.score == pytest.approx(float(scores[best]), abs=1e-6)


# -- MedSAM's inference recipe ---------------------------------------------------
def medsam_inference_reference(net, grey, box):
    """MedSAM's ``MedSAM_Inference.py`` steps for one grey slice and one integer box -> (probability, mask)."""
    from skimage.transform import resize

    img_3c = np.repeat(grey[:, :, None], 3, axis=-1)
    H, W, _ = img_3c.shape
    img_1024 = resize(img_3c, (1024, 1024), order=3, preserve_range=True, anti_aliasing=True).astype(np.uint8)
    img_1024 = (img_1024 - img_1024.min()) / np.clip(img_1024.max() - img_1024.min(), a_min=1e-8, a_max=None)
    tensor = torch.tensor(img_1024).float().permute(2, 0, 1).unsqueeze(0)  # HWC -> 1, C, H, W
    box_1024 = np.array([box]) / np.array([W, H, W, H]) * 1024
    with torch.no_grad():
        features = net.image_encoder(tensor)
        boxes = torch.as_tensor(box_1024, dtype=torch.float)[:, None, :]
        sparse, dense = net.prompt_encoder(points=None, boxes=boxes, masks=None)
        low_res, _ = net.mask_decoder(image_embeddings=features, image_pe=net.prompt_encoder.get_dense_pe(),
                                      sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                      multimask_output=False)
        prob = F.interpolate(torch.sigmoid(low_res), size=(H, W), mode="bilinear", align_corners=False)
    prob = prob.squeeze().numpy()
    return prob, prob > 0.5


@pytest.fixture(scope="module")
def medsam_crop(medsam, lung):
    """MedSAM's embedding of the 400 x 512 crop and the tumour box on it (integers, as MedSAM's CLI parses)."""
    crop = np.ascontiguousarray(lung[2][LUNG_Z][CROP_ROWS])
    _, box = middle_slice_box(lung[1][:, CROP_ROWS])
    return crop, medsam.embed(crop), tuple(int(v) for v in box)


def test_medsam_mask_equals_medsam_inference_recipe_on_a_non_square_slice(medsam, upstream_net, medsam_crop):
    crop, embedding, box = medsam_crop
    assert crop.shape == (400, 512) and embedding.input_size == (1024, 1024)
    prob, expected = medsam_inference_reference(upstream_net, crop, box)
    assert 0 < expected.sum() < expected.size  # a real boundary, not an empty or full mask
    ours = medsam.decode(embedding, box=box)
    assert np.array_equal(ours.mask, expected)
    np.testing.assert_allclose(1 / (1 + np.exp(-ours.logits.astype(np.float64))), prob, rtol=0, atol=2e-6)


def test_points_alone_with_medsam_warn_once(tiny, medsam_crop, caplog):
    _, embedding, box = medsam_crop
    seg = SamSegmenter(tiny[0], variant="medsam-vit-b", vit=TINY)  # a fresh instance: the warning is per model
    centre = np.array([[(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]])
    with caplog.at_level(logging.WARNING, logger="promptseg.models.sam"):
        seg.decode(embedding, box=box)
        assert not caplog.records
        seg.decode(embedding, points=centre, point_labels=np.array([1]))
        seg.decode(embedding, points=centre + 4, point_labels=np.array([1]))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "trained with box prompts only" in warnings[0].getMessage()


# -- chaining boxes ------------------------------------------------------------------
def test_box_from_mask_margins_on_the_1024_grid(tiny, sam, medsam):
    mask = np.zeros((400, 512), bool)
    mask[50:121, 100:201] = True
    assert sam.box_from_mask(mask) == (100.0, 50.0, 200.0, 120.0)  # SAM: the tight box
    # MedSAM: 10 px on its 1024 x 1024 grid = 10 * 512 / 1024 columns, 10 * 400 / 1024 rows
    assert medsam.box_from_mask(mask) == (95.0, 50 - 3.90625, 205.0, 120 + 3.90625)
    edge = np.zeros((400, 512), bool)
    edge[1:399, 2:510] = True
    assert medsam.box_from_mask(edge) == (0.0, 0.0, 511.0, 399.0)  # clipped to the slice
    # an override for SAM: its 1024 grid holds the 400 x 512 slice as 800 x 1024
    wide = SamSegmenter(tiny[0], variant="sam-vit-b", vit=TINY, box_margin=10)
    assert wide.box_from_mask(mask) == (95.0, 45.0, 205.0, 125.0)
    with pytest.raises(ValueError, match="non-empty"):
        sam.box_from_mask(np.zeros((4, 4), bool))


def test_3d_chaining_with_sam_on_a_real_volume(sam, sam_embed, lung, reference_box_logits):
    volume = lung[0]
    obj = make_object(slice=LUNG_Z, box=LUNG_BOX, z_range=(LUNG_Z, LUNG_Z + 1))
    result = promptseg.segment(volume, obj, sam, mode="3d")
    assert result.labels.same_grid(volume) and result.labels.array.shape == volume.shape
    assert result.encoded_slices == [LUNG_Z, LUNG_Z + 1]
    assert np.nonzero(result.labels.array.any(axis=(1, 2)))[0].tolist() == [LUNG_Z, LUNG_Z + 1]
    prompted = reference_box_logits > 0  # a direct 2D decode of the prompt
    assert np.array_equal(result.mask(1)[LUNG_Z], prompted)
    # the next slice is prompted with the box of this one's mask (SAM: the tight box)
    chained = sam.decode(sam_embed(LUNG_Z + 1), box=sam.box_from_mask(prompted)).mask
    assert np.array_equal(result.mask(1)[LUNG_Z + 1], chained)


# -- command line --------------------------------------------------------------------
def test_cli_segment_with_medsam_weights_equals_the_api(tmp_path, tiny, medsam, lung, monkeypatch, capsys):
    monkeypatch.setitem(VIT_SIZES, "vit_b", TINY)  # the registry builds the upstream ViT-B size
    volume = lung[0]
    out = tmp_path / "medsam.nii.gz"
    code = main(["segment", str(image("lung1")), "-o", str(out), "--model", "medsam-vit-b", "--checkpoint", str(tiny[0]),
                 "--box", ",".join(str(int(v)) for v in LUNG_BOX), "--slice", str(LUNG_Z), "--2d", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    written = promptseg.load_labels(out, reference=volume)
    api = promptseg.segment(volume, make_object(slice=LUNG_Z, box=LUNG_BOX), medsam, mode="2d")
    assert np.array_equal(written.array, api.labels.array)
    assert written.array[LUNG_Z].any() and not np.delete(written.array, LUNG_Z, axis=0).any()


def test_cli_sam_without_weights_is_one_line_naming_the_file(tmp_path, capsys):
    out = tmp_path / "never.nii.gz"
    code = main(["segment", str(image("lung1")), "-o", str(out), "--model", "sam-vit-b", "--box", "206,347,229,368",
                 "--slice", "33", "--2d", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("promptseg: error: model sam-vit-b needs weights: --checkpoint FILE (sam_vit_b_01ec64.pth")
    assert not out.exists()
