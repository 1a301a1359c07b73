"""Batch runs: a folder or manifest of cases, resumable after a kill, failures recorded, shards byte-identical."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import promptseg
from promptseg.batch import BatchSettings, Shard, load_cases, parse_shard, run_batch
from promptseg.cli import main
from promptseg.errors import OptionError
from promptseg.volume import Volume

from fakes import ThresholdSegmenter

TESTS = Path(__file__).resolve().parent
CASES = {"c1": (3, 10, 12), "c2": (4, 20, 30), "c3": (2, 8, 30), "c4": (5, 22, 10), "c5": (3, 15, 20), "c6": (4, 12, 14)}


def make_cases(root: Path, bad: str = "c3") -> tuple[Path, Path]:
    """Six small scans, each with a bright block and its JSON prompt; ``bad``'s prompt lies outside its image."""
    scans, prompts = root / "scans", root / "prompts"
    scans.mkdir()
    prompts.mkdir()
    for name, (z, y, x) in CASES.items():
        array = np.full((8, 40, 50), 15, np.int16)
        array[z - 1 : z + 2, y : y + 8, x : x + 10] = 800 + 10 * z
        promptseg.save_volume(Volume(array, spacing=(0.7, 0.7, 3.0)), scans / f"{name}.nii.gz")
        box = [x, y, x + 9, y + 7] if name != bad else [x, y, x + 90, y + 7]
        (prompts / f"{name}.json").write_text(json.dumps({"objects": [{"name": "block", "slice": z, "box": box}]}))
    return scans, prompts


def summary(path: Path) -> dict:
    with open(path, newline="") as handle:
        return {row["case"]: row for row in csv.DictReader(handle)}


@pytest.fixture
def fake_model(monkeypatch):
    import promptseg.models

    monkeypatch.setattr(promptseg.models, "build_segmenter", lambda *a, **k: ThresholdSegmenter())


