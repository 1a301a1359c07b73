"""Measure the chaining-prompt variants of issue 14 on the five pyradiomics cases (docs/quality.md,
"Chaining prompts: what was measured").

Every variant runs the prompts of ``benchmarks/quality.py`` (``benchmark_model``), through the same
``run_benchmark`` calls and run-folder names: box-mid, box-mid-z, jitter 5 / 10 px with ``--seeds``
seeded draws (seeds 0, 1, ...), and with ``--points`` the 3 + 1 clicks too -- with its own
``segment_options`` (keyword options of :func:`promptseg.segment`). Writes
``<runs>/<model>-<variant>/...`` run folders plus ``<runs>/<model>-<variant>.json`` with the Dice per
measure and case (jitter and points: mean over the seeds).

    python benchmarks/chainprompt.py --manifest cases.csv --runs runs/chainprompt \
        --variants default mask-prompt --seeds 3 [--model litemedsam] [--points]
    python benchmarks/chainprompt.py --manifest cases.csv --runs runs/chainprompt --model mobilesam \
        --variants default mask-prompt --only box-mid jitter --jitter 5
    python benchmarks/chainprompt.py --manifest cases.csv --runs runs/chainprompt --table

A drift test in the stop rule (end a direction when the new mask's centroid moves more than
``shift`` times the previous mask's equivalent radius ``sqrt(area / pi)``, or its area grows more
than ``growth`` times) is measured offline (``--table``): such a test can only end a chain earlier
than the default rule, and a chain's masks do not depend on where it stops, so cutting the default
variant's saved predictions at the first slice that fails the test gives exactly what a chain with
that test returns (``--table`` checks that the uncut predictions reproduce the recorded Dice). It
did not help on these cases and is not in promptseg (docs/quality.md).
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
}
#: (drift_shift, drift_growth) of the stop rule measured offline by --table
DRIFT_RULES = ((0.5, None), (0.75, None), (1.0, None), (1.25, None), (1.5, None), (None, 1.5), (None, 2.0),
               (None, 3.0), (1.0, 2.0))
CASES = ("lung1", "lung2", "brain1", "brain2", "breast1")
MEASURES = {"box-mid": "box", "box-mid-z": "z-range", "jitter_px=5": "j5", "jitter_px=10": "j10"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--model", default="litemedsam")
    parser.add_argument("--variants", nargs="+", default=["default"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--points", action="store_true", help="also the 3 + 1 points prompt")
    parser.add_argument("--only", nargs="+", default=None, help="measures: box-mid box-mid-z jitter points")
    parser.add_argument("--jitter", nargs="+", type=int, default=[5, 10], help="jitter values, px (default 5 10)")
    parser.add_argument("--table", action="store_true",
                        help="print the markdown tables of the measured variants and the offline drift test")
    args = parser.parse_args(argv)
    if args.table:
        print(tables(args.manifest, args.runs, args.model, drift=args.model == "litemedsam"))
        return 0
    unknown = [v for v in args.variants if v not in VARIANTS and "+" not in v]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {sorted(VARIANTS)} (combine with +)")
    for variant in args.variants:
        options = {}
        for part in variant.split("+"):
            options.update(VARIANTS[part])
        start = time.time()
        measures = measure(args.manifest, args.runs / f"{args.model}-{variant}", args.model, options, args.seeds,
                           args.only or ["box-mid", "box-mid-z", "jitter"] + (["points"] if args.points else []),
                           args.jitter)
        out = args.runs / f"{args.model}-{variant}.json"
        out.write_text(json.dumps({"options": options, "seconds": round(time.time() - start),
                                   "dice": measures}, indent=1))
        print(f"{args.model}-{variant}: " + json.dumps(
            {k: {c: round(v, 3) for c, v in m.items()} for k, m in measures.items()}), flush=True)
    return 0


def measure(manifest: Path, runs: Path, model: str, options: dict, seeds: int, which, jitter=(5, 10)) -> dict:
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
                                sweep_values=list(jitter), seed=seed, **common)
            for setting, by_case in quality._dice_by_case(run).items():
                draws.setdefault(setting, []).append(by_case)
        if "points" in which:
            run = run_benchmark(dataset, segmenter, runs / f"points-seed{seed}", prompt_mode="points",
                                points=4, negatives=1, seed=seed, **common)
            draws.setdefault("points", []).append(quality._dice_by_case(run)[""])
    for setting, found in draws.items():
        measures[setting] = {c: float(np.mean([d[c] for d in found])) for c in found[0]}
    return measures


def _unit_dice(runs: Path) -> dict:
    """``{measure: {case: [dice per draw]}}`` from a variant's run folders (unit records)."""
    out: dict = {}
    for unit in sorted(runs.glob("*/units/**/*.json")):
        record = json.loads(unit.read_text())
        folder = unit.relative_to(runs).parts[0]
        measure = MEASURES.get(folder) or MEASURES.get(record["setting"]) or record["setting"]
        out.setdefault(measure, {}).setdefault(record["case"], []).append(record["rows"][0]["dice"])
    return out


