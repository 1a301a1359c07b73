"""What a new user hit on the bundled scans (issue 10, items 3-8), each checked on real outputs."""

import json
import subprocess
import sys

import numpy as np
import pytest

import promptseg
from promptseg.cli import main
from promptseg.prompts import fit_to_image, make_object
from promptseg.reporting.orientation import DisplayOrientation
from promptseg.volume import Volume

from datafiles import CT_SLICE, image
from fakes import ThresholdSegmenter


@pytest.fixture
def fake_model(monkeypatch):
    import promptseg.models

    monkeypatch.setattr(promptseg.models, "build_segmenter", lambda *a, **k: ThresholdSegmenter())


def bright_square(tmp_path, name="sq.nii.gz", shape=(5, 40, 60)):
    """A 60 x 40 x 5 volume, a bright square at columns 40..59 (to the right edge), rows 10..29, slices 1..3."""
    array = np.full(shape, 20, np.int16)
    array[1:4, 10:30, 40:60] = 1000
    path = tmp_path / name
    promptseg.save_volume(Volume(array, spacing=(1.0, 1.0, 2.0)), path)
    return path


# ---------------------------------------------------------------- item 3: negative values, the image edge
def test_a_negative_box_value_parses_and_is_judged_against_the_image(tmp_path, capsys, fake_model):
    scan = bright_square(tmp_path)
    assert main(["segment", str(scan), "-o", str(tmp_path / "m.nii.gz"), "--box", "-5,10,50,29", "--slice", "2"]) == 2
    err = capsys.readouterr().err
    assert err == "promptseg: error: object 1: box -5,10,50,29 on slice 2 is outside the image (x 0..59, y 0..39)\n"
    assert main(["segment", str(scan), "-o", str(tmp_path / "m.nii.gz"), "--point", "-3,4", "--slice", "2"]) == 2
    assert "point -3,4 on slice 2 is outside the image" in capsys.readouterr().err


