"""benchmarks/run.py writes only what it measured: the page is built from the measurement records alone,
leads with the whole-run ratio, and keeps the hand-written notes section byte for byte."""

from __future__ import annotations

import importlib.util
import math
import re

from datafiles import REPO

spec = importlib.util.spec_from_file_location("bench_run", REPO / "benchmarks" / "run.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

INFO = {"cpu": "Test CPU 9000", "flags": ["fpu", "avx2", "fma", "avx512_vnni"], "cores": 7, "torch_threads": 5,
        "torch": "9.9.9", "python": "3.99.1"}
PROP = {"shape": (41, 313, 317), "z_seed": 21, "runtime": "onnxruntime", "setup_s": 4.44, "z_range": (19, 23),
        "our_slices": 7, "ref_slices": 5, "ours_s": 8.75, "ref_s": 7.0, "whole_run_ratio": 0.8,
        "ours_s_per_slice": 1.25, "ref_s_per_slice": 1.4, "per_slice_ratio": 1.12, "agreement_dice": 0.9876,
        "dice_vs_expert_ours": 0.777, "dice_vs_expert_ref": 0.766, "ours_runs": [8.7, 8.75, 8.8],
        "ref_runs": [6.9, 7.0, 7.1], "precision": "fp32", "same_s": 6.25, "same_runs": [6.2, 6.25, 6.3],
        "same_slices": 5, "same_ratio": 1.12, "same_agreement_dice": 0.9912}
ENCODERS = [{"runtime": "onnxruntime", "seconds": 1.125, "runs": 6, "slice": 21, "max_abs_diff": 3.5e-6},
            {"runtime": "torch", "seconds": 2.25, "runs": 6, "slice": 21, "max_abs_diff": 0.0}]
TRAINING = {"dataset": "examples/x.csv", "epochs": 4, "speedup": 6.5,
            "cached": {"samples": 11, "samples_per_s": 3.25, "epoch_s": 3.38, "total_s": 31.5, "encoded": 13},
            "reencode": {"samples": 11, "samples_per_s": 0.5, "epoch_s": 22.0, "total_s": 95.5, "encoded": 0}}


def test_page_leads_with_the_whole_run_and_holds_only_measured_numbers():
    page = bench.render(INFO, PROP, ENCODERS, TRAINING, "make bench")
    section = page[page.index("## 3D propagation"):]
    first = next(line for line in section.splitlines()[1:] if line.strip())
    assert first.startswith("**Whole run on the same slices: promptseg 6.25 s, reference 7.00 s: 1.12x** (median of "
                            "3 runs each). With its automatic stop instead of the z-range, promptseg took 8.75 s "
                            "(0.80x (slower))")
    assert "per slice (automatic stop): promptseg 1.250 s, reference 1.400 s: 1.12x" in page
    assert "| promptseg, same z-range | 5 | 6.25 | 1.250 | 6.20, 6.25, 6.30 |" in page
    assert "0.9912 on the same slices, 0.9876 with the automatic stop" in page
    assert "**not met in this run**" in page
    assert "Test CPU 9000, 7 CPU cores (torch uses 5 threads)" in page and "`avx512_vnni`" in page
    assert "The `onnxruntime` encoder alone (below) takes 1.125 s a slice, 90% of promptseg's time per slice" in page
    assert "| onnxruntime | 1.125 | 2.00x | 3.50e-06 |" in page
    assert "11 training samples" in page and "13 slices encoded once" in page
    # every number on the page is a recorded value (as shown, rounded), one derived from them, the date or
    # issue 2's fixed target
    values = set(_numbers((INFO, PROP, ENCODERS, TRAINING)))
    values |= {2.25 / 1.125, 2.25 / 2.25, 100 * 1.125 / 1.25, bench.TARGET_RATIO, bench.TARGET_AGREEMENT}
    values |= {PROP["our_slices"] - PROP["ref_slices"], len(PROP["ours_runs"]), PROP["same_s"] / PROP["same_slices"]}
    body = page.replace(bench.dt.date.today().isoformat(), "").replace("3D propagation", "").replace("lung1", "")
    for name in (INFO["cpu"], INFO["torch"], INFO["python"], PROP["runtime"]):
        body = body.replace(name, "")
    body = re.sub(r"`[^`]*`|<details>.*?</details>", "", body, flags=re.S)  # names: runtimes, flags, paths
    for text in re.findall(r"\d+(?:\.\d+)?(?:e-\d+)?", body):
        digits = len(text.split(".")[1].split("e")[0]) if "." in text else 0
        assert any(math.isclose(round(v, digits) if "e" not in text else v, float(text), rel_tol=1e-2)
                   for v in values), text


def _numbers(value):
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield float(value)


def test_notes_from_earlier_runs_are_kept_as_they_are(tmp_path):
    notes = "## Notes from earlier runs\n\nHand-written: 0.71 s on 2020-01-01.\n"
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\nold numbers 1.50x\n\n" + notes, encoding="utf-8")
    assert bench.kept_notes(out) == notes
    assert bench.kept_notes(tmp_path / "missing.md") == ""


def test_precision_decoder_start_and_busy_sections_show_their_records():
    report = {"native": ["fp32", "bf16"]}
    auto = {"precision": "fp32", "runtime": "openvino", "reason": "bf16 failed the gate (mean Dice 0.9793 < 0.98)"}
    encoders = {"eager": {"median_s": 8.82, "ratio_to_eager": 1.0, "gate_mean_dice": 1.0, "gate_min_dice": 1.0},
                "bf16": {"median_s": 1.33, "ratio_to_eager": 6.63, "gate_mean_dice": 0.9793, "gate_min_dice": 0.9167}}
    runs = {"lung1": {"shape": (48, 512, 512), "reference_s": 49.5, "reference_slices": 3,
                      **{p: {"ratio": 3.61, "agreement_vs_fp32": 0.9858,
                             "auto_stop": {"ratio": 2.11, "encoded_slices": 5}} for p in bench.PRECISIONS}},
            "brain2": {"shape": (23, 256, 256), "reference_s": 20.1, "reference_slices": 3,
                       **{p: {"ratio": 3.34, "agreement_vs_fp32": 0.9602,
                              "auto_stop": {"ratio": 2.2, "encoded_slices": 5}} for p in bench.PRECISIONS}}}
    text = "\n".join(bench.render_precision(report, auto, encoders, runs))
    assert "chose **fp32** on openvino: bf16 failed the gate (mean Dice 0.9793 < 0.98)" in text
    assert "| bf16 | 1.330 | 6.63x | 0.9793 / 0.9167 |" in text
    assert "| lung1 (512 x 512 x 48) | 3 / 5 | 49.50 | 3.61x / 2.11x, 0.9858 |" in text
    assert "target on this CPU: >= 3.5x (native bf16)" in text
    assert "- bf16: lowest ratio 3.34x, lowest agreement 0.9602: **not met**" in text
    decoder = {"interactive": {"p50_s": 0.035, "p95_s": 0.046, "calls": 180, "precision": "bf16",
                               "reason": "bf16 passes the gate", "mean_dice_vs_fp32": 0.9856},
               "exported": {"p50_s": 0.174, "p95_s": 0.266, "calls": 180},
               "eager": {"p50_s": 0.736, "p95_s": 1.665, "calls": 180}, "identical_masks": "9/9",
               "load_average": (3.5, 3.0, 2.0)}
    text = "\n".join(bench.render_decoder(decoder))
    assert "| exported (OpenVINO fp32, `decode`) | 174 | 266 | 180 |" in text and "9/9 slices" in text
    assert "| interactive (`decode_interactive`, bf16) | 35 | 46 | 180 |" in text
    assert "here: bf16 passes the gate. Its masks vs the fp32 decoder's: mean Dice 0.9856" in text
    assert "(<= 50 ms p95, the interactive decoder): **met in this run**" in text
    start = {"warm_auto": {"wall_s": 5.3, "peak_rss_mb": 1270, "runs_s": [5.2, 5.3, 5.4]},
             "warm_no_bytecode": {"wall_s": 5.9, "peak_rss_mb": 1271},
             "cold_fp32": {"wall_s": 29.1, "peak_rss_mb": 1890},
             "import_torch": {"wall_s": 3.35, "peak_rss_mb": 900}, "load_average": (2.5, 2.0, 1.0)}
    text = "\n".join(bench.render_start(start, {"volume_mb": 150, "wall_s": 12.1, "peak_rss_mb": 1580}))
    assert "warm caches (median) | 5.30 | 1270 |" in text and "(150 MB), warm | 12.10 | 1580 |" in text
    assert "interleaved with the row above) | 5.90 | 1271 |" in text
    assert "**not met in this run** (runs: 5.20, 5.30, 5.40 s; load average 2.5)" in text
    assert "Peak RSS targets (<= 1 GB small, <= 2 GB for the 512 x 512 x 300 CT): **not met**" in text
    busy = {"cores": 2, "threads=2": {"openvino-fp32": {"as_is_s": 0.632, "burner_s": 1.367, "slowdown": 2.16}}}
    assert "| 2 | openvino-fp32 | 0.632 | 1.367 | 2.16x |" in "\n".join(bench.render_busy(busy))
