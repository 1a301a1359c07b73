"""Where bf16 loses LiteMedSAM's encoder accuracy: the encoder run stage by stage, each stage fp32 or bf16.

The TinyViT image encoder is cut at its stage boundaries (patch embedding, ``layers.0`` to
``layers.3``, neck); each stage is exported to ONNX and compiled by OpenVINO at fp32 and at bf16,
so a *mix* runs chosen stages truly in fp32 (OpenVINO's per-node ``precise`` marks cannot keep a
matrix product in fp32 under a bf16 hint: docs/speed.md). Measured:

* :func:`measure_stages` -- per stage, fp32 and bf16 seconds (interleaved medians), and with only
  that stage in bf16: the features' relative error vs fp32 and the gate's mean / min Dice on the 9
  bundled lesion slices (``promptseg.runtimes.precision``'s gate, 0.98 mean to pass).
* :func:`measure_mixes` -- bf16 on a growing set of stages, the least harmful first (ordered by the
  error above): the error, the gate and the whole encoder's seconds against the fp32 and bf16
  encoders promptseg compiles (interleaved), so the speed a mix buys is read against what it costs.
* ``--whole-runs``: :func:`benchmarks.precision.measure_whole_runs` for fp32, bf16 and the mix with
  the most stages in bf16 that passes the gate (issue 13's 3.5x / 0.98 target).

Not part of ``make bench`` (it compiles 12 models and takes minutes); it backs the mixed-precision
paragraph of docs/speed.md.

    python benchmarks/mixed_precision.py [--repeats 5] [--whole-runs] [--json out.json]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from precision import (cpu_report, encoder_at, finish_report, interleaved, measure_whole_runs,  # noqa: E402
                       print_whole_runs, whole_run_target)

from promptseg.models.litemedsam import real_slice_check  # noqa: E402
from promptseg.models.registry import build_segmenter  # noqa: E402
from promptseg.runtimes import openvino_backend  # noqa: E402
from promptseg.runtimes.base import PerSliceRuntime, default_num_threads  # noqa: E402
from promptseg.runtimes.precision import GATE_MIN_MEAN_DICE, run_trial  # noqa: E402
from promptseg.runtimes.real_slices import gate_slices  # noqa: E402

STAGES = ("patch_embed", "layers.0", "layers.1", "layers.2", "layers.3", "neck")


class _Neck(torch.nn.Module):
    """TinyViT's neck with the token-to-grid reshape ``forward_features`` does before it."""

    def __init__(self, neck: torch.nn.Module) -> None:
        super().__init__()
        self.neck = neck

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n, c = tokens.shape
        side = int(math.isqrt(n))
        return self.neck(tokens.view(b, side, side, c).permute(0, 3, 1, 2))


