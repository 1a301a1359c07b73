"""Fine-tuning the SAM / MedSAM and SAM2 families: decoder-only and LoRA, on real slices.

The architectures are the upstream ones with small random image encoders (no real
weights can be downloaded here), so these tests check the mechanics -- what trains,
what stays frozen, what the checkpoints hold and that they load back strictly --
not how good the masks are.
"""

import numpy as np
import pytest
import torch

import promptseg
from promptseg.io import save_mask, save_volume
from promptseg.training.config import load_config
from promptseg.training.prepare import PrepareSettings, load_case, prepare, read_manifest
from promptseg.datasets.splits import write_split
from promptseg.volume import Volume

from datafiles import image, label

#: a SAM ViT with 2 blocks of width 64 (the prompt encoder and mask decoder are SAM's own)
SAM_TINY = dict(embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,))
#: a SAM2.1 Hiera with 5 blocks at 256 px (upstream refuses a global-attention block at a stage change)
SAM2_TINY = (
    "++model.image_encoder.trunk.stages=[1,1,2,1]",
    "++model.image_encoder.trunk.global_att_blocks=[3]",
    "++model.memory_attention.num_layers=1",
    "++model.image_size=256",
    "++model.memory_attention.layer.self_attention.feat_sizes=[16,16]",
    "++model.memory_attention.layer.cross_attention.feat_sizes=[16,16]",
)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from promptseg.models.sam import ViTSize, build_sam_network
    from promptseg.models.sam2 import VARIANTS, build_network

    root = tmp_path_factory.mktemp("family_weights")
    torch.manual_seed(0)
    torch.save(build_sam_network(ViTSize(**SAM_TINY)).state_dict(), root / "medsam_tiny.pth")
    torch.save({"model": build_network(VARIANTS["sam2.1-hiera-tiny"], SAM2_TINY).state_dict()}, root / "sam21_tiny.pt")
    return root


def _medsam(weights, checkpoint=None):
    from promptseg.models.sam import SamSegmenter, ViTSize

    return SamSegmenter(checkpoint or weights / "medsam_tiny.pth", variant="medsam-vit-b", vit=ViTSize(**SAM_TINY))


def _sam2(weights, checkpoint=None):
    from promptseg.models.sam2 import SAM2Segmenter

    return SAM2Segmenter("sam2.1-hiera-tiny", checkpoint=checkpoint or weights / "sam21_tiny.pt", hydra_overrides=SAM2_TINY)


