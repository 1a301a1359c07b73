"""A training run killed (SIGKILL) at any moment resumes to exactly the uninterrupted result.

Every run is a real ``promptseg train`` subprocess fine-tuning LiteMedSAM's mask
decoder on slices of the bundled breast MR. A small driver kills the process
with SIGKILL at chosen points -- half-way through writing ``latest.pt`` or
``best.pt``, between the checkpoints and ``metrics.csv``, before the first
checkpoint -- and once at a random moment; ``promptseg train --resume`` must then
finish with the uninterrupted run's weights (bit for bit), its ``metrics.csv``
rows (one per epoch, none twice), its ``best.pt``, and no temporary files.
"""

import csv
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import promptseg
from promptseg.io import save_mask, save_volume
from promptseg.training.prepare import PrepareSettings, prepare
from promptseg.datasets.splits import write_split
from promptseg.volume import Volume

from datafiles import REPO, image, label
from model_cache import litemedsam

pytestmark = pytest.mark.slow

EPOCHS = 3

# Runs the CLI after arranging a SIGKILL of this very process at one point of the run.
DRIVER = r"""
import os, signal, sys
from pathlib import Path
import torch
from promptseg.training import loop

point, nth = sys.argv[1], int(sys.argv[2])
calls = [0]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if point in ("latest-partial", "best-partial"):
    prefix = ".latest.tmp-" if point == "latest-partial" else ".best.tmp-"
    real_save = torch.save
    def save(obj, f, *args, **kwargs):
        result = real_save(obj, f, *args, **kwargs)
        if Path(f).name.startswith(prefix):
            calls[0] += 1
            if calls[0] == nth:  # half a checkpoint on disk, then the kill
                os.truncate(f, os.path.getsize(f) // 2)
                die()
        return result
    torch.save = save
elif point == "before-metrics":
    real_write = loop.write_metrics
    def write_metrics(run_dir, history):
        calls[0] += 1
        if calls[0] == nth:
            die()
        return real_write(run_dir, history)
    loop.write_metrics = write_metrics

from promptseg.cli import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A prepared two-case dataset (breast1: lesion's middle slice validates, the others train),
    a config, and the uninterrupted reference run."""
    root = tmp_path_factory.mktemp("killtrain")
    vol = promptseg.load_volume(image("breast1"))
    lab = promptseg.load_labels(label("breast1"), reference=vol).array
    zs = np.nonzero(lab.any(axis=(1, 2)))[0]
    mid = int((zs[0] + zs[-1]) // 2)
    lines = ["case,image,label"]
    for part, sel in (("mid", [mid]), ("ends", [int(z) for z in zs if z != mid])):
        sub = Volume(vol.array[sel], vol.spacing, vol.origin, vol.direction, modality=vol.modality)
        save_volume(sub, root / f"{part}_img.nrrd")
        save_mask(lab[sel], root / f"{part}_lab.nrrd", reference=sub)
        lines.append(f"{part},{part}_img.nrrd,{part}_lab.nrrd")
    (root / "ds.csv").write_text("\n".join(lines) + "\n")
    prepare(root / "ds.csv", root / "prep", segmenter=litemedsam(),
            settings=PrepareSettings(min_object_voxels=1, min_object_pixels=1), progress=False)
    write_split({"train": ["ends"], "val": ["mid"], "test": []}, root / "split.json")
    (root / "cfg.yaml").write_text(
        f"data:\n  prepared: {root / 'prep'}\n  split: {root / 'split.json'}\n"
        f"train:\n  epochs: {EPOCHS}\n  batch_size: 2\n  device: cpu\n"
        "prompts:\n  jitter_px: 3\noptim:\n  lr: 0.0001\nlogging:\n  tensorboard: false\n"
    )
    reference = _train(root, "reference")
    assert reference.returncode == 0, reference.stderr
    return root


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                OMP_NUM_THREADS="1")