def stage_modules(encoder: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The TinyViT encoder as consecutive stages; run in order they give ``encoder(x)`` (see the test)."""
    return [("patch_embed", encoder.patch_embed)] + [
        (f"layers.{i}", layer) for i, layer in enumerate(encoder.layers)] + [("neck", _Neck(encoder.neck))]


class StagedEncoder:
    """Each stage exported once and compiled at fp32 and bf16; :meth:`runtime` chains them at a chosen mix."""

    def __init__(self, encoder: torch.nn.Module, folder: Path, input_size: int = 256) -> None:
        self.names: list[str] = []
        self.compiled: dict[tuple[str, str], object] = {}
        threads = default_num_threads()
        x = torch.zeros(1, 3, input_size, input_size)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings
            for name, module in stage_modules(encoder):
                path = folder / f"{name}.onnx"
                torch.onnx.export(module, (x,), str(path), dynamo=False, opset_version=17)
                for precision in ("fp32", "bf16"):
                    self.compiled[name, precision] = openvino_backend.core().compile_model(
                        str(path), "CPU", openvino_backend.compile_config(threads, precision))
                self.names.append(name)
                x = module(x)

    def runtime(self, bf16: set[str]) -> PerSliceRuntime:
        """The encoder with the stages in ``bf16`` at bf16 and the rest at fp32."""
        requests = [self.compiled[name, "bf16" if name in bf16 else "fp32"].create_infer_request()
                    for name in self.names]

        def run_one(batch: np.ndarray) -> np.ndarray:
            x = batch
            for request in requests:
                request.infer({0: x})
                x = request.get_output_tensor(0).data.copy()
            return x

        runtime = PerSliceRuntime("openvino", run_one, 256)
        runtime.precision = "mixed: bf16 " + ("+".join(n for n in self.names if n in bf16) or "nowhere")
        return runtime


def feature_error(runtime, inputs: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """Mean over slices of ``|f - f_fp32| / |f_fp32|`` (Frobenius norms)."""
    return float(np.mean([np.linalg.norm(runtime(x) - f) / np.linalg.norm(f) for x, f in zip(inputs, reference)]))


class _Bench:
    def __init__(self, folder: Path) -> None:
        self.model = build_segmenter("litemedsam", precision="fp32")
        self.staged = StagedEncoder(self.model.net.image_encoder, folder)
        self.check = real_slice_check(self.model)
        self.inputs = [self.model.preprocess(item.image)[0] for item in gate_slices()]
        fp32 = self.staged.runtime(set())
        self.reference_features = [fp32(x) for x in self.inputs]
        self.reference_masks = run_trial("fp32", fp32, self.check)[1]

    def judge(self, bf16: set[str]) -> dict:
        runtime = self.staged.runtime(bf16)
        trial = run_trial("mixed", runtime, self.check, self.reference_masks)[0]
        return {"bf16_stages": sorted(bf16, key=self.staged.names.index),
                "feature_error": feature_error(runtime, self.inputs, self.reference_features),
                "gate_mean_dice": trial.mean_dice, "gate_min_dice": trial.min_dice, "gate_dice": trial.dice,
                "passes_gate": trial.mean_dice >= GATE_MIN_MEAN_DICE}


def measure_stages(bench: _Bench, repeats: int) -> list[dict]:
    """Per stage: fp32 / bf16 seconds, and the error and gate with only that stage in bf16."""
    x = torch.from_numpy(bench.inputs[0])
    calls, stage_inputs = {}, {}
    with torch.no_grad():
        for name, module in stage_modules(bench.model.net.image_encoder):
            stage_inputs[name] = x.numpy()
            x = module(x)
    for name in bench.staged.names:
        for precision in ("fp32", "bf16"):
            request = bench.staged.compiled[name, precision].create_infer_request()
            calls[f"{name} {precision}"] = lambda r=request, i=stage_inputs[name]: r.infer({0: i})
    timing = interleaved(calls, repeats)
    return [{"stage": name, "fp32_s": timing[f"{name} fp32"]["median_s"], "bf16_s": timing[f"{name} bf16"]["median_s"],
             **bench.judge({name})} for name in bench.staged.names]


def measure_mixes(bench: _Bench, stages: list[dict], repeats: int) -> dict:
    """bf16 on the k least harmful stages, k = 0..6: error, gate, and encoder seconds (interleaved)."""
    order = [row["stage"] for row in sorted(stages, key=lambda row: row["feature_error"])]
    mixes = [set(order[:k]) for k in range(len(order) + 1)]
    rows = [bench.judge(mix) for mix in mixes]
    calls = {"fp32 (whole model)": encoder_at(bench.model, "fp32"), "bf16 (whole model)": encoder_at(bench.model, "bf16")}
    for k, mix in enumerate(mixes):
        calls[f"mix {k}"] = bench.staged.runtime(mix)
    batch = bench.inputs[0]
    timing = interleaved({name: (lambda r=r: r(batch)) for name, r in calls.items()}, repeats)
    fp32_s, bf16_s = timing["fp32 (whole model)"]["median_s"], timing["bf16 (whole model)"]["median_s"]
    for k, row in enumerate(rows):
        seconds = timing[f"mix {k}"]["median_s"]
        row.update(seconds=seconds, speedup_vs_fp32=timing["mix 0"]["median_s"] / seconds)
    return {"order": order, "fp32_s": fp32_s, "bf16_s": bf16_s, "bf16_speedup": fp32_s / bf16_s, "mixes": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--whole-runs", action="store_true", help="also run the bundled cases' whole 3D runs")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    report = {"cpu": cpu_report()}
    print(f"{report['cpu']['cpu']}, native {report['cpu']['native']}, load {report['cpu']['load_average']}")
    with tempfile.TemporaryDirectory(prefix="promptseg-stages-") as tmp:
        bench = _Bench(Path(tmp))
        report["stages"] = measure_stages(bench, args.repeats)
        for row in report["stages"]:
            print(f"{row['stage']:12s} fp32 {1000 * row['fp32_s']:6.1f} ms  bf16 {1000 * row['bf16_s']:6.1f} ms  "
                  f"only this stage bf16: error {100 * row['feature_error']:.2f} %, gate mean "
                  f"{row['gate_mean_dice']:.4f} min {row['gate_min_dice']:.4f}")
        report["mixes"] = measure_mixes(bench, report["stages"], args.repeats)
        mixes = report["mixes"]
        print(f"whole-model encoders: fp32 {mixes['fp32_s']:.3f} s, bf16 {mixes['bf16_s']:.3f} s "
              f"({mixes['bf16_speedup']:.2f}x)")
        for row in mixes["mixes"]:
            print(f"bf16 on {'+'.join(row['bf16_stages']) or 'no stage':55s} error {100 * row['feature_error']:5.2f} %"
                  f"  gate {row['gate_mean_dice']:.4f} / {row['gate_min_dice']:.4f}  {row['seconds']:.3f} s "
                  f"({row['speedup_vs_fp32']:.2f}x the staged fp32)")
        if args.whole_runs:
            passing = [k for k, row in enumerate(mixes["mixes"]) if row["passes_gate"]]
            best = max(passing)  # the most stages in bf16 that still pass
            mix = set(mixes["mixes"][best]["bf16_stages"])
            encoders = {"fp32": lambda m: encoder_at(m, "fp32"), "bf16": lambda m: encoder_at(m, "bf16"),
                        "mixed": lambda m: bench.staged.runtime(mix)}
            report["whole_runs"] = measure_whole_runs(max(1, args.repeats // 2), encoders=encoders)
            report["whole_run_targets"] = {p: whole_run_target(report["whole_runs"], p) for p in encoders}
            print_whole_runs(report["whole_runs"])
    finish_report(report, args.json)
    return 0


if __name__ == "__main__":
    start = time.perf_counter()
    code = main()
    print(f"({time.perf_counter() - start:.0f} s)")
    sys.exit(code)