def test_a_folder_batch_records_failures_and_goes_on(tmp_path, capsys, fake_model):
    scans, prompts = make_cases(tmp_path)
    out = tmp_path / "out"
    assert main(["segment", "-i", str(scans), "-o", str(out), "--prompts", str(prompts), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "case c3: failed: block: box 30,8,120,15 on slice 2 is outside the image (x 0..49, y 0..39)" in captured.err
    assert "6 case(s): 5 segmented, 0 finished earlier, 1 failed" in captured.out
    rows = summary(out / "summary.csv")
    assert [rows[c]["status"] for c in CASES] == ["done", "done", "failed", "done", "done", "done"]
    assert rows["c3"]["reason"] == "block: box 30,8,120,15 on slice 2 is outside the image (x 0..49, y 0..39)"
    for name, (z, y, x) in CASES.items():
        if name == "c3":
            assert not (out / "c3.nii.gz").exists() and not (out / "c3.provenance.json").exists()
            continue
        mask = promptseg.load_labels(out / f"{name}.nii.gz").array
        expected = np.zeros_like(mask)
        expected[z - 1 : z + 2, y : y + 8, x : x + 10] = 1
        assert np.array_equal(mask, expected), name
        sidecar = json.loads((out / f"{name}.provenance.json").read_text(encoding="utf-8"))
        assert sidecar["batch"]["case"] == name and sidecar["objects"][0]["voxels"] == 240
        assert int(rows[name]["voxels"]) == 240 and rows[name]["objects"] == "1"
    # run again: finished cases are skipped, the failed one is tried again
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(["segment", "-i", str(scans), "-o", str(out), "--prompts", str(prompts), "--no-progress"]) == 1
    assert "6 case(s): 0 segmented, 5 finished earlier, 1 failed" in capsys.readouterr().out
    assert all(p.stat().st_mtime_ns == before[p.name] for p in out.iterdir() if p.name != "summary.csv")
    assert summary(out / "summary.csv")["c1"]["status"] == "skipped"
    # other settings: the cases are redone
    assert main(["segment", "-i", str(scans), "-o", str(out), "--prompts", str(prompts), "--no-progress",
                 "--stop-iou", "0.4"]) == 1
    assert "6 case(s): 5 segmented, 0 finished earlier, 1 failed" in capsys.readouterr().out


def test_shards_write_the_same_bytes_as_one_process(tmp_path, fake_model, capsys):
    scans, prompts = make_cases(tmp_path, bad="none")
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["segment", "-i", str(scans), "-o", str(one), "--prompts", str(prompts), "--no-progress"]) == 0
    for shard in ("0/2", "1/2"):
        assert main(["segment", "-i", str(scans), "-o", str(two), "--prompts", str(prompts), "--no-progress",
                     "--shard", shard]) == 0
    assert "6 case(s) (shard 1/2): 3 segmented" not in capsys.readouterr().out  # each shard took three
    assert sorted(summary(two / "summary-shard-0-of-2.csv")) == ["c1", "c3", "c5"]
    assert sorted(summary(two / "summary-shard-1-of-2.csv")) == ["c2", "c4", "c6"]
    for name in CASES:
        assert (one / f"{name}.nii.gz").read_bytes() == (two / f"{name}.nii.gz").read_bytes(), name
    # a run without --shard over the sharded folder finds every case finished and writes the whole summary
    assert main(["segment", "-i", str(scans), "-o", str(two), "--prompts", str(prompts), "--no-progress"]) == 0
    assert {row["status"] for row in summary(two / "summary.csv").values()} == {"skipped"}


KILLED = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import promptseg.models
from fakes import ThresholdSegmenter

class Slow(ThresholdSegmenter):
    def embed(self, image):
        time.sleep(0.25)
        return super().embed(image)

promptseg.models.build_segmenter = lambda *a, **k: Slow()
from promptseg.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_a_killed_batch_resumes_without_redoing_finished_cases(tmp_path, capsys, fake_model):
    scans, prompts = make_cases(tmp_path, bad="none")
    out, reference = tmp_path / "out", tmp_path / "reference"
    args = ["segment", "-i", str(scans), "-o", str(out), "--prompts", str(prompts), "--no-progress"]
    process = subprocess.Popen([sys.executable, "-c", KILLED, str(TESTS), *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        deadline = time.monotonic() + 120
        while len(list(out.glob("*.provenance.json"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    finished = {p.name: p.read_bytes() for p in out.glob("*.provenance.json")}
    assert 2 <= len(finished) < len(CASES), "the kill did not land inside the batch"
    assert not (out / "summary.csv").exists()
    assert main(args) == 0
    rows = summary(out / "summary.csv")
    done_before = {name.split(".")[0] for name in finished}
    assert {c for c, row in rows.items() if row["status"] == "skipped"} == done_before
    assert {c for c, row in rows.items() if row["status"] == "done"} == set(CASES) - done_before
    assert all((out / name).read_bytes() == data for name, data in finished.items())  # not redone
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]  # no leftover of the killed write
    assert main(["segment", "-i", str(scans), "-o", str(reference), "--prompts", str(prompts), "--no-progress"]) == 0
    for name in CASES:
        assert (out / f"{name}.nii.gz").read_bytes() == (reference / f"{name}.nii.gz").read_bytes()


def test_a_manifest_with_masks_labels_and_outputs(tmp_path, fake_model, capsys):
    scans, _ = make_cases(tmp_path)
    masks = tmp_path / "masks"
    masks.mkdir()
    rows = ["case,image,prompt_mask,labels,output"]
    for name, (z, y, x) in list(CASES.items())[:3]:
        array = promptseg.load_volume(scans / f"{name}.nii.gz")
        rough = np.zeros(array.shape, np.uint8)
        rough[z, y + 1 : y + 7, x + 1 : x + 9] = 2
        rough[0, 0:3, 0:3] = 5  # another label, not asked for
        promptseg.save_mask(rough, masks / f"{name}.nrrd", reference=array)
        rows.append(f"{name},scans/{name}.nii.gz,masks/{name}.nrrd,2,{name}/labels.nrrd")
    (tmp_path / "cases.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    assert main(["segment", "-i", str(tmp_path / "cases.csv"), "-o", str(out), "--probabilities", "--no-progress"]) == 0
    for name, (z, y, x) in list(CASES.items())[:3]:
        mask = promptseg.load_labels(out / name / "labels.nrrd").array
        assert sorted(np.unique(mask).tolist()) == [0, 2]
        probabilities = promptseg.load_volume(out / name / "labels_probabilities.nrrd")
        assert probabilities.array.dtype == np.float32 and probabilities.shape == mask.shape
        assert ((probabilities.array > 0.5) == (mask == 2)).all()
        assert json.loads((out / name / "labels.provenance.json").read_text(encoding="utf-8"))["outputs"]["probabilities"] == \
            [str(out / name / "labels_probabilities.nrrd")]


def test_batch_options_fail_before_the_model(tmp_path, capsys, monkeypatch):
    import promptseg.models

    def no_model(*a, **k):
        raise AssertionError("model built")

    monkeypatch.setattr(promptseg.models, "build_segmenter", no_model)
    scans, prompts = make_cases(tmp_path)
    for argv, message in (
        (["-o", str(scans)], f"cannot write {scans}: it is an input of this run"),
        (["-o", str(scans / "out")], f"cannot write {scans / 'out'}: it is inside the input folder {scans}"),
        (["-o", str(tmp_path / "o"), "--reference", "x.nii.gz"], "--reference applies to one image"),
        (["-o", str(tmp_path / "o"), "--probabilities", "p.nii.gz"], "with -i, --probabilities takes no file name"),
        (["-o", str(tmp_path / "o"), "--shard", "2/2"], "shard 2/2: needs 0 <= i < n"),
        (["-o", str(tmp_path / "o"), "--box", "1,1,4,4", "--slice", "2"],
         "give one kind of prompt: --prompts or --box/--point/--line/--box3d/--key-box, not both"),
    ):
        assert main(["segment", "-i", str(scans), "--prompts", str(prompts), *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert main(["segment", "-i", str(scans), "-o", str(tmp_path / "o")]) == 2
    assert "no prompt for case c1: give --box" in capsys.readouterr().err


def test_shards_and_torchrun_ranks():
    assert parse_shard(" 1 / 4 ") == Shard(1, 4)
    assert Shard(1, 3).take(["e", "a", "d", "b", "c"], key=str) == ["b", "e"]
    with pytest.raises(OptionError, match="expected i/n"):
        parse_shard("1-4")
    from promptseg.batch import shard_from_env

    assert shard_from_env({"RANK": "2", "WORLD_SIZE": "3"}) == Shard(2, 3, distributed=True)
    assert shard_from_env({}) == Shard()


def test_the_python_api(tmp_path):
    scans, prompts = make_cases(tmp_path, bad="none")
    cases = load_cases(scans, tmp_path / "out", prompts_dir=prompts)
    outcomes = run_batch(cases[:2], ThresholdSegmenter(), BatchSettings(), summary=tmp_path / "out" / "s.csv")
    assert [(o.case, o.status, o.voxels) for o in outcomes] == [("c1", "done", 240), ("c2", "done", 240)]
    assert summary(tmp_path / "out" / "s.csv")["c2"]["status"] == "done"


@pytest.mark.slow
def test_torchrun_two_ranks_write_the_same_masks_as_one_process(tmp_path):
    """The real LiteMedSAM under torchrun: 2 ranks, one model each, byte-identical masks to a 1-process run."""
    from datafiles import image, label
    from model_cache import middle_slice_box

    scans, prompts = tmp_path / "scans", tmp_path / "prompts"
    scans.mkdir()
    prompts.mkdir()
    for case in ("breast1", "brain2"):  # one case per rank
        reference = promptseg.load_labels(label(case)).array
        z, box = middle_slice_box(reference)
        (scans / f"{case}.nrrd").symlink_to(image(case))
        (prompts / f"{case}.json").write_text(json.dumps({"objects": [{"slice": int(z), "box": [float(v) for v in box]}]}))
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent), "PROMPTSEG_PRECISION": "fp32", "OMP_NUM_THREADS": "1"}
    common = ["segment", "-i", str(scans), "--prompts", str(prompts), "--no-progress", "--runtime", "torch"]
    subprocess.run([sys.executable, "-m", "promptseg.cli", *common, "-o", str(tmp_path / "one")], env=env, check=True,
                   capture_output=True, timeout=900)
    ran = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29517", "-m", "promptseg.cli", *common, "-o", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=900)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "2 case(s): 2 segmented, 0 finished earlier, 0 failed" in ran.stdout  # rank 0 gathered both
    assert sorted(summary(tmp_path / "two" / "summary.csv")) == ["brain2", "breast1"]
    for case in ("breast1", "brain2"):
        assert (tmp_path / "one" / f"{case}.nii.gz").read_bytes() == (tmp_path / "two" / f"{case}.nii.gz").read_bytes()


class _MaskPromptThreshold(ThresholdSegmenter):
    """The threshold fake, taking (and ignoring) a dense mask prompt."""

    def decode_with_mask(self, embedding, mask_logits, box=None, points=None, point_labels=None):
        return self.decode(embedding, box=box, points=points, point_labels=point_labels)


@pytest.mark.parametrize("flag", ["--refine-prompt", "--mask-prompt"])
def test_a_prompting_switch_reaches_every_case_and_its_sidecar(tmp_path, capsys, fake_model, flag, monkeypatch):
    import promptseg.models

    monkeypatch.setattr(promptseg.models, "build_segmenter", lambda *a, **k: _MaskPromptThreshold())
    scans, prompts = make_cases(tmp_path)
    out = tmp_path / "out"
    argv = ["segment", "-i", str(scans), "-o", str(out), "--prompts", str(prompts), "--no-progress"]
    name = flag[2:].replace("-", "_")
    assert main([*argv, flag]) == 1  # c3's prompt is outside its image
    assert "6 case(s): 5 segmented, 0 finished earlier, 1 failed" in capsys.readouterr().out
    sidecar = json.loads((out / "c1.provenance.json").read_text(encoding="utf-8"))
    assert sidecar["settings"][name] is True
    # the switch is part of the run's settings: without it the cases are redone, and say so
    assert main(argv) == 1
    assert "6 case(s): 5 segmented, 0 finished earlier, 1 failed" in capsys.readouterr().out
    sidecar = json.loads((out / "c1.provenance.json").read_text(encoding="utf-8"))
    assert name not in sidecar["settings"]
