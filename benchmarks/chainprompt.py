"""Measure the chaining-prompt variants of issue 14 on the five pyradiomics cases (docs/quality.md,
"Chaining prompts: what was measured").

Every variant runs the prompts of ``benchmarks/quality.py`` (``benchmark_model``), through the same
``run_benchmark`` calls and run-folder names: box-mid, box-mid-z, jitter 5 / 10 px with ``--seeds``
seeded draws (seeds 0, 1, ...), and with ``--points`` the 3 + 1 clicks too -- with its own
``segment_options`` (keyword options of :func:`promptseg.segment`). Writes
``<runs>/<model>-<variant>/...`` run folders plus ``<runs>/<model>-<variant>.json`` with the Dice per
measure and case (jitter and points: mean over the seeds).

    python benchmarks/chainprompt.py --manifest cases.csv --runs runs/chainprompt \
        --variants default mask-prompt drift --seeds 3 [--model litemedsam] [--points]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality  # noqa: E402  (benchmarks/quality.py: the same prompts and code paths)

#: variant name -> keyword options of promptseg.segment
VARIANTS = {
    "default": {},
    "mask-prompt": {"mask_prompt": True},
    "drift": {"drift_stop": True},
    "mask-points": {"mask_points": True},
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--model", default="litemedsam")
    parser.add_argument("--variants", nargs="+", default=["default"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--points", action="store_true", help="also the 3 + 1 points prompt")
    parser.add_argument("--only", nargs="+", default=None, help="measures: box-mid box-mid-z jitter points")
    args = parser.parse_args(argv)
    unknown = [v for v in args.variants if v not in VARIANTS and "+" not in v]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {sorted(VARIANTS)} (combine with +)")
    for variant in args.variants:
        options = {}
        for part in variant.split("+"):
            options.update(VARIANTS[part])
        start = time.time()
        measures = measure(args.manifest, args.runs / f"{args.model}-{variant}", args.model, options, args.seeds,
                           args.only or ["box-mid", "box-mid-z", "jitter"] + (["points"] if args.points else []))
        out = args.runs / f"{args.model}-{variant}.json"
        out.write_text(json.dumps({"options": options, "seconds": round(time.time() - start),
                                   "dice": measures}, indent=1))
        print(f"{args.model}-{variant}: " + json.dumps(
            {k: {c: round(v, 3) for c, v in m.items()} for k, m in measures.items()}), flush=True)
    return 0


def measure(manifest: Path, runs: Path, model: str, options: dict, seeds: int, which) -> dict:
    """``{measure: {case: dice}}``: ``quality.benchmark_model``'s runs for one variant, only ``which``."""
    import numpy as np

    from promptseg.datasets.layouts import load_dataset
    from promptseg.evaluation.benchmark import run_benchmark
    from promptseg.models import build_segmenter

    dataset = load_dataset(manifest)
    segmenter = build_segmenter(model)
    common = dict(segment_options=options, progress=False)
    measures: dict[str, dict[str, float]] = {}
    for prompt in ("box-mid", "box-mid-z"):
        if prompt in which:
            measures[prompt] = quality._dice_by_case(run_benchmark(dataset, segmenter, runs / prompt,
                                                                  prompt_mode=prompt, **common))[""]
    draws: dict[str, list] = {}
    for seed in range(seeds):
        if "jitter" in which:
            run = run_benchmark(dataset, segmenter, runs / f"jitter-seed{seed}", sweep="jitter",
                                sweep_values=[5, 10], seed=seed, **common)
            for setting, by_case in quality._dice_by_case(run).items():
                draws.setdefault(setting, []).append(by_case)
        if "points" in which:
            run = run_benchmark(dataset, segmenter, runs / f"points-seed{seed}", prompt_mode="points",
                                points=4, negatives=1, seed=seed, **common)
            draws.setdefault("points", []).append(quality._dice_by_case(run)[""])
    for setting, found in draws.items():
        measures[setting] = {c: float(np.mean([d[c] for d in found])) for c in found[0]}
    return measures


if __name__ == "__main__":
    raise SystemExit(main())
