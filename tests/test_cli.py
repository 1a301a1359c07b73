"""The promptseg command line: real runs on real scans, and one clear line for every bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

import promptseg
from promptseg.cli import main

from datafiles import CASE_DIRS as CASES
from model_cache import case, litemedsam, middle_slice_box

BREAST = CASES["breast1"] / "breast1_image.nrrd"
BREAST_LABEL = CASES["breast1"] / "breast1_label.nrrd"


@pytest.fixture
def shared_model(monkeypatch):
    """Let the CLI use the test session's already-loaded LiteMedSAM."""
    import promptseg.models

    monkeypatch.setattr(promptseg.models, "build_segmenter", lambda *a, **k: litemedsam())


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_help_teaches(capsys):
    with pytest.raises(SystemExit) as e:
        main(["segment", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert "x = column, y = row, z = slice" in out and "--box3d" in out and "examples:" in out
    assert main([]) == 2


def test_console_script_info_on_a_real_mr(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "promptseg.cli", "info", str(CASES["brain2"] / "brain2_image.nrrd")],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "256 x 256 x 23 voxels" in out
    assert "0.78125 x 0.78125 x 6.5 mm (x, y, z)" in out
    assert "orientation: LAS" in out
    assert "modality:    MR (guessed" in out


@pytest.mark.slow
def test_segment_3d_writes_mask_on_the_input_grid_overlay_and_dice(tmp_path, capsys, shared_model):
    volume, reference = case("breast1")
    z, box = middle_slice_box(reference)
    out = tmp_path / "out" / "breast.nii.gz"
    overlay = tmp_path / "breast.png"
    code, stdout, _ = run(
        ["segment", BREAST, "-o", out, "--box", ",".join(str(int(v)) for v in box), "--slice", z,
         "--overlay", overlay, "--reference", BREAST_LABEL, "--name", "lesion", "--no-progress"], capsys)
    assert code == 0
    mask = promptseg.load_labels(out, reference=volume)  # same grid, or this raises
    assert mask.same_grid(volume)
    score = promptseg.dice(mask.array == 1, reference)
    assert score >= 0.442
    assert f"Dice vs reference label 1: {score:.4f}" in stdout
    assert "label 1 (lesion): slices 8-10" in stdout and "stopped up: slice 11" in stdout
    assert overlay.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_prompt_file_with_two_objects_in_2d(tmp_path, capsys, shared_model):
    _, reference = case("breast1")
    z, box = middle_slice_box(reference)
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"objects": [
        {"label": 1, "name": "lesion", "slice": z, "box": list(box)},
        {"label": 7, "name": "corner", "slice": z + 3, "box": [2, 2, 20, 30]},
    ]}))
    out = tmp_path / "two.nrrd"
    code, stdout, _ = run(["segment", BREAST, "-o", out, "--prompts", prompts, "--2d", "--no-progress"], capsys)
    assert code == 0
    labels = promptseg.load_volume(out).array
    assert set(np.unique(labels)) <= {0, 1, 7}
    assert (labels == 1).any(axis=(1, 2)).nonzero()[0].tolist() == [z]
    assert "label 7 (corner)" in stdout


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--box", "10,10,50,200", "--slice", "9"], "box 10,10,50,200 on slice 9 is outside the image (x 0..44, y 0..119)"),
        (["--box", "30,10,20,40", "--slice", "9"], "box 30,10,20,40: needs x0 < x1"),
        (["--box", "10,10,20,40", "--slice", "40"], "slice 40 is outside the image (slices 0..20)"),
        (["--box", "10,10,20,40"], "say which slice the prompt is on: --slice Z (0..20)"),
        ([], "no prompt: give --box, --point, --line, --box3d, --key-box, --prompts or --prompt-from"),
        (["--box", "10,10,20,40", "--slice", "9", "--model", "sam9"], "unknown model 'sam9'; available: litemedsam"),
        (["--box", "10,10,20,40", "--slice", "9", "--window", "40,0"], "width must be > 0"),
        (["--box3d", "1,2,9,10,20,5"], "needs z0 <= z1"),
        (["--key-box", "5-1,2,3,4"], "expected Z:x0,y0,x1,y1"),
    ],
)
def test_bad_input_is_one_line_and_no_output(tmp_path, capsys, extra, message):
    out = tmp_path / "never.nii.gz"
    code, stdout, err = run(["segment", BREAST, "-o", out, *extra], capsys)
    assert code == 2
    assert err.startswith("promptseg: error: ") and err.count("\n") == 1
    assert message in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_bad_files_are_one_line_errors(tmp_path, capsys):
    code, _, err = run(["info", tmp_path / "missing.nii.gz"], capsys)
    assert code == 2 and "no such file" in err and err.count("\n") == 1
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00garbage")
    code, _, err = run(["segment", broken, "-o", tmp_path / "o.nii.gz", "--box", "1,1,5,5", "--slice", "0"], capsys)
    assert code == 2 and err.count("\n") == 1 and "broken.nii.gz" in err
    assert not (tmp_path / "o.nii.gz").exists()


def test_bad_checkpoint_names_the_keys(tmp_path, capsys):
    import torch

    bad = tmp_path / "wrong.pth"
    torch.save({"image_encoder.nonsense": torch.zeros(1)}, bad)
    code, _, err = run(["segment", BREAST, "-o", tmp_path / "o.nii.gz", "--box", "10,10,20,40", "--slice", "9",
                        "--checkpoint", bad], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "unexpected keys: image_encoder.nonsense" in err and "missing keys" in err
    assert not (tmp_path / "o.nii.gz").exists()


def test_models_lists_the_bundled_backend(capsys):
    code, out, _ = run(["models"], capsys)
    assert code == 0 and "litemedsam" in out and "lite_medsam.pth" in out