def test_a_box_to_the_edge_is_clipped_with_a_note(tmp_path, capsys, fake_model):
    scan = bright_square(tmp_path)
    out = tmp_path / "m.nii.gz"
    assert main(["segment", str(scan), "-o", str(out), "--box", "38,8,60,31", "--slice", "2", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "note: object 1: box 38,8,60,31 on slice 2 reaches past the image's edge; clipped to 38,8,59,31 " \
           "(x 0..59, y 0..39)" in captured.err
    mask = promptseg.load_labels(out).array
    assert mask.sum() == 3 * 20 * 20 and mask[1:4, 10:30, 40:60].all()  # the square to the last column
    prompt, notes = fit_to_image(make_object(slice=2, box=(-1, 0, 59, 40)), (5, 40, 60))
    assert prompt.slices[2].box == (0.0, 0.0, 59.0, 39.0) and len(notes) == 1
    far = make_object(slice=2, box=(0, 0, 61, 39))
    assert fit_to_image(far, (5, 40, 60)) == (far, [])  # two voxels out: left for validate to refuse


def test_attach_negative_values_only_joins_option_values():
    from promptseg.cli import attach_negative_values, build_parser

    parser = build_parser()
    assert attach_negative_values(["segment", "a.nii", "--box", "-5,64,29,75", "--window", "-600,1500", "-o", "o.nii"],
                                  parser) == ["segment", "a.nii", "--box=-5,64,29,75", "--window=-600,1500", "-o", "o.nii"]
    assert attach_negative_values(["segment", "--2d", "-x"], parser) == ["segment", "--2d", "-x"]


# ---------------------------------------------------------------- item 4: one DICOM slice
def test_a_single_dicom_slice_takes_its_slice_thickness(tmp_path):
    import pydicom

    assert float(pydicom.dcmread(CT_SLICE, stop_before_pixels=True).SliceThickness) == 3.0
    volume = promptseg.load_volume(CT_SLICE)
    assert volume.shape[0] == 1 and volume.spacing[2] == pytest.approx(3.0)
    assert volume.voxel_volume_ml == pytest.approx(1.074219 ** 2 * 3 / 1000, rel=1e-5)
    assert promptseg.load_volume(CT_SLICE.parent).spacing[2] == pytest.approx(3.0)  # the folder holding it too


# ---------------------------------------------------------------- item 5: display orientation, lines
def test_display_orientation_follows_the_direction():
    assert DisplayOrientation.of(np.eye(3)).is_identity  # LPS axial: as stored
    las = DisplayOrientation.of(np.diag([1.0, -1.0, 1.0]))  # brain2: rows run towards anterior
    assert (las.transpose, las.flip_rows, las.flip_cols) == (False, True, False)
    assert (las.left, las.right, las.top, las.bottom) == ("R", "L", "A", "P")
    ras = DisplayOrientation.of(np.diag([-1.0, -1.0, 1.0]))  # NIfTI RAS+ axial
    assert (ras.flip_rows, ras.flip_cols) == (True, True) and (ras.left, ras.top) == ("R", "A")
    swapped = DisplayOrientation.of(np.array([[0.0, 1, 0], [1, 0, 0], [0, 0, 1]]))  # columns run along P
    assert swapped.transpose and (swapped.left, swapped.top) == ("R", "A")
    coronal = DisplayOrientation.of(np.array([[1.0, 0, 0], [0, 0, 1], [0, 1, 0]]))  # rows run towards S
    assert coronal.flip_rows and (coronal.top, coronal.bottom) == ("S", "I")
    sagittal = DisplayOrientation.of(np.array([[0.0, 0, 1], [1, 0, 0], [0, -1, 0]]))  # cols P, rows I
    assert not sagittal.transpose and (sagittal.left, sagittal.right, sagittal.top) == ("A", "P", "S")
    assert las.point(3, 0, (10, 20)) == (3, 9) and las.box((1, 2, 5, 6), (10, 20)) == (1, 3, 5, 7)
    assert np.array_equal(las.image(np.arange(6).reshape(2, 3)), [[3, 4, 5], [0, 1, 2]])


def _red_rows(png):
    from PIL import Image

    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    red = (rgb[..., 0] > 150) & (rgb[..., 1] < 90) & (rgb[..., 2] < 90)
    return np.nonzero(red.any(axis=1))[0]


def test_overlay_is_drawn_in_radiological_orientation(tmp_path):
    from promptseg.reporting.overlay import save_overlay

    image_ = np.full((1, 40, 40), 60, np.uint8)
    labels = np.zeros((1, 40, 40), np.uint8)
    labels[0, 2:8, 15:25] = 1  # near row 0 of the array
    stored = save_overlay(tmp_path / "a.png", image_, labels, crop=False)
    flipped = save_overlay(tmp_path / "b.png", image_, labels, crop=False, direction=np.diag([1.0, -1.0, 1.0]))
    top, bottom = _red_rows(stored), _red_rows(flipped)
    assert top.size and bottom.size
    assert top.mean() < bottom.mean() - 100  # the label moved from the top of the picture to its bottom


def test_a_line_prompt_is_kept_and_drawn_as_a_line(tmp_path):
    from PIL import Image

    from promptseg.prompts import prompt_to_dict
    from promptseg.reporting.overlay import save_overlay

    line = make_object(slice=0, line=(10, 20, 30, 20), image_shape=(40, 40))
    assert line.slices[0].line == (10.0, 20.0, 30.0, 20.0) and line.slices[0].box == (10.0, 10.0, 30.0, 30.0)
    assert prompt_to_dict(line) == {"label": 1, "slice": 0, "line": [10.0, 20.0, 30.0, 20.0]}
    image_ = np.zeros((1, 40, 40), np.uint8)
    labels = np.zeros((1, 40, 40), np.uint8)
    boxed = make_object(slice=0, box=(10, 10, 30, 30))
    pictures = {}
    for name, prompt in (("line", line), ("box", boxed)):
        path = save_overlay(tmp_path / f"{name}.png", image_, labels, [prompt], crop=False)
        rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
        pictures[name] = (rgb[..., 0] > 150) & (rgb[..., 1] < 120)  # the label colour (red) drawn
    rows = lambda mask: np.nonzero(mask.any(axis=1))[0]  # noqa: E731
    assert rows(pictures["line"]).size < 12  # one horizontal stroke
    assert rows(pictures["box"]).size > 3 * rows(pictures["line"]).size  # a rectangle's two sides span the box


# ---------------------------------------------------------------- item 6: -v, --version, ITK messages
def test_version():
    out = subprocess.run([sys.executable, "-m", "promptseg.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout == f"promptseg {promptseg.__version__}\n"


def test_verbose_names_runtime_precision_intensity_and_model(tmp_path, capsys, caplog, fake_model):
    import logging

    scan = bright_square(tmp_path)
    with caplog.at_level(logging.INFO, logger="promptseg"):
        assert main(["-v", "segment", str(scan), "-o", str(tmp_path / "m.nii.gz"), "--box", "38,8,59,31",
                     "--slice", "2", "--no-progress"]) == 0
    text = caplog.text
    assert "intensity: MR (guessed from intensities), percentiles of voxels > 0 -> [20, 1000] to 0-255" in text
    assert "model: threshold (weights sha256 none, device cpu), encoder runtime none, precision none" in text
    assert "prompt: object 1: box 38,8,59,31 on slice 2" in text


def test_a_folder_of_nifti_files_is_one_line(tmp_path):
    folder = tmp_path / "niis"
    folder.mkdir()
    for name in ("a.nii.gz", "b.nii.gz"):
        bright_square(folder, name)
    out = subprocess.run([sys.executable, "-m", "promptseg.cli", "segment", str(folder), "-o",
                          str(tmp_path / "m.nii.gz"), "--box", "1,1,5,5", "--slice", "2"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr == (f"promptseg: error: {folder}: no DICOM series in this folder, but 2 image file(s) "
                          "(a.nii.gz, b.nii.gz): give one file, or segment each with a batch run "
                          "(promptseg segment -i FOLDER -o OUT_FOLDER)\n")


# ---------------------------------------------------------------- item 7: a meaningful fine-tuning quick-start
def test_the_quickstart_trains_on_two_cases_and_validates_on_a_third():
    from pathlib import Path

    from promptseg.datasets.splits import read_split
    from promptseg.training.config import load_config

    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(repo / "examples" / "configs" / "quickstart.yaml")
    sets = read_split(cfg.data.split)
    assert sorted(sets["train"]) == ["brain2", "breast1"] and sets["val"] == ["lung1"]
    assert not set(sets["train"]) & set(sets["val"])
    readme = (repo / "README.md").read_text(encoding="utf-8")
    assert "lung1" in sets["val"] and "promptseg/data/lung1_image.nrrd" in readme.split("## Fine-tune on your data")[1]


def test_train_summary_says_before_and_after_and_warns_when_worse():
    from pathlib import Path

    from promptseg.cli.train import summary_lines
    from promptseg.training.loop import TrainResult

    better = TrainResult(Path("r"), 0.899, 1, 3, train_samples=6, start_val_dice=0.8008)
    assert summary_lines(better) == [
        "3 epoch(s) trained on 6 samples per epoch",
        "validation Dice (cases not trained on): 0.8008 with the starting weights, 0.8990 after fine-tuning "
        "(best.pt: epoch 2 of 3)"]
    worse = TrainResult(Path("r"), 0.70, 0, 3, train_samples=6, start_val_dice=0.80)
    assert summary_lines(worse)[-1].startswith("warning: fine-tuning did not beat the starting weights")
    unvalidated = TrainResult(Path("r"), -1.0, 2, 3, train_samples=6)
    assert summary_lines(unvalidated)[-1] == "no validation cases: best.pt is the last epoch's weights"


# ---------------------------------------------------------------- item 8: report figures
def test_log_axis_labels_are_plain_and_do_not_overlap():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from promptseg.reporting.figures import _plain_log_ticks

    for low, high in ((0.15, 1.8), (0.003, 4000.0)):
        fig, ax = plt.subplots(figsize=(4.4, 3))
        ax.set_xscale("log")
        ax.set_xlim(low, high)
        _plain_log_ticks(ax.xaxis)
        fig.canvas.draw()
        labels = [t for t in ax.get_xticklabels() if t.get_text() and low <= t.get_position()[0] <= high]
        assert 2 <= len(labels) <= 7 and not [t for t in ax.get_xticklabels(minor=True) if t.get_text()]
        assert all("$" not in t.get_text() for t in labels)  # 0.5, 1, 2 -- not mathtext powers of ten
        boxes = sorted((t.get_window_extent() for t in labels), key=lambda b: b.x0)
        assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:]))
        plt.close(fig)


def test_the_heatmap_has_one_column_per_model():
    from pathlib import Path

    from promptseg.reporting.report import Run, heatmap_rows

    def run(name, settings, sweep=None):
        rows = [{"case": f"c{i}", "label": 1, "dice": 0.5 + 0.1 * i, "setting": s, "config": "litemedsam"}
                for s in settings for i in range(3)]
        return Run(Path(name), {"dataset": "radiomics", "model": "litemedsam", "sweep": sweep}, rows, id=name)

    plain = run("plain", [""])
    sweep = run("jitter", ["jitter_px=0", "jitter_px=10"], {"param": "jitter_px", "values": [0, 10]})
    assert {r["model_column"] for r in heatmap_rows([plain, sweep])} == {"litemedsam"}
    assert len(heatmap_rows([plain, sweep])) == 3
    alone = heatmap_rows([sweep])
    assert {r["model_column"] for r in alone} == {"litemedsam (best: jitter_px=0)"} and len(alone) == 3


def test_montages_are_ranked_not_best_when_cases_are_few(tmp_path):
    """3 cases and --best-worst 3: no case is called best or worst (issue 10, item 8)."""
    import csv as csv_module

    from promptseg.reporting.report import build_report

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"dataset": "d", "model": "m", "finished": True, "cases": []}))
    with open(folder / "metrics.csv", "w", newline="") as handle:
        writer = csv_module.DictWriter(handle, fieldnames=["dataset", "model", "case", "label", "setting", "dice"])
        writer.writeheader()
        for i, dice in enumerate((0.9, 0.5, 0.7)):
            writer.writerow({"dataset": "d", "model": "m", "case": f"c{i}", "label": 1, "setting": "", "dice": dice})
    text = build_report([folder], tmp_path / "report", best_worst=3).read_text(encoding="utf-8")
    section = text.split("## Best and worst cases")[1]
    assert "| rank by Dice | case |" in section and "| best |" not in section and "| worst |" not in section
    assert [line.split(" | ")[1] for line in section.splitlines() if line.startswith("| 1 ") or line.startswith("| 2 ")
            or line.startswith("| 3 ")] == ["c0", "c2", "c1"]


