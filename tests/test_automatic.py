"""Prompt-free automatic masks (``promptseg.inference.automatic``, ``promptseg auto``) on a real CT.

The model is one small random SAM (upstream architecture, 2-block 64-wide ViT)
saved as upstream releases its weights; the reference is upstream's own
``SamAutomaticMaskGenerator`` on a network that ``segment_anything`` built and
loaded itself. The random masks all span the slice, so box NMS would keep only
one of them: the tests set ``box_nms_thresh=1.0`` to keep all twelve proposals
of a 2 x 2 point grid (4 points, 3 masks each).
"""

import json

import numpy as np
import pytest
import torch
from datafiles import image
from model_cache import litemedsam

import promptseg
from promptseg.inference.automatic import (
    automatic_masks,
    check_model,
    generate_masks,
    label_map,
    summary_document,
)
from promptseg.cli import main
from promptseg.errors import ModelError, PromptError
from promptseg.models.sam import VIT_SIZES, SamSegmenter, ViTSize, build_sam_network
from promptseg.volume import Volume

TINY = ViTSize(64, 2, 2, (1,))
#: a 256 x 300 in-plane crop of lung1 slices 31-35 (the tumour is on slice 33 = index 2)
ZS, ROWS, COLS, Z = slice(31, 36), slice(150, 406), slice(100, 400), 2
GEN = {"points_per_side": 2, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("auto") / "tiny_sam.pth"
    torch.save(build_sam_network(TINY).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def sam(tiny):
    return SamSegmenter(tiny, variant="sam-vit-b", vit=TINY)


@pytest.fixture(scope="module")
def volume():
    """A real CT sub-volume with the geometry of its crop (origin moved to the crop's first voxel)."""
    vol = promptseg.load_volume(image("lung1"))
    origin = vol.index_to_physical(COLS.start, ROWS.start, ZS.start)
    return Volume(vol.array[ZS, ROWS, COLS], vol.spacing, origin, vol.direction, modality=vol.modality,
                  metadata={"source": "lung1 crop"})


@pytest.fixture(scope="module")
def grey(volume):
    return promptseg.normalize(volume)[Z]


@pytest.fixture(scope="module")
def upstream_records(tiny, grey):
    from segment_anything import SamAutomaticMaskGenerator
    from segment_anything.build_sam import _build_sam

    net = _build_sam(encoder_embed_dim=TINY.embed_dim, encoder_depth=TINY.depth, encoder_num_heads=TINY.num_heads,
                     encoder_global_attn_indexes=list(TINY.global_attn_indexes), checkpoint=str(tiny)).eval()
    return SamAutomaticMaskGenerator(net, **GEN).generate(np.repeat(grey[..., None], 3, axis=-1))


@pytest.fixture(scope="module")
def labels(sam, volume):
    return automatic_masks(volume, sam, slice=Z, **GEN)


def test_generator_records_equal_upstream_on_a_real_non_square_slice(sam, grey, upstream_records):
    assert grey.shape == (256, 300)
    ours = generate_masks(grey, sam, **GEN)
    assert len(upstream_records) >= 6 and len(ours) == len(upstream_records)
    for a, b in zip(ours, upstream_records):
        assert np.array_equal(a["segmentation"], b["segmentation"])
        for key in ("area", "bbox", "predicted_iou", "stability_score", "point_coords", "crop_box"):
            assert a[key] == b[key], key
    areas = sorted(r["area"] for r in ours)
    assert len(set(areas)) > 1 and areas[-1] < grey.size  # different, non-trivial masks


def _record(mask, iou=0.9, point=(0.0, 0.0)):
    rows, cols = np.nonzero(mask)
    x0, y0, x1, y1 = cols.min(), rows.min(), cols.max(), rows.max()
    return {"segmentation": mask, "area": int(mask.sum()), "bbox": [x0, y0, x1 - x0, y1 - y0], "predicted_iou": iou,
            "stability_score": 0.97, "point_coords": [list(point)], "crop_box": [0, 0, 10, 10]}


def _masks():
    big, inner, overlap, speck = (np.zeros((10, 10), bool) for _ in range(4))
    big[0:6, 0:6] = True  # 36 px
    inner[1:3, 1:3] = True  # 4 px, inside big
    overlap[4:8, 4:8] = True  # 16 px, 4 of them over big
    speck[9, 9] = True  # 1 px, alone
    return big, inner, overlap, speck


def test_label_map_smallest_mask_wins_and_labels_follow_mask_area():
    big, inner, overlap, speck = _masks()
    records = [_record(inner, 0.8, (1, 1)), _record(speck, 0.7), _record(big, 0.95, (0, 5)), _record(overlap, 0.9)]
    labels, summary = label_map(records, (10, 10))
    assert labels.dtype == np.uint8
    expected = np.zeros((10, 10), np.uint8)
    expected[big] = 1
    expected[overlap] = 2
    expected[inner] = 3
    expected[speck] = 4
    assert np.array_equal(labels, expected)
    assert [(s["label"], s["area"], s["mask_area"]) for s in summary] == [(1, 28, 36), (2, 16, 16), (3, 4, 4), (4, 1, 1)]
    assert summary[0] == {"label": 1, "area": 28, "mask_area": 36, "predicted_iou": 0.95, "stability_score": 0.97,
                          "point": [0.0, 5.0], "box": [0.0, 0.0, 5.0, 5.0]}
    assert summary[2]["point"] == [1.0, 1.0] and summary[2]["box"] == [1.0, 1.0, 2.0, 2.0]


def test_label_map_min_area_drops_and_renumbers_and_gives_pixels_back():
    big, inner, overlap, speck = _masks()
    records = [_record(m) for m in (big, inner, overlap, speck)]
    labels, summary = label_map(records, (10, 10), min_area=5)
    expected = np.zeros((10, 10), np.uint8)
    expected[big] = 1  # the 4 px inside it are its own again: no hole where the dropped mask was
    expected[overlap] = 2
    assert np.array_equal(labels, expected)
    assert [(s["label"], s["area"]) for s in summary] == [(1, 32), (2, 16)]
    # a mask hidden completely by smaller ones has no visible pixel and is dropped even at min_area 0
    hidden = np.zeros((10, 10), bool)
    hidden[1:3, 1:3] = True
    left, right = hidden.copy(), hidden.copy()
    left[:, 2], right[:, 1] = False, False
    labels, summary = label_map([_record(hidden), _record(left), _record(right)], (10, 10))
    assert [s["mask_area"] for s in summary] == [2, 2] and set(np.unique(labels)) == {0, 1, 2}
    assert label_map([], (4, 5))[0].shape == (4, 5)


def test_label_map_uses_uint16_beyond_255_masks():
    records = []
    for i in range(300):
        mask = np.zeros((20, 20), bool)
        mask.flat[i] = True
        records.append(_record(mask))
    labels, summary = label_map(records, (20, 20))
    assert labels.dtype == np.uint16 and labels.max() == 300 and len(summary) == 300


def test_automatic_masks_labels_only_the_slice_on_the_input_grid(volume, labels, upstream_records):
    assert isinstance(labels, Volume) and labels.same_grid(volume)
    assert labels.array.shape == volume.shape and labels.array.dtype == np.uint8
    assert not np.delete(labels.array, Z, axis=0).any()
    plane, summary = label_map(upstream_records, volume.shape[1:])
    assert np.array_equal(labels.array[Z], plane) and plane.any()
    meta = labels.metadata
    assert meta["masks"] == summary and meta["slice"] == Z and meta["model"] == "sam-vit-b"
    assert meta["parameters"] == {**GEN, "min_area": 0} and meta["weights_sha256"]
    assert labels.modality is None and meta["source"] == "lung1 crop"


def test_summary_document_adds_grid_and_physical_areas(volume, labels):
    doc = summary_document(labels, labels_file="out.nii.gz")
    assert doc["shape"] == list(volume.shape) and doc["spacing"] == list(volume.spacing)
    assert doc["num_masks"] == len(doc["masks"]) == len(labels.metadata["masks"]) and doc["labels_file"] == "out.nii.gz"
    pixel = volume.spacing[0] * volume.spacing[1]
    for m in doc["masks"]:
        assert m["area_mm2"] == pytest.approx(m["area"] * pixel)
        assert m["area"] == int((labels.array[Z] == m["label"]).sum())
    json.dumps(doc, allow_nan=False)


def test_models_without_automatic_mode_are_refused(tiny, volume):
    medsam = SamSegmenter(tiny, variant="medsam-vit-b", vit=TINY)
    with pytest.raises(ModelError, match="medsam-vit-b was trained with box prompts and single-mask output only"):
        automatic_masks(volume, medsam, slice=Z)
    with pytest.raises(ModelError, match="trained with box prompts"):
        generate_masks(np.zeros((8, 8), np.uint8), medsam)
    with pytest.raises(ModelError, match="model litemedsam has no automatic mask generation: it needs a SAM model"):
        automatic_masks(volume, litemedsam(), slice=Z)
    for name, message in [("litemedsam", "has no automatic"), ("medsam-vit-b", "box prompts"),
                          ("sam2.1-hiera-tiny", "has no automatic"), ("medsam2", "has no automatic")]:
        with pytest.raises(ModelError, match=message):
            check_model(name)
    with pytest.raises(ModelError, match="unknown model 'sam9'; automatic masks need sam-vit-b, sam-vit-l, sam-vit-h or mobilesam"):
        check_model("sam9")
    for name in ("sam-vit-b", "sam-vit-l", "sam-vit-h", "mobilesam"):
        check_model(name)


@pytest.mark.parametrize("kwargs, message", [
    ({"slice": 5}, "slice 5 is outside the volume (slices 0..4)"),
    ({"slice": -1}, "slice -1 is outside the volume"),
    ({"points_per_side": 0}, "points_per_side must be a whole number >= 1, got 0"),
    ({"min_area": -3}, "min_area must be a whole number of pixels >= 0"),
    ({"pred_iou_thresh": float("nan")}, "pred_iou_thresh must be a finite number"),
    ({"box_nms_thresh": 0.0}, "box_nms_thresh must be in (0, 1]"),
])
def test_bad_parameters_fail_before_the_model_runs(sam, volume, kwargs, message):
    with pytest.raises(PromptError) as err:
        automatic_masks(volume, sam, **{"slice": Z, **kwargs})
    assert message in str(err.value)


# -- command line -------------------------------------------------------------------------
@pytest.fixture
def tiny_registry(monkeypatch):
    monkeypatch.setitem(VIT_SIZES, "vit_b", TINY)  # the registry builds the upstream ViT-B size


@pytest.fixture(scope="module")
def volume_file(volume, tmp_path_factory):
    path = tmp_path_factory.mktemp("auto_data") / "lung_crop.nrrd"
    promptseg.save_volume(volume, path)
    return path


def test_cli_writes_label_map_summary_and_overlay(tmp_path, tiny, volume, volume_file, labels, tiny_registry, capsys):
    out, summary, overlay = tmp_path / "auto.nii.gz", tmp_path / "json" / "auto.json", tmp_path / "auto.png"
    code = main(["auto", str(volume_file), "-o", str(out), "--slice", str(Z), "--checkpoint", str(tiny),
                 "--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-score-thresh", "0",
                 "--box-nms-thresh", "1", "--summary", str(summary), "--overlay", str(overlay)])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    written = promptseg.load_labels(out, reference=volume)
    assert np.array_equal(written.array, labels.array)
    doc = json.loads(summary.read_text())
    assert doc["masks"] == json.loads(json.dumps(summary_document(labels)["masks"]))
    assert doc["labels_file"] == str(out) and doc["slice"] == Z and doc["model"] == "sam-vit-b"
    assert doc["image"] == str(volume_file) and doc["parameters"]["box_nms_thresh"] == 1.0
    assert overlay.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    n = len(labels.metadata["masks"])
    assert f"slice {Z}: {n} masks" in stdout and f"wrote {out}" in stdout and f"wrote {summary}" in stdout
    assert "automatic masks" in stderr  # the progress bar
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auto.nii.gz", "auto.png", "json"]


def test_cli_2d_png_in_png_out(tmp_path, tiny, grey, tiny_registry, capsys):
    from PIL import Image

    png = tmp_path / "slice.png"
    Image.fromarray(grey).save(png)
    out = tmp_path / "labels.png"
    code = main(["auto", str(png), "-o", str(out), "--checkpoint", str(tiny), "--no-progress", *(
        ["--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--box-nms-thresh", "1"])])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert stderr == ""  # --no-progress
    written = np.asarray(Image.open(out))
    assert written.shape == grey.shape and written.max() >= 1 and "slice 0:" in stdout


@pytest.mark.parametrize("extra, message", [
    (["--model", "medsam-vit-b"], "model medsam-vit-b was trained with box prompts and single-mask output only"),
    (["--model", "litemedsam"], "model litemedsam has no automatic mask generation"),
    (["--model", "sam2.1-hiera-tiny"], "model sam2.1-hiera-tiny has no automatic mask generation"),
    (["--model", "sam9"], "unknown model 'sam9'; automatic masks need sam-vit-b, sam-vit-l, sam-vit-h or mobilesam"),
    (["--slice", "2"], "model sam-vit-b needs weights: --checkpoint FILE (sam_vit_b_01ec64.pth from"),
    (["--slice", "2", "--checkpoint", "missing.pth"], "checkpoint not found: missing.pth (sam-vit-b expects"),
    (["--checkpoint", "x.pth"], "say which slice to segment: --slice Z (0..4)"),
    (["--slice", "7", "--checkpoint", "x.pth"], "slice 7 is outside the volume (slices 0..4)"),
    (["--slice", "2", "--points-per-side", "0"], "points_per_side must be a whole number >= 1, got 0"),
    (["--slice", "2", "--pred-iou-thresh", "nan"], "pred_iou_thresh must be a finite number"),
    (["--slice", "2", "--min-area", "-1"], "min_area must be a whole number of pixels >= 0"),
    (["--slice", "2", "--output", "out.txt"], "unknown output format '.txt'"),
    (["--slice", "2", "--output", "out.png"], "PNG holds one 2D slice, this volume has 5 slices"),
])
def test_cli_errors_are_one_line_exit_2_and_write_nothing(tmp_path, volume_file, monkeypatch, capsys, extra, message):
    monkeypatch.chdir(tmp_path)
    code = main(["auto", str(volume_file), "-o", "out.nii.gz", *extra])
    _, err = capsys.readouterr()
    assert code == 2 and err.startswith("promptseg: error: ") and err.count("\n") == 1
    assert message in err
    assert list(tmp_path.iterdir()) == []


def test_cli_help_teaches(capsys):
    with pytest.raises(SystemExit) as e:
        main(["auto", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert "without prompts" in out and "examples:" in out and "promptseg auto ct.nii.gz" in out
    assert "sam-vit-b, sam-vit-l, sam-vit-h" in out and "mobilesam" in out and "MedSAM and LiteMedSAM" in out
    assert "--points-per-side" in out and "--summary" in out
