"""`make bench`: promptseg's 3D propagation against a plain re-encoding loop, same prompt, same run.

Reference = what LiteMedSAM's challenge script does: for every slice of the
object's z-range, pre-process, run the image encoder in eager PyTorch, decode
the chained box. promptseg = `promptseg.segment` with its default encoder
runtime, automatic stop (no z-range), each slice encoded once.

The reference is given the z-range promptseg found, so both segment the same
slices; promptseg additionally encodes the two slices where it decided to
stop, and its time includes them. Runs alternate (reference, promptseg, ...)
so machine noise hits both alike; medians are reported, and the ratio is
computed from medians of the same run.

    python benchmarks/run.py --output docs/benchmarks.md [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import promptseg
from promptseg.demo import DEMO_IMAGE, DEMO_LABEL
from promptseg.models.registry import build_segmenter
from promptseg.prompts import box_from_mask, make_object


def reference_loop(model, images, z_range, z_seed, box):
    """Chained LiteMedSAM as in CVPR24_LiteMedSAM_infer.py: every slice re-encoded in eager PyTorch."""
    z0, z1 = z_range
    out = np.zeros(images.shape[:3], dtype=bool)
    net = model.net
    for direction, zs in ((1, range(z_seed, z1 + 1)), (-1, range(z_seed - 1, z0 - 1, -1))):
        for z in zs:
            batch, size = model.preprocess(images[z])
            with torch.no_grad():
                features = net.image_encoder(torch.from_numpy(batch))
            emb = promptseg.models.Embedding(features, images[z].shape[:2], size)
            previous = out[z - direction] if z != z_seed else None
            b = box if previous is None or not previous.any() else model.box_from_mask(previous)
            out[z] = model.decode(emb, box=b).mask
    return out


def bench_propagation(repeats: int) -> dict:
    volume = promptseg.load_volume(DEMO_IMAGE)
    reference = promptseg.load_labels(DEMO_LABEL, reference=volume).array > 0
    zs = np.nonzero(reference.any(axis=(1, 2)))[0]
    z_seed = int((zs[0] + zs[-1]) // 2)
    box = box_from_mask(reference[z_seed])
    prompt = make_object(slice=z_seed, box=box)

    t0 = time.perf_counter()
    model = build_segmenter("litemedsam")
    _ = model.encoder  # build (and on first use export/compile) the runtime outside the timed runs
    setup = time.perf_counter() - t0
    images = promptseg.normalize(volume)
    # warm-up both paths once
    result = promptseg.segment(volume, [prompt], model)
    z_range = (min(result.objects[0].slices), max(result.objects[0].slices))
    ref_mask = reference_loop(model, images, z_range, z_seed, box)

    ours, theirs = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        ref_mask = reference_loop(model, images, z_range, z_seed, box)
        theirs.append(time.perf_counter() - t)
        t = time.perf_counter()
        result = promptseg.segment(volume, [prompt], model)
        ours.append(time.perf_counter() - t)
    ref_slices = z_range[1] - z_range[0] + 1
    our_slices = len(result.encoded_slices)
    ours_ps = statistics.median(ours) / our_slices
    ref_ps = statistics.median(theirs) / ref_slices
    return {
        "runtime": model.encoder.name,
        "setup_s": setup,
        "our_slices": our_slices,
        "ref_slices": ref_slices,
        "ours_s_per_slice": ours_ps,
        "ref_s_per_slice": ref_ps,
        "speedup": ref_ps / ours_ps,
        "agreement_dice": promptseg.dice(result.mask(1), ref_mask),
        "dice_vs_expert_ours": promptseg.dice(result.mask(1), reference),
        "dice_vs_expert_ref": promptseg.dice(ref_mask, reference),
        "ours_runs": ours,
        "ref_runs": theirs,
        "z_range": z_range,
    }


def bench_encoders(repeats: int) -> list[tuple[str, float, float]]:
    """Batch-1 encoder latency per runtime on a real CT slice, and max |difference| to eager."""
    from promptseg.runtimes import available_runtimes, build_encoder_runtime

    volume = promptseg.load_volume(DEMO_IMAGE)
    model = build_segmenter("litemedsam", runtime="torch")
    batch, _ = model.preprocess(promptseg.normalize(volume)[33])
    with torch.inference_mode():
        eager = model.net.image_encoder(torch.from_numpy(batch)).numpy()
    rows = []
    for kind in available_runtimes():
        rt = build_encoder_runtime(model.net.image_encoder, input_size=256, kind=kind,
                                   cache_key=f"litemedsam-{model.weights_digest}-256")
        rt(batch)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            out = rt(batch)
            times.append(time.perf_counter() - t)
        rows.append((kind, statistics.median(times), float(np.abs(out - eager).max())))
    return rows


def bench_training(epochs: int) -> dict:
    """Decoder fine-tuning samples/s with cached embeddings vs re-encoding every sample every epoch."""
    import tempfile

    from promptseg.training.config import load_config
    from promptseg.training.loop import train
    from promptseg.training.prepare import PrepareSettings, prepare

    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = build_segmenter("litemedsam", runtime="torch")
        prepare(root / "examples" / "datasets" / "radiomics.csv", tmp / "prep", segmenter=model, progress=False,
                settings=PrepareSettings(min_object_voxels=100, min_object_pixels=10))
        out = {}
        for cached in (True, False):
            cfg = load_config(overrides=[f"data.prepared={tmp / 'prep'}", f"logging.dir={tmp / f'run{cached}'}",
                                         f"train.epochs={epochs}", "train.batch_size=2", "train.device=cpu",
                                         f"train.cache_embeddings={str(cached).lower()}", "prompts.flips=false",
                                         "logging.tensorboard=false"])
            t = time.perf_counter()
            result = train(cfg, progress=False, segmenter=build_segmenter("litemedsam", runtime="torch"))
            total = time.perf_counter() - t
            samples = 9  # the 9 lesion slices of the three cases
            per_epoch = statistics.median(h["seconds"] for h in result.history)
            out[cached] = {"samples_per_s": samples / per_epoch, "epoch_s": per_epoch, "total_s": total,
                           "encoded": result.encoded_for_cache}
    return {"cached": out[True], "reencode": out[False], "speedup": out[True]["samples_per_s"] / out[False]["samples_per_s"],
            "epochs": epochs}


def render(prop: dict, encoders: list, command: str, training: dict | None = None) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Produced by `{command}` on {dt.date.today().isoformat()}: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__}, Python {platform.python_version()}. "
        "The machine is shared and noisy: compare the ratios, measured in the same run, not the absolute seconds.",
        "",
        "## 3D propagation on a real CT (lung1, 512 x 512 x 48)",
        "",
        "Same prompt (the expert box on slice 33), same pre-processing. *Reference*: LiteMedSAM's challenge loop, "
        "every slice re-encoded in eager PyTorch, given the z-range promptseg found "
        f"({prop['z_range'][0]}-{prop['z_range'][1]}). *promptseg*: `promptseg.segment`, no z-range, "
        f"automatic stop, encoder runtime `{prop['runtime']}`; its time includes the "
        f"{prop['our_slices'] - prop['ref_slices']} slices it encodes to decide where to stop.",
        "",
        "| | slices encoded | seconds per slice (median) | runs (s) |",
        "|---|---|---|---|",
        f"| reference (eager PyTorch) | {prop['ref_slices']} | {prop['ref_s_per_slice']:.3f} | "
        + ", ".join(f"{t:.2f}" for t in prop["ref_runs"]) + " |",
        f"| promptseg | {prop['our_slices']} | {prop['ours_s_per_slice']:.3f} | "
        + ", ".join(f"{t:.2f}" for t in prop["ours_runs"]) + " |",
        "",
        f"- **speed-up per slice: {prop['speedup']:.2f}x** (target >= 2x)",
        f"- **agreement (Dice) between the two outputs: {prop['agreement_dice']:.4f}** (target >= 0.98)",
        f"- Dice vs the expert mask: promptseg {prop['dice_vs_expert_ours']:.3f}, reference {prop['dice_vs_expert_ref']:.3f}",
        f"- one-off model set-up (load weights, build the runtime; exports are cached): {prop['setup_s']:.1f} s",
        "",
        "## Image encoder alone (batch 1, one real CT slice)",
        "",
        "| runtime | seconds (median) | ratio to eager torch | max abs difference to eager |",
        "|---|---|---|---|",
    ]
    eager = next((t for k, t, _ in encoders if k == "torch"), None)
    for kind, t, diff in encoders:
        ratio = f"{eager / t:.2f}x" if eager else "-"
        lines.append(f"| {kind} | {t:.3f} | {ratio} | {diff:.2e} |")
    if training:
        c, r = training["cached"], training["reencode"]
        lines += [
            "",
            "## Fine-tuning: cached embeddings vs re-encoding (mask decoder trained, encoder frozen)",
            "",
            f"The 9 lesion slices of the bundled cases, batch 2, {training['epochs']} epochs, CPU, flips off (so both "
            "runs see the same samples). *Cached*: each slice encoded once before the first epoch, every epoch reuses "
            "the embeddings. *Re-encoding*: the frozen encoder runs on every sample in every epoch.",
            "",
            "| | samples/s (median epoch) | seconds per epoch | whole run incl. caching (s) |",
            "|---|---|---|---|",
            f"| cached embeddings | {c['samples_per_s']:.2f} | {c['epoch_s']:.2f} | {c['total_s']:.1f} |",
            f"| re-encoding | {r['samples_per_s']:.2f} | {r['epoch_s']:.2f} | {r['total_s']:.1f} |",
            "",
            f"- **{training['speedup']:.1f}x more samples/s with cached embeddings**",
        ]
    met = prop["speedup"] >= 2.0 and prop["agreement_dice"] >= 0.98
    lines += [
        "",
        "## Reading the numbers",
        "",
        f"- Target of issue 2 (>= 2x at agreement >= 0.98): **{'met' if met else 'not met'} in this run**.",
        "- Where the time goes: the image encoder is ~90 % of a slice; the rest is the prompt encoder + mask "
        "decoder (eager PyTorch, ~0.15-0.2 s) and pre-processing. promptseg never encodes a slice twice and "
        "normalises only the slices it visits, so its speed-up per slice is bounded by the encoder runtime's.",
        "- All runtimes are fp32 and agree with eager PyTorch to ~3e-6 (identical masks); no fp16/bf16/int8. "
        "The target was set on a quieter machine (eager 1.5-2.0 s, OpenVINO 0.71 s per slice, i.e. ~105 GFLOP/s "
        "for the 75 GFLOP encoder); a 2-thread sgemm probe on the machine that produced this file reached "
        "~60-66 GFLOP/s, and OpenVINO's gain over eager shrinks more than eager's own time when the host is busy.",
        "- Also tried (one-off probes on a quiet host, 2026-11-24, not re-run by `make bench`): the same slice's "
        "encoder took 2.05 s eager, 1.39 s in OpenVINO fp32 from the ONNX export and 1.39 s from OpenVINO's own "
        "PyTorch front end (no gain from skipping ONNX); NNCF int8 post-training quantisation (16 calibration "
        "slices) took 3.12 s -- 2.3x *slower* than fp32 on this CPU (AVX2 without VNNI) -- with a maximum relative "
        "error of 0.25, so it was rejected. On this hardware the fp32 encoder is the bound (~1.5x over eager).",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="docs/benchmarks.md")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    prop = bench_propagation(args.repeats)
    print(f"propagation: {prop['speedup']:.2f}x per slice, agreement Dice {prop['agreement_dice']:.4f}")
    encoders = bench_encoders(max(5, args.repeats))
    for kind, t, diff in encoders:
        print(f"encoder {kind}: {t:.3f} s, max diff {diff:.1e}")
    training = bench_training(epochs=3)
    print(f"training: {training['speedup']:.1f}x samples/s with cached embeddings")
    command = "make bench" if os.environ.get("MAKELEVEL") else "python " + " ".join(sys.argv)
    text = render(prop, encoders, command, training)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
