"""Fine-tuning: config validation, case-level splits, sample preparation, what trains, exact resume,
DDP on CPU, and a real fine-tune that improves Dice on held-out slices."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import promptseg
from promptseg.errors import PromptsegError
from promptseg.io import save_mask, save_volume
from promptseg.training.config import ConfigError, load_config
from promptseg.training.prepare import PrepareSettings, clean_labels, load_case, prepare, read_manifest, select_labels
from promptseg.datasets.splits import write_split
from promptseg.volume import Volume

from datafiles import REPO, image, label
from model_cache import litemedsam

CASES = ("lung1", "brain2", "breast1")


# ---------------------------------------------------------------------------
# config
def test_config_defaults_overrides_and_errors_name_the_key(tmp_path):
    cfg = load_config(overrides=["data.prepared=/p", "optim.lr=1e-4", "trainable.mode=lora", "trainable.parts=[mask_decoder, prompt_encoder]"])
    assert cfg.optim.lr == 1e-4 and cfg.trainable.mode == "lora"
    assert cfg.trainable.parts == ["mask_decoder", "prompt_encoder"]
    assert cfg.model.name == "litemedsam" and cfg.loss.dice == 1.0 and cfg.prompts.mode == "box"
    with pytest.raises(ConfigError, match=r"optim\.learning_rate: Extra inputs are not permitted"):
        load_config(overrides=["data.prepared=/p", "optim.learning_rate=1"])
    with pytest.raises(ConfigError, match=r"train\.epochs: Input should be greater than or equal to 1"):
        load_config(overrides=["data.prepared=/p", "train.epochs=0"])
    with pytest.raises(ConfigError, match=r"optim\.lr: Input should be a valid number"):
        load_config(overrides=["data.prepared=/p", "optim.lr=fast"])
    with pytest.raises(ConfigError, match=r"data: Field required"):
        load_config()
    with pytest.raises(ConfigError, match=r"trainable\.mode: Input should be 'full', 'parts', 'names' or 'lora'"):
        load_config(overrides=["data.prepared=/p", "trainable.mode=everything"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(overrides=["optim.lr"])
    path = tmp_path / "cfg.yaml"
    path.write_text("data:\n  prepared: prep\n  split: split.json\nlogging:\n  dir: runs/a\nmodel:\n  name: litemedsam\n  colour: red\n")
    with pytest.raises(ConfigError, match=r"model\.colour: Extra inputs are not permitted"):
        load_config(path)
    path.write_text("data:\n  prepared: prep\n")
    assert load_config(path).data.prepared == (tmp_path / "prep").resolve()  # relative to the config file
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("name", ["quickstart", "lora", "full", "fixed-box-layers"])
def test_example_configs_are_valid(name):
    cfg = load_config(REPO / "examples" / "configs" / f"{name}.yaml")
    assert cfg.model.name == "litemedsam"
    assert cfg.data.prepared == (REPO / "work" / "prepared").resolve()
    if name == "fixed-box-layers":
        from promptseg.training.trainable import apply_trainable

        net = _fresh().net
        apply_trainable(net, cfg.trainable)
        trained = [n for n, p in net.named_parameters() if p.requires_grad]
        assert trained and all(n.startswith("mask_decoder.") for n in trained)


# ---------------------------------------------------------------------------
# prepare
def test_clean_labels_drops_small_3d_then_2d_components():
    labels = np.zeros((4, 20, 20), np.int64)
    labels[0:4, 2:8, 2:8] = 1      # 144 voxels, 36 px per slice
    labels[1, 15:17, 15:17] = 1    # 4 voxels, separate
    labels[0:3, 12:14, 2:4] = 2    # 12 voxels
    out = clean_labels(labels, min_voxels=10, min_pixels=5)
    assert (out == 1).sum() == 144 and (out == 2).sum() == 0
    out = clean_labels(labels, min_voxels=5, min_pixels=5)
    assert (out == 2).sum() == 0  # 4 px per slice < 5
    assert np.array_equal(select_labels(labels, [2], {2: 7}), np.where(labels == 2, 7, 0))


def test_prepare_real_cases(tmp_path):
    out = prepare(REPO / "examples" / "datasets" / "radiomics.csv", tmp_path / "prep", segmenter=litemedsam(),
                  settings=PrepareSettings(min_object_voxels=100, min_object_pixels=10, empty_fraction=1.0), progress=False)
    info, rows = read_manifest(out)
    assert info["counts"] == {"cases": 3, "slices": 18, "samples": 18, "empty_samples": 9}
    assert info["model"] == "litemedsam" and info["input_size"] == 256
    assert sorted((r["case"], r["z"]) for r in rows if r["label"] == 1) == [
        ("brain2", 8), ("brain2", 9), ("brain2", 10), ("breast1", 8), ("breast1", 9), ("breast1", 10),
        ("lung1", 32), ("lung1", 33), ("lung1", 34)]
    arrays = load_case(out / "cases" / "lung1.npz")
    seg = litemedsam()
    z = int(np.nonzero(arrays["slice_z"] == 33)[0][0])
    vol = promptseg.load_volume(image("lung1"))
    padded, size = seg.prepare_slice(promptseg.normalize(vol)[33])
    assert np.array_equal(arrays["images"][z], padded) and tuple(arrays["sizes"][z]) == size
    ref = promptseg.load_labels(label("lung1"), reference=vol).array[33] > 0
    row = next(r for r in rows if r["case"] == "lung1" and r["z"] == 33)
    assert np.array_equal(arrays["masks"][row["mask_index"]], seg.prepare_mask(ref))
    # MedSAM's defaults (3D objects >= 1000 voxels) drop all three small lesions
    out2 = prepare(REPO / "examples" / "datasets" / "radiomics.csv", tmp_path / "prep2", segmenter=seg, progress=False)
    assert read_manifest(out2)[0]["counts"]["samples"] == 0


# ---------------------------------------------------------------------------
# training on held-out slices: each lesion's middle slice is its own validation "case"
@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    root = tmp_path_factory.mktemp("heldout")
    lines = ["case,image,label"]
    for c in CASES:
        vol = promptseg.load_volume(image(c))
        lab = promptseg.load_labels(label(c), reference=vol).array
        zs = np.nonzero(lab.any(axis=(1, 2)))[0]
        mid = (zs[0] + zs[-1]) // 2
        for part, sel in (("mid", [mid]), ("ends", [z for z in zs if z != mid])):
            sub = Volume(vol.array[sel], vol.spacing, vol.origin, vol.direction, modality=vol.modality)
            save_volume(sub, root / f"{c}_{part}_img.nrrd")
            save_mask(lab[sel], root / f"{c}_{part}_lab.nrrd", reference=sub)
            lines.append(f"{c}_{part},{c}_{part}_img.nrrd,{c}_{part}_lab.nrrd")
    (root / "ds.csv").write_text("\n".join(lines) + "\n")
    prepare(root / "ds.csv", root / "prep", segmenter=litemedsam(),
            settings=PrepareSettings(min_object_voxels=1, min_object_pixels=1), progress=False)
    write_split({"train": [f"{c}_ends" for c in CASES], "val": [f"{c}_mid" for c in CASES], "test": []}, root / "split.json")
    return root


def _cfg(root, run, *extra):
    return load_config(overrides=[f"data.prepared={root / 'prep'}", f"data.split={root / 'split.json'}",
                                  f"logging.dir={root / run}", "train.device=cpu", "train.batch_size=2",
                                  "prompts.jitter_px=3", "optim.lr=1e-4", *extra])


def _fresh():
    from promptseg.models.registry import build_segmenter

    return build_segmenter("litemedsam", runtime="torch")


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_frozen_parts_stay_frozen_and_embeddings_are_cached(heldout):
    from promptseg.training.loop import train

    start = {k: v.clone() for k, v in _fresh().net.state_dict().items()}
    result = train(_cfg(heldout, "decoder", "train.epochs=1"), progress=False, segmenter=_fresh())
    after = _weights(heldout / "decoder" / "latest.pt")
    assert after.keys() == start.keys()
    for key in start:
        same = torch.equal(after[key], start[key])
        if key.startswith(("image_encoder.", "prompt_encoder.")):
            assert same, f"{key} changed although frozen"
    assert any(not torch.equal(after[k], start[k]) for k in start if k.startswith("mask_decoder."))
    # the encoder is frozen: every slice was encoded once into the cache (6 train + 3 val slices) ...
    assert result.encoded_for_cache in (0, 9)
    again = train(_cfg(heldout, "decoder2", "train.epochs=1"), progress=False, segmenter=_fresh())
    assert again.encoded_for_cache == 0  # ... and reused by the next run
    rows = (heldout / "decoder" / "metrics.csv").read_text().splitlines()
    assert rows[0] == "epoch,step,train_loss,val_dice,lr,seconds" and len(rows) == 2
    assert any(p.name.startswith("events.out.tfevents") for p in (heldout / "decoder").iterdir())


def test_lora_trains_only_adapters_and_exports_merged_weights(heldout):
    from promptseg.training.loop import train

    start = {k: v.clone() for k, v in _fresh().net.state_dict().items()}
    train(_cfg(heldout, "lora", "train.epochs=1", "trainable.mode=lora", "lora.rank=4", "optim.lr=1e-3"),
          progress=False, segmenter=_fresh())
    payload = torch.load(heldout / "lora" / "latest.pt", map_location="cpu", weights_only=True)
    state = payload["train_state"]["model"]
    adapters = [k for k in state if "lora_" in k]
    assert adapters and all("mask_decoder.transformer" in k for k in adapters)
    assert any("lora_B" in k and state[k].abs().sum() > 0 for k in adapters)  # B starts at zero: it trained
    for key, value in state.items():
        if "lora_" not in key:
            base_key = key.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(value, start[base_key]), f"base weight {key} changed"
    merged = payload["model"]
    assert merged.keys() == start.keys()
    changed = [k for k in start if not torch.equal(merged[k], start[k])]
    assert changed and all(k.startswith("mask_decoder.transformer") and k.endswith("_proj.weight") for k in changed)
    # the exported weights load strictly into a plain LiteMedSAM
    from promptseg.models.litemedsam import LiteMedSAM

    LiteMedSAM(checkpoint=heldout / "lora" / "latest.pt", runtime="torch")


def test_early_stopping_ends_when_validation_stops_improving(heldout):
    from promptseg.training.loop import train

    # a learning rate too small to change any prediction: validation Dice is flat after epoch 0
    result = train(_cfg(heldout, "early", "train.epochs=6", "train.early_stopping=2", "optim.lr=1e-12"),
                   progress=False, segmenter=_fresh())
    assert result.epochs_run == 3 and result.best_epoch == 0
    assert len(set(round(h["val_dice"], 6) for h in result.history)) == 1
    assert round(result.start_val_dice, 6) == round(result.history[0]["val_dice"], 6)  # the baseline, before training
    assert [h["epoch"] for h in result.history] == [1, 2, 3]  # as the progress bars count


def test_wandb_offline_logging(heldout):
    pytest.importorskip("wandb")
    from promptseg.training.loop import train

    cfg = _cfg(heldout, "wandb", "train.epochs=1", "logging.wandb_project=promptseg-test", "logging.wandb_mode=offline",
               "train.max_steps=1")
    os.environ.setdefault("WANDB_SILENT", "true")
    train(cfg, progress=False, segmenter=_fresh())
    runs = list((heldout / "wandb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(heldout):
    from promptseg.training.loop import train

    train(_cfg(heldout, "straight", "train.epochs=2"), progress=False, segmenter=_fresh())
    train(_cfg(heldout, "crashed", "train.epochs=2"), progress=False, segmenter=_fresh(), stop_after_epoch=0)
    assert len((heldout / "crashed" / "metrics.csv").read_text().splitlines()) == 2
    with pytest.raises(PromptsegError, match="already holds a run"):
        train(_cfg(heldout, "crashed", "train.epochs=2"), progress=False, segmenter=_fresh())
    train(_cfg(heldout, "crashed", "train.epochs=2"), resume=True, progress=False, segmenter=_fresh())
    a, b = _weights(heldout / "straight" / "latest.pt"), _weights(heldout / "crashed" / "latest.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (heldout / "crashed" / "metrics.csv").read_text() .count("\n") == 3


@pytest.mark.slow
def test_fine_tune_improves_dice_on_held_out_slices(heldout):
    """Decoder fine-tune (2 epochs, fixed recipe) on each lesion's other slices; measured through the
    inference path on the held-out middle slices with their ground-truth boxes."""
    from promptseg.models.litemedsam import LiteMedSAM
    from promptseg.prompts import box_from_mask
    from promptseg.training.loop import train

    train(_cfg(heldout, "improve", "train.epochs=2"), progress=False, segmenter=_fresh())
    tuned = LiteMedSAM(checkpoint=heldout / "improve" / "latest.pt", runtime="torch")

    def mean_dice(model):
        scores = []
        for c in CASES:
            vol = promptseg.load_volume(heldout / f"{c}_mid_img.nrrd")
            ref = promptseg.load_labels(heldout / f"{c}_mid_lab.nrrd", reference=vol).array > 0
            obj = promptseg.make_object(slice=0, box=box_from_mask(ref[0]))
            # the one-slice sub-volumes carry no modality: say it, as prepare's guess did
            res = promptseg.segment(vol, [obj], model, mode="2d", modality="ct" if c == "lung1" else "mr")
            scores.append(promptseg.dice(res.mask(1), ref))
        return float(np.mean(scores)), scores

    before, per_before = mean_dice(litemedsam())
    after, per_after = mean_dice(tuned)
    print(f"held-out middle slices: Dice {before:.3f} -> {after:.3f} ({per_before} -> {per_after})")
    assert after >= before + 0.02, (before, after)


@pytest.mark.slow
def test_ddp_two_cpu_processes_agree_on_the_weights(heldout):
    run = heldout / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "promptseg.cli", "train", "--no-progress",
           "--set", f"data.prepared={heldout / 'prep'}", "--set", f"data.split={heldout / 'split.json'}",
           "--set", f"logging.dir={run}", "--set", "train.device=cpu", "--set", "train.epochs=1",
           "--set", "train.batch_size=1", "--set", "logging.tensorboard=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ranks = json.loads((run / "ddp_ranks.json").read_text())
    assert ranks["world_size"] == 2 and len(set(ranks["weight_digests"])) == 1
    assert (run / "best.pt").is_file()


@pytest.mark.slow
def test_cli_prepare_train_segment_evaluate(tmp_path, capsys):
    """The README's fine-tuning walk-through, end to end through the command line: train on brain2 and breast1,
    validate on lung1, then segment lung1 (never trained on) with the starting and the fine-tuned weights."""
    import re

    from promptseg.cli import main

    work = tmp_path / "work"
    assert main(["prepare", str(REPO / "examples" / "datasets" / "radiomics.csv"), "-o", str(work / "prepared"),
                 "--min-object-voxels", "100", "--min-object-pixels", "10"]) == 0
    assert main(["train", "--config", str(REPO / "examples" / "configs" / "quickstart.yaml"), "--no-progress",
                 "--set", f"data.prepared={work / 'prepared'}", "--set", f"logging.dir={work / 'run'}",
                 "--set", "train.epochs=1", "--set", "train.device=cpu"]) == 0
    out = capsys.readouterr().out
    match = re.search(r"validation Dice \(cases not trained on\): (0\.\d+) with the starting weights, (0\.\d+) after "
                      r"fine-tuning \(best.pt: epoch 1 of 1\)", out)
    assert match and (work / "run" / "best.pt").is_file(), out
    case = "lung1"  # the validation case of examples/splits/quickstart.json
    vol = promptseg.load_volume(image(case))
    ref = promptseg.load_labels(label(case), reference=vol).array > 0
    zs = np.nonzero(ref.any(axis=(1, 2)))[0]
    z = int((zs[0] + zs[-1]) // 2)
    from promptseg.prompts import box_from_mask

    box = ",".join(str(int(v)) for v in box_from_mask(ref[z]))
    dices = []
    for weights in ([], ["--checkpoint", str(work / "run" / "best.pt")]):
        pred = work / ("pred" if weights else "bundled") / f"{case}.nii.gz"
        assert main(["segment", str(image(case)), "-o", str(pred), "--box", box, "--slice", str(z),
                     "--reference", str(label(case)), "--no-progress", *weights]) == 0
        dices.append(float(re.search(r"Dice vs reference label 1: (\d\.\d+)", capsys.readouterr().out).group(1)))
    assert dices[0] == pytest.approx(0.795, abs=0.002) and dices[1] > 0.3
    gt_dir = work / "gt"
    gt_dir.mkdir()
    save_mask(ref.astype(np.uint8), gt_dir / f"{case}.nii.gz", reference=vol)
    assert main(["evaluate", "--pred", str(work / "pred"), "--gt", str(gt_dir), "-o", str(work / "metrics.csv")]) == 0
    text = (work / "metrics.csv").read_text().splitlines()
    assert text[0].startswith("case,label,dice,nsd,hd95") and text[1].startswith(f"{case},1,")
    assert float(text[1].split(",")[2]) == pytest.approx(dices[1], abs=1e-3)
