"""No command ever overwrites what the user gave it: an output that is (or lies among) the run's inputs is
refused with exit code 2 and one line, before any image is read or any model is built, and every input
file is byte-identical afterwards."""

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from promptseg.cli import main

from datafiles import image, label


def _digests(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A folder of inputs: two real scans and labels, a dataset manifest and folder, a prepared folder,
    a benchmark run folder, a PNG, a prompt file, a training config; model building and image reading
    fail the test if they happen."""
    import promptseg.io
    import promptseg.io.dicom.convert
    import promptseg.models

    for case in ("breast1", "brain2"):
        shutil.copy(image(case), tmp_path / f"{case}_image.nrrd")
        shutil.copy(label(case), tmp_path / f"{case}_label.nrrd")
    (tmp_path / "ds.csv").write_text("case,image,label\nb1,breast1_image.nrrd,breast1_label.nrrd\n"
                                     "b2,brain2_image.nrrd,brain2_label.nrrd\n")
    for sub in ("images", "labels"):
        (tmp_path / "folder" / sub).mkdir(parents=True)
        shutil.copy(tmp_path / f"breast1_{'image' if sub == 'images' else 'label'}.nrrd",
                    tmp_path / "folder" / sub / "b1.nrrd")
    (tmp_path / "preds").mkdir()
    shutil.copy(label("breast1"), tmp_path / "preds" / "b1.nrrd")
    (tmp_path / "prepared" / "cases").mkdir(parents=True)
    (tmp_path / "prepared" / "manifest.csv").write_text("sample,case\n")
    (tmp_path / "prepared" / "prepare.json").write_text("{}")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text("{}")
    (tmp_path / "run" / "metrics.csv").write_text("case,label,dice\n")
    from PIL import Image

    Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))).save(tmp_path / "xray.png")
    (tmp_path / "prompts.json").write_text('{"objects": [{"slice": 3, "box": [1, 1, 5, 5]}]}')
    (tmp_path / "prompts.provenance.json").write_text('{"objects": [{"slice": 3, "box": [1, 1, 5, 5]}]}')
    (tmp_path / "ckpt.pth").write_bytes(b"not really weights")
    (tmp_path / "weights.nii.gz").write_bytes(b"weights with an odd name")
    (tmp_path / "runs" / "a").mkdir(parents=True)
    (tmp_path / "runs" / "a" / "config.yaml").write_text(
        "data:\n  prepared: ../../prepared\nlogging:\n  dir: .\n")
    (tmp_path / "train.yaml").write_text("data:\n  prepared: prepared\nlogging:\n  dir: prepared\n")

    def no_work(*args, **kwargs):
        raise AssertionError("the command started working before refusing its output")

    monkeypatch.setattr(promptseg.models, "build_segmenter", no_work)
    monkeypatch.setattr(promptseg.io, "load_volume", no_work)
    monkeypatch.setattr(promptseg.io.dicom.convert, "load_volume", no_work)
    monkeypatch.chdir(tmp_path)
    return tmp_path


SEG = ["segment", "breast1_image.nrrd", "--box", "1,1,5,5", "--slice", "3"]
REFUSED = {
    "segment -o image": (SEG + ["-o", "breast1_image.nrrd"], "cannot write breast1_image.nrrd: it is an input of this run"),
    "segment -o reference": (SEG + ["-o", "breast1_label.nrrd", "--reference", "breast1_label.nrrd"],
                             "cannot write breast1_label.nrrd: it is an input of this run"),
    "segment --overlay png input": (["segment", "xray.png", "-o", "m.png", "--box", "1,1,5,5", "--overlay", "xray.png"],
                                    "cannot write xray.png: it is an input of this run"),
    "segment -o checkpoint": (SEG + ["-o", "weights.nii.gz", "--checkpoint", "weights.nii.gz"],
                              "cannot write weights.nii.gz: it is an input of this run"),
    "segment -o in the prompt's folder": (["segment", "breast1_image.nrrd", "--prompts", "prompts.json",
                                           "-o", "preds/new.nii.gz", "--reference", "preds"],
                                          "cannot write preds/new.nii.gz: it is inside the input folder preds"),
    "segment -o m.txt (item 2: the format, before the model)": (SEG + ["-o", "m.txt"],
                                                                "cannot write m.txt: unknown output format '.txt'"),
    "segment --probabilities on the image": (SEG + ["-o", "m.nii.gz", "--probabilities", "breast1_image.nrrd"],
                                             "cannot write breast1_image.nrrd: it is an input of this run"),
    "segment sidecar over the prompt file": (["segment", "breast1_image.nrrd", "--prompts", "prompts.provenance.json",
                                              "-o", "prompts.nii.gz"], "it is an input of this run"),
    "auto -o m.txt": (["auto", "brain2_image.nrrd", "-o", "m.txt", "--slice", "3", "--checkpoint", "ckpt.pth"],
                      "cannot write m.txt: unknown output format '.txt'"),
    "auto -o image": (["auto", "brain2_image.nrrd", "-o", "brain2_image.nrrd", "--slice", "3", "--checkpoint",
                       "ckpt.pth"], "cannot write brain2_image.nrrd: it is an input of this run"),
    "auto --summary checkpoint": (["auto", "brain2_image.nrrd", "-o", "a.nii.gz", "--slice", "3", "--checkpoint",
                                   "ckpt.pth", "--summary", "ckpt.pth"], "cannot write ckpt.pth: it is an input"),
    "evaluate -o gt": (["evaluate", "--pred", "preds", "--gt", "breast1_label.nrrd", "-o", "breast1_label.nrrd"],
                       "cannot write breast1_label.nrrd: it is an input of this run"),
    "evaluate -o into preds": (["evaluate", "--pred", "preds", "--gt", "folder/labels", "-o", "preds/metrics.csv"],
                               "cannot write preds/metrics.csv: it is inside the input folder preds"),
    "benchmark -o manifest": (["benchmark", "ds.csv", "-o", "ds.csv"], "cannot write ds.csv: it is a file; give a folder"),
    "benchmark -o dataset folder": (["benchmark", "folder", "-o", "folder"], "cannot write folder: it is an input"),
    "report -o run": (["report", "run", "-o", "run"], "cannot write run: it is an input folder of this run"),
    "prepare -o manifest": (["prepare", "ds.csv", "-o", "ds.csv"], "cannot write ds.csv: it is a file; give a folder"),
    "prepare -o dataset folder": (["prepare", "folder", "-o", "folder/out"], "it is inside the input folder folder"),
    "split -o manifest": (["split", "ds.csv", "-o", "ds.csv"], "cannot write ds.csv: it is an input of this run"),
    "split -o prepared manifest": (["split", "prepared", "-o", "prepared/manifest.csv"],
                                   "cannot write prepared/manifest.csv: it is an input of this run"),
    "train into prepared": (["train", "--config", "train.yaml"], "prepared: it is an input of this run"),
    "train over its config": (["train", "--config", "runs/a/config.yaml"],
                              "config.yaml: it is an input of this run (runs/a/config.yaml)"),
    "convert -o input": (["convert", "breast1_label.nrrd", "-o", "breast1_label.nrrd", "--reference",
                          "breast1_image.nrrd"], "cannot write breast1_label.nrrd: it is an input of this run"),
    "convert -o reference": (["convert", "breast1_label.nrrd", "-o", "breast1_image.nrrd", "--reference",
                              "breast1_image.nrrd"], "cannot write breast1_image.nrrd: it is an input of this run"),
    "convert --format dicom into the input": (["convert", "breast1_image.nrrd", "-o", "breast1_image.nrrd",
                                               "--format", "dicom"], "it is an input of this run"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_an_output_on_an_input_is_refused_before_any_work(work, capsys, name):
    argv, message = REFUSED[name]
    before = _digests(work)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("promptseg: error: cannot write "), err
    if message:
        assert message in err
    assert _digests(work) == before  # every input byte-identical, nothing new written


def test_info_writes_nothing(work, capsys, monkeypatch):
    """``info`` has no output; it leaves its input as it was."""
    import promptseg.io
    from promptseg.io.readers import load_volume

    monkeypatch.setattr(promptseg.io, "load_volume", load_volume)
    before = _digests(work)
    assert main(["info", "breast1_image.nrrd"]) == 0
    assert "size:" in capsys.readouterr().out
    assert _digests(work) == before


def test_two_outputs_of_one_run_must_differ(work, capsys):
    assert main(["auto", "brain2_image.nrrd", "-o", "a.png", "--slice", "3", "--checkpoint", "ckpt.pth",
                 "--overlay", "a.png"]) == 2
    assert "cannot write a.png: it is also the run's output a.png" in capsys.readouterr().err
