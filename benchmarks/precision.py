"""Encoder precision on this CPU: what ``auto`` chose and why, each precision's speed and masks, whole 3D runs.

Measurements (each a function returning what it measured):

* :func:`cpu_report` -- CPU model, the flags that matter, what runs natively, load average.
* :func:`measure_auto` -- the precision ``precision="auto"`` chooses and the gate's reason.
* :func:`measure_encoder_precisions` -- the image encoder alone (batch 1, a real CT slice) in
  eager PyTorch and in OpenVINO fp32 / bf16 / int8, runs interleaved, medians; and each
  precision's masks on the 9 gate slices vs fp32 (mean / min Dice).
* :func:`measure_whole_runs` -- per bundled case, the whole 3D run of ``promptseg.segment``
  at each precision against the eager reference (LiteMedSAM's challenge loop: every slice
  re-encoded and decoded in eager PyTorch, given the z-range promptseg found), interleaved,
  on the same slices (promptseg given that z-range too) and with promptseg's automatic
  stop, and the 3D agreement of each precision's mask with promptseg's own fp32 mask.

Reduced precisions are built here even where the gate rejects them (the point is to
measure them), by loading the cached export into OpenVINO at that precision.

    python benchmarks/precision.py [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

import promptseg
from promptseg.models.registry import build_segmenter
from promptseg.prompts import box_from_mask, make_object
from promptseg.runtimes import cpu, onnx_export, openvino_backend, quantize
from promptseg.runtimes.base import PerSliceRuntime, default_num_threads
from promptseg.runtimes.eager import TorchRuntime
from promptseg.runtimes.precision import mask_dice, run_trial
from promptseg.models.litemedsam import real_slice_check
from promptseg.runtimes.real_slices import CASES, DATA

PRECISIONS = ("fp32", "bf16", "int8")


def cpu_report() -> dict:
    """CPU model and flags, natively run precisions (with evidence), OpenVINO's capabilities, load."""
    info = cpu.cpu_info()
    return {
        "cpu": info.model,
        "flags": info.reported_flags(),
        "native": cpu.native_precisions(),
        "openvino_capabilities": sorted(cpu.openvino_capabilities() or []),
        "cores": default_num_threads(),
        "load_average": os.getloadavg(),
        "openvino": openvino_backend.version(),
        "torch": torch.__version__,
    }


def measure_auto() -> dict:
    """What ``build_segmenter("litemedsam")`` (precision auto) runs, why, and how long building it took."""
    start = time.perf_counter()
    model = build_segmenter("litemedsam")
    encoder = model.encoder
    return {"runtime": encoder.name, "precision": encoder.precision, "reason": encoder.precision_reason,
            "build_s": time.perf_counter() - start}


def encoder_at(model, precision: str):
    """The LiteMedSAM encoder at ``precision`` (``"eager"``: PyTorch), bypassing the gate."""
    if precision == "eager":
        return TorchRuntime(model.net.image_encoder, 256, torch.device("cpu"), None)
    folder = onnx_export.default_cache_dir()
    artefact = onnx_export.OnnxArtefact(model.net.image_encoder, 256, f"litemedsam-{model.weights_digest}-256", folder)
    path, _, _ = artefact.get()
    if precision == "int8":
        path, _ = quantize.int8_model(path, real_slice_check(model).calibration_inputs, folder)
    run_one = openvino_backend.load(path, default_num_threads(), precision, folder / "openvino" / precision)
    runtime = PerSliceRuntime("openvino", run_one, 256)
    runtime.precision = precision
    return runtime


def interleaved(calls: dict, repeats: int) -> dict:
    """Median seconds of each zero-argument call, run round-robin ``repeats`` times after one warm-up each."""
    for call in calls.values():
        call()
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: {"median_s": statistics.median(t), "runs_s": t} for name, t in times.items()}