# ---------------------------------------------------------------- provenance and probabilities
def test_every_output_carries_its_provenance_and_probabilities(tmp_path, capsys, fake_model):
    from promptseg.stops import StopReason

    scan = bright_square(tmp_path)
    out, prob = tmp_path / "m.nrrd", tmp_path / "p.nii.gz"
    argv = ["segment", str(scan), "-o", str(out), "--box", "38,8,59,31", "--slice", "2", "--no-progress",
            "--probabilities", str(prob)]
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines()[-3:] == [f"wrote {out}", f"wrote {prob}",
                                                         f"wrote {tmp_path / 'm.provenance.json'}"]
    doc = json.loads((tmp_path / "m.provenance.json").read_text(encoding="utf-8"))
    assert doc["promptseg"] == promptseg.__version__ and doc["command"].startswith("promptseg segment ")
    assert doc["input"]["path"] == str(scan) and len(doc["input"]["sha256"]) == 64
    assert doc["input"]["spacing"] == [1.0, 1.0, 2.0] and doc["outputs"] == {"labels": str(out), "probabilities": [str(prob)]}
    assert doc["model"]["name"] == "threshold" and doc["intensity"]["modality"] == "mr"
    assert doc["settings"]["mode"] == "3d" and doc["settings"]["stop_rule"]["continuity_iou"] == 0.5
    assert doc["prompts"] == [{"label": 1, "slice": 2, "box": [38.0, 8.0, 59.0, 31.0]}]
    (obj,) = doc["objects"]
    assert obj["slices"] == [1, 3] and obj["voxels"] == 3 * 20 * 20 and obj["volume_ml"] == pytest.approx(2.4)
    assert {d: s["reason"] for d, s in obj["stops"].items()} == {"up": StopReason.EMPTY_MASK.name,
                                                                 "down": StopReason.EMPTY_MASK.name}
    assert obj["stops"]["up"]["text"] == "slice 4: empty mask (0 px)" and obj["stops"]["up"]["slice"] == 4
    probabilities = promptseg.load_volume(prob)
    mask = promptseg.load_labels(out).array
    assert probabilities.array.dtype == np.float32 and probabilities.same_grid(promptseg.load_volume(scan))
    assert ((probabilities.array > 0.5) == (mask == 1)).all() and 0 <= probabilities.array.min() <= probabilities.array.max() <= 1
    assert main(["segment", str(scan), "-o", str(tmp_path / "x.nii.gz"), "--box", "38,8,59,31", "--slice", "2",
                 "--probabilities", str(tmp_path / "x.png")]) == 2
    assert "probabilities are float32 images; name them .nii.gz / .nii / .nrrd / .mha / .mhd" in capsys.readouterr().err
    assert main(["segment", str(scan), "-o", str(tmp_path / "y.nii.gz"), "--box", "38,8,59,31", "--slice", "2",
                 "--probabilities"]) == 2
    assert "--probabilities needs a file name (e.g. --probabilities prob.nii.gz) for one image" in capsys.readouterr().err
    assert not (tmp_path / "y.nii.gz").exists()


def test_the_intensity_record_says_which_rule_ran():
    from promptseg.inference.provenance import describe_intensity, intensity_record
    from promptseg.intensity import intensity_mapping

    ct = Volume(np.full((2, 8, 8), -1000, np.int16))
    ct.array[0, :4] = 40
    record = intensity_record(ct, mapping=intensity_mapping(ct))
    assert record == {"modality": "ct", "modality_from": "guessed", "rule": "default CT window", "lower": -160.0,
                      "upper": 240.0}
    assert describe_intensity(record) == "CT (guessed from intensities), default CT window -> [-160, 240] to 0-255"
    windowed = intensity_record(ct, window="lung", mapping=intensity_mapping(ct, window="lung"))
    assert windowed["modality"] is None and windowed["rule"] == "window" and describe_intensity(windowed).startswith(
        "modality not used, window L-600/W1500")
    assert intensity_record(ct, modality="mr", mapping=intensity_mapping(ct, modality="mr"))["modality_from"] == "option"