def _args(root, run, *extra):
    return ["train", "--config", str(root / "cfg.yaml"), "--set", f"logging.dir={root / run}", "--no-progress", *extra]


def _train(root, run, *extra):
    return subprocess.run([sys.executable, "-m", "promptseg.cli", *_args(root, run, *extra)],
                          capture_output=True, text=True, env=_env(), cwd=str(root), timeout=900)


def _killed(root, run, point, nth, fresh=False):
    extra = () if fresh else ("--resume",)
    done = subprocess.run([sys.executable, "-c", DRIVER, point, str(nth), *_args(root, run, *extra)],
                          capture_output=True, text=True, env=_env(), cwd=str(root), timeout=900)
    assert done.returncode == -signal.SIGKILL, done.stderr
    return done


def _rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


def _checkpoint(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same_as_reference(root, run):
    ref, got = root / "reference", root / run
    a, b = _checkpoint(ref / "latest.pt")["model"], _checkpoint(got / "latest.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _rows(got / "metrics.csv") == _rows(ref / "metrics.csv")
    assert [r["epoch"] for r in _rows(got / "metrics.csv")] == [str(e) for e in range(1, EPOCHS + 1)]
    best_ref, best_got = _checkpoint(ref / "best.pt"), _checkpoint(got / "best.pt")
    assert best_got["epoch"] == best_ref["epoch"]
    assert all(torch.equal(best_ref["model"][k], best_got["model"][k]) for k in best_ref["model"])
    assert sorted(p.name for p in got.iterdir() if ".tmp-" in p.name) == []


def _state(folder):
    """(epochs in metrics.csv, temporary files) of a run folder."""
    rows = _rows(folder / "metrics.csv") if (folder / "metrics.csv").exists() else []
    return len(rows), len([p for p in folder.iterdir() if ".tmp-" in p.name])


def test_a_run_killed_again_and_again_resumes_to_the_uninterrupted_result(setup):
    """One run, killed four times (each resume is killed at the next point), then completed."""
    run, folder = "chain", setup / "chain"
    # 1. half-way through the first latest.pt: no complete checkpoint at all
    _killed(setup, run, "latest-partial", 1, fresh=True)
    assert _state(folder) == (0, 1)
    # 2. the resume starts from epoch 1 and is killed half-way through the first best.pt
    #    (main used to refuse this resume: "no latest.pt")
    _killed(setup, run, "best-partial", 1)
    assert _state(folder) == (0, 1) and (folder / "latest.pt").is_file() and not (folder / "best.pt").exists()
    # 3. the resume writes best.pt from latest.pt, trains epoch 2 and is killed before its metrics.csv
    #    row (the 1st metrics.csv write of this process is the resume's own rewrite)
    _killed(setup, run, "before-metrics", 2)
    assert _state(folder) == (1, 0) and (folder / "best.pt").is_file()
    # 4. the resume is killed half-way through epoch 3's latest.pt
    _killed(setup, run, "latest-partial", 1)
    assert _state(folder) == (2, 1)
    # 5. the last resume completes, removing the leftover of the killed write
    resumed = _train(setup, run, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "left by an interrupted write" in resumed.stderr
    _assert_same_as_reference(setup, run)


def test_resume_after_a_kill_at_a_random_moment(setup):
    run = "random"
    process = subprocess.Popen([sys.executable, "-m", "promptseg.cli", *_args(setup, run)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), cwd=str(setup))
    try:
        deadline = time.monotonic() + 600
        while not (setup / run / "metrics.csv").exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(random.Random().uniform(0, 1.5))  # somewhere in epoch 1 or 2, or in a write
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    resumed = _train(setup, run, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_as_reference(setup, run)


def test_resume_without_any_run_is_a_one_line_error(setup):
    done = _train(setup, "nothing-here", "--resume")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"promptseg: error: --resume: no run in {setup / 'nothing-here'} (no latest.pt, no config.yaml)")