def measure_encoder_precisions(repeats: int = 5) -> dict:
    """Encoder seconds per precision on lung1 z = 33 (interleaved medians) and gate Dice per precision."""
    model = build_segmenter("litemedsam", runtime="torch")
    volume = promptseg.load_volume(DATA / "lung1_image.nrrd")
    batch, _ = model.preprocess(promptseg.normalize(volume)[33])
    runtimes = {p: encoder_at(model, p) for p in ("eager",) + PRECISIONS}
    timing = interleaved({p: (lambda r=r: r(batch)) for p, r in runtimes.items()}, repeats)
    check = real_slice_check(model)  # eager decoder (runtime "torch"), as the gate of an eager model
    fp32_trial, reference = run_trial("fp32", runtimes["fp32"], check)
    rows = {}
    for name, runtime in runtimes.items():
        trial = fp32_trial if name == "fp32" else run_trial(name, runtime, check, reference)[0]
        rows[name] = {
            **timing[name],
            "ratio_to_eager": timing["eager"]["median_s"] / timing[name]["median_s"],
            "gate_mean_dice": trial.mean_dice, "gate_min_dice": trial.min_dice, "gate_dice": trial.dice,
        }
    return rows


def reference_run(model, images, z_range, z_seed, box) -> np.ndarray:
    """LiteMedSAM's challenge loop: every slice of the z-range encoded and decoded in eager PyTorch, box chained."""
    z0, z1 = z_range
    out = np.zeros(images.shape[:3], dtype=bool)
    for direction, zs in ((1, range(z_seed, z1 + 1)), (-1, range(z_seed - 1, z0 - 1, -1))):
        for z in zs:
            batch, size = model.preprocess(images[z])
            with torch.no_grad():
                features = model.net.image_encoder(torch.from_numpy(batch))
            embedding = promptseg.models.Embedding(features, images[z].shape[:2], size)
            previous = out[z - direction] if z != z_seed else None
            prompt_box = box if previous is None or not previous.any() else model.box_from_mask(previous)
            out[z] = model.decode(embedding, box=prompt_box).mask
    return out