@pytest.fixture(scope="module")
def lung_dataset(tmp_path_factory):
    """lung1's tumour slices: the middle one validates, the others train."""
    root = tmp_path_factory.mktemp("family_data")
    vol = promptseg.load_volume(image("lung1"))
    lab = promptseg.load_labels(label("lung1"), reference=vol).array
    zs = np.nonzero(lab.any(axis=(1, 2)))[0]
    mid = int((zs[0] + zs[-1]) // 2)
    lines = ["case,image,label"]
    for part, sel in (("mid", [mid]), ("ends", [int(z) for z in zs if z != mid][:4])):
        sub = Volume(vol.array[sel], vol.spacing, vol.origin, vol.direction, modality=vol.modality)
        save_volume(sub, root / f"{part}_img.nrrd")
        save_mask(lab[sel], root / f"{part}_lab.nrrd", reference=sub)
        lines.append(f"{part},{part}_img.nrrd,{part}_lab.nrrd")
    (root / "ds.csv").write_text("\n".join(lines) + "\n")
    write_split({"train": ["ends"], "val": ["mid"], "test": []}, root / "split.json")
    return root


def _prepare(root, segmenter, name):
    out = root / f"prep_{name}"
    if not out.exists():
        prepare(root / "ds.csv", out, segmenter=segmenter,
                settings=PrepareSettings(min_object_voxels=1, min_object_pixels=1), progress=False)
    return out


def _cfg(root, prepared, run, *extra):
    return load_config(overrides=[f"data.prepared={prepared}", f"data.split={root / 'split.json'}",
                                  f"logging.dir={root / run}", "train.device=cpu", "train.batch_size=2",
                                  "prompts.jitter_px=5", *extra])


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_prepare_follows_each_family_grid(lung_dataset, weights):
    medsam, sam2 = _medsam(weights), _sam2(weights)
    for seg in (medsam, sam2):
        prepared = _prepare(lung_dataset, seg, seg.name)
        info, rows = read_manifest(prepared)
        assert info["model"] == seg.name and info["input_size"] == seg.input_size
        arrays = load_case(prepared / "cases" / "mid.npz")
        assert arrays["images"].shape[1:3] == (seg.input_size, seg.input_size)
        sub = promptseg.load_volume(lung_dataset / "mid_img.nrrd")
        ref = promptseg.load_labels(lung_dataset / "mid_lab.nrrd", reference=sub).array[0] > 0
        prepared_slice, size = seg.prepare_slice(promptseg.normalize(sub)[0])
        assert np.array_equal(arrays["images"][0], prepared_slice) and tuple(arrays["sizes"][0]) == size
        row = next(r for r in rows if r["case"] == "mid")
        assert np.array_equal(arrays["masks"][row["mask_index"]], seg.prepare_mask(ref))


def test_prepare_needs_no_weights(lung_dataset, weights):
    """``promptseg prepare --model medsam-vit-b`` works before any checkpoint is downloaded,
    and gives the samples the loaded model prepares."""
    from promptseg.cli import main

    by_model = lung_dataset / "prep_by_name"
    assert main(["prepare", str(lung_dataset / "ds.csv"), "-o", str(by_model), "--model", "medsam-vit-b",
                 "--min-object-voxels", "1", "--min-object-pixels", "1"]) == 0
    by_segmenter = _prepare(lung_dataset, _medsam(weights), "medsam-vit-b")
    _same_samples(by_model, by_segmenter)
    # SAM2: the samples follow the variant's input size (medsam2: 512 px) with no weights loaded
    sam2_by_name = prepare(lung_dataset / "ds.csv", lung_dataset / "prep_medsam2", model="medsam2",
                           settings=PrepareSettings(min_object_voxels=1, min_object_pixels=1), progress=False)
    info = read_manifest(sam2_by_name)[0]
    assert info["model"] == "medsam2" and info["input_size"] == 512
    assert load_case(sam2_by_name / "cases" / "mid.npz")["images"].shape[1:3] == (512, 512)


def _same_samples(a_dir, b_dir):
    assert read_manifest(a_dir)[1] == read_manifest(b_dir)[1]
    for case in ("mid", "ends"):
        a, b = load_case(a_dir / "cases" / f"{case}.npz"), load_case(b_dir / "cases" / f"{case}.npz")
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_medsam_decoder_only_with_cached_embeddings(lung_dataset, weights):
    from promptseg.training.loop import train

    seg = _medsam(weights)
    prepared = _prepare(lung_dataset, seg, seg.name)
    start = {k: v.clone() for k, v in seg.net.state_dict().items()}
    result = train(_cfg(lung_dataset, prepared, "medsam_decoder", "train.epochs=2", "optim.lr=1e-3"),
                   progress=False, segmenter=seg)
    n_samples = len(read_manifest(prepared)[1])
    assert result.encoded_for_cache == n_samples  # frozen encoder: every slice encoded once, reused by both epochs
    after = _state(lung_dataset / "medsam_decoder" / "best.pt")["model"]
    assert after.keys() == start.keys()
    for key in start:
        if key.startswith(("image_encoder.", "prompt_encoder.")):
            assert torch.equal(after[key], start[key]), f"{key} changed although frozen"
    assert any(not torch.equal(after[k], start[k]) for k in start if k.startswith("mask_decoder."))
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    # the checkpoint loads strictly into a fresh MedSAM and is what it runs
    tuned = _medsam(weights, lung_dataset / "medsam_decoder" / "best.pt")
    assert all(torch.equal(tuned.net.state_dict()[k], after[k]) for k in after)


def test_medsam_lora_trains_only_adapters_and_exports_merged_weights(lung_dataset, weights):
    from promptseg.training.loop import train

    seg = _medsam(weights)
    prepared = _prepare(lung_dataset, seg, seg.name)
    start = {k: v.clone() for k, v in seg.net.state_dict().items()}
    train(_cfg(lung_dataset, prepared, "medsam_lora", "train.epochs=1", "trainable.mode=lora", "lora.rank=4",
               "optim.lr=1e-2"), progress=False, segmenter=seg)
    _check_lora_run(lung_dataset / "medsam_lora" / "latest.pt", start)
    _medsam(weights, lung_dataset / "medsam_lora" / "latest.pt")


def _check_lora_run(latest, start):
    """Adapters only in the mask decoder's transformer; the exported merged weights differ from
    ``start`` only in the adapted projections."""
    payload = _state(latest)
    adapters = [k for k in payload["train_state"]["model"] if "lora_" in k]
    assert adapters and all("mask_decoder.transformer" in k for k in adapters)
    merged = payload["model"]
    assert merged.keys() == start.keys()
    changed = [k for k in start if not torch.equal(merged[k], start[k])]
    assert changed and all(k.startswith("mask_decoder.transformer") and k.endswith("_proj.weight") for k in changed)


def test_sam2_decoder_only_and_lora_in_image_mode(lung_dataset, weights):
    from promptseg.models.sam2 import SAM2TrainingView
    from promptseg.training.loop import train

    seg = _sam2(weights)
    prepared = _prepare(lung_dataset, seg, seg.name)
    start = {k: v.clone() for k, v in seg.net.state_dict().items()}
    result = train(_cfg(lung_dataset, prepared, "sam2_decoder", "train.epochs=1", "optim.lr=1e-3"),
                   progress=False, segmenter=seg)
    assert result.encoded_for_cache == 0  # SAM2 features are not cached: re-encoded per sample
    after = _state(lung_dataset / "sam2_decoder" / "best.pt")["model"]
    assert after.keys() == start.keys()  # the training view's names: every SAM2 tensor once
    for key in start:
        if not key.startswith("mask_decoder."):
            assert torch.equal(after[key], start[key]), f"{key} changed although frozen"
    assert any(not torch.equal(after[k], start[k]) for k in start if k.startswith("mask_decoder."))
    tuned = _sam2(weights, lung_dataset / "sam2_decoder" / "best.pt")
    names = SAM2TrainingView(tuned.model).base_names()
    assert all(torch.equal(tuned.model.state_dict()[names[k]], after[k]) for k in after)

    seg = _sam2(weights)
    train(_cfg(lung_dataset, prepared, "sam2_lora", "train.epochs=1", "trainable.mode=lora", "lora.rank=4",
               "optim.lr=1e-2"), progress=False, segmenter=seg)
    _check_lora_run(lung_dataset / "sam2_lora" / "latest.pt", start)
    _sam2(weights, lung_dataset / "sam2_lora" / "latest.pt")