def _row(name: str, measure: str, by_case: dict) -> str:
    import numpy as np

    values = [float(np.mean(by_case[c])) if c in by_case else float("nan") for c in CASES]
    return (f"| {name} | {measure} | " + " | ".join(f"{v:.3f}" for v in values)
            + f" | {np.nanmean(values):.3f} |")


def drift(mask, previous, spacing_xy) -> tuple[float, float]:
    """``(shift, growth)`` of a non-empty mask vs the previous slice's non-empty mask: centroid distance
    over the previous mask's equivalent radius ``sqrt(area / pi)`` (both mm), and the area ratio."""
    import numpy as np

    def centroid_area(m):
        ys, xs = np.nonzero(m)
        return np.array([xs.mean() * spacing_xy[0], ys.mean() * spacing_xy[1]]), len(xs) * spacing_xy[0] * spacing_xy[1]

    (c1, a1), (c0, a0) = centroid_area(mask), centroid_area(previous)
    return float(np.linalg.norm(c1 - c0) / np.sqrt(a0 / np.pi)), float(a1 / a0)


def drift_dice(manifest: Path, runs: Path) -> dict:
    """``{rule: {measure: {case: [dice per draw]}}}``: the default variant's box / jitter predictions
    cut where the drift test would have ended each direction (see the module docstring)."""
    import csv

    from promptseg.evaluation.metrics import dice
    from promptseg.io import load_labels, load_volume

    cases = {row["case"]: row for row in csv.DictReader(open(manifest, encoding="utf-8"))}
    loaded: dict = {}
    out: dict = {}
    for unit in sorted(runs.glob("*/units/**/*.json")):
        folder = runs / unit.relative_to(runs).parts[0]
        record = json.loads(unit.read_text())
        measure = MEASURES.get(folder.name) or MEASURES.get(record["setting"])
        if measure not in ("box", "j5", "j10"):
            continue
        case = record["case"]
        if case not in loaded:
            volume = load_volume(cases[case]["image"])
            loaded[case] = volume, load_labels(cases[case]["label"], reference=volume).array > 0
        volume, reference = loaded[case]
        predicted = load_labels(folder / record["prediction"], reference=volume).array > 0
        seed = json.loads((folder / record["prompts"]).read_text())["objects"][0]["slice"]
        if abs(dice(predicted, reference) - record["rows"][0]["dice"]) > 1e-6:
            raise SystemExit(f"{unit}: the saved prediction does not give the recorded Dice")
        for rule in DRIFT_RULES:
            cut = predicted.copy()
            for step in (1, -1):
                z = seed + step
                while 0 <= z < cut.shape[0] and cut[z].any():
                    shift, growth = drift(cut[z], cut[z - step], tuple(volume.spacing[:2]))
                    if (rule[0] is not None and shift > rule[0]) or (rule[1] is not None and growth > rule[1]):
                        if step > 0:
                            cut[z:] = False
                        else:
                            cut[: z + 1] = False
                        break
                    z += step
            out.setdefault(rule, {}).setdefault(measure, {}).setdefault(case, []).append(dice(cut, reference))
    return out


def tables(manifest: Path, runs: Path, model: str, drift: bool = True) -> str:
    """Markdown: Dice per variant x measure x case, then the drift test's rules (offline)."""
    header = "| variant | measure | " + " | ".join(CASES) + " | mean |\n|---|---|" + "---|" * (len(CASES) + 1)
    lines = [header]
    # every variant measured, also those no longer in VARIANTS (docs/quality.md says with which commit)
    folders = sorted(p for p in runs.glob(f"{model}-*") if p.is_dir())
    for folder in sorted(folders, key=lambda p: p.name != f"{model}-default"):
        variant = folder.name[len(model) + 1 :]
        found = _unit_dice(folder)
        lines += [_row(variant, m, found[m]) for m in ("box", "z-range", "j5", "j10") if m in found]
    default = runs / f"{model}-default"
    if drift and default.is_dir():
        lines += ["", header.replace("| variant |", "| drift test |")]
        for rule, found in drift_dice(manifest, default).items():
            name = " + ".join(part for part in (f"shift > {rule[0]:g}" if rule[0] else "",
                                                f"growth > {rule[1]:g}" if rule[1] else "") if part)
            lines += [_row(name, m, found[m]) for m in ("box", "j5", "j10") if m in found]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