def measure_whole_runs(repeats: int = 3, precisions=PRECISIONS, encoders: dict | None = None) -> dict:
    """Per bundled case: whole-run seconds of promptseg at each precision and of the eager reference (interleaved
    medians), their ratio, and each precision's 3D Dice agreement with promptseg's fp32 mask.

    Two promptseg runs per precision: *same slices* -- the prompt carries the z-range the reference is given
    (the slices promptseg's fp32 run kept), so both encode exactly those slices, as issue 13's target reads --
    and *auto stop* -- no z-range, promptseg also encodes the slice past each end where it decides to stop.
    Every timed call starts from the same :class:`~promptseg.volume.Volume` (the reference's intensity
    normalisation is inside its time, as promptseg's is).

    ``encoders`` (optional) maps a label to ``factory(model) -> encoder runtime`` (``"fp32"`` among them,
    the agreement's reference); by default each of ``precisions`` through :func:`encoder_at`.
    """
    if encoders is None:
        encoders = {p: (lambda model, p=p: encoder_at(model, p)) for p in precisions}
    precisions = tuple(encoders)
    eager_model = build_segmenter("litemedsam", runtime="torch", precision="fp32")  # eager decoder too
    models = {}
    for precision, factory in encoders.items():
        model = build_segmenter("litemedsam", precision="fp32")
        model.__dict__["encoder"] = factory(model)  # bypass the gate: measure what it would give
        models[precision] = model
    out = {}
    for case in CASES:
        volume = promptseg.load_volume(DATA / f"{case}_image.nrrd")
        expert = promptseg.load_labels(DATA / f"{case}_label.nrrd", reference=volume).array > 0
        zs = np.nonzero(expert.any(axis=(1, 2)))[0]
        z_seed = int((zs[0] + zs[-1]) // 2)
        box = box_from_mask(expert[z_seed])
        prompt = make_object(slice=z_seed, box=box)
        auto_fp32 = promptseg.segment(volume, [prompt], models["fp32"])
        slices = auto_fp32.objects[0].slices
        z_range = (min(slices), max(slices))
        same = make_object(slice=z_seed, box=box, z_range=z_range)
        masks, encoded = {}, {}

        def reference():
            masks["reference"] = reference_run(eager_model, promptseg.normalize(volume), z_range, z_seed, box)

        def ours(key, model, object_prompt):
            result = promptseg.segment(volume, [object_prompt], model)
            masks[key], encoded[key] = result.mask(1), len(result.encoded_slices)

        calls = {"reference": reference}
        for p, m in models.items():
            calls[p] = lambda p=p, m=m: ours(p, m, same)
            calls[f"{p}-auto"] = lambda p=p, m=m: ours(f"{p}-auto", m, prompt)
        timing = interleaved(calls, repeats)
        ref_s = timing["reference"]["median_s"]
        row = {"shape": volume.shape, "z_range": z_range, "reference_s": ref_s,
               "reference_runs_s": timing["reference"]["runs_s"],
               "reference_slices": z_range[1] - z_range[0] + 1,
               "reference_vs_fp32_dice": mask_dice(masks["reference"], masks["fp32"])}
        for p in precisions:
            row[p] = {"seconds": timing[p]["median_s"], "runs_s": timing[p]["runs_s"],
                      "ratio": ref_s / timing[p]["median_s"],
                      "agreement_vs_fp32": mask_dice(masks[p], masks["fp32"]),
                      "dice_vs_expert": mask_dice(masks[p], expert),
                      "encoded_slices": encoded[p],
                      "auto_stop": {"seconds": timing[f"{p}-auto"]["median_s"],
                                    "ratio": ref_s / timing[f"{p}-auto"]["median_s"],
                                    "agreement_vs_fp32": mask_dice(masks[f"{p}-auto"], masks["fp32-auto"]),
                                    "encoded_slices": encoded[f"{p}-auto"]}}
        out[case] = row
    return out


def whole_run_target(runs: dict, precision: str, ratio: float = 3.5, agreement: float = 0.98) -> dict:
    """Issue 13's whole-run target for one precision: the smallest same-slice ratio and agreement over the cases."""
    rows = [row[precision] for row in runs.values()]
    low_ratio = min(r["ratio"] for r in rows)
    low_agreement = min(r["agreement_vs_fp32"] for r in rows)
    return {"precision": precision, "min_ratio": low_ratio, "min_agreement": low_agreement,
            "met": low_ratio >= ratio and low_agreement >= agreement, "ratio_target": ratio,
            "agreement_target": agreement}


def print_whole_runs(runs: dict) -> None:
    """One line per case: the reference's seconds, each encoder's same-slice and auto-stop ratio and agreement."""
    for case, row in runs.items():
        labels = [key for key, value in row.items() if isinstance(value, dict) and "ratio" in value]
        print(case, f"reference {row['reference_s']:.2f} s;",
              "; ".join(f"{p} {row[p]['seconds']:.2f} s = {row[p]['ratio']:.2f}x (auto stop "
                        f"{row[p]['auto_stop']['ratio']:.2f}x), agreement {row[p]['agreement_vs_fp32']:.4f}"
                        for p in labels))


def finish_report(report: dict, path: str | None) -> None:
    """Record the load average at the end and write ``report`` as JSON to ``path`` (if given)."""
    report["cpu"]["load_average_end"] = os.getloadavg()
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=1, default=str)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    report = {"cpu": cpu_report(), "auto": measure_auto()}
    print(json.dumps(report, indent=1))
    report["encoders"] = measure_encoder_precisions(max(5, args.repeats))
    for name, row in report["encoders"].items():
        print(f"encoder {name}: {row['median_s']:.3f} s ({row['ratio_to_eager']:.2f}x eager), gate mean Dice "
              f"{row['gate_mean_dice']:.4f} min {row['gate_min_dice']:.4f}")
    report["whole_runs"] = measure_whole_runs(args.repeats)
    print_whole_runs(report["whole_runs"])
    finish_report(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
