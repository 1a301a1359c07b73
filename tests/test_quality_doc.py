"""benchmarks/quality.py writes docs/quality.md from its runs: the targets are judged from the numbers."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _quality():
    spec = importlib.util.spec_from_file_location("quality_bench", ROOT / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_doc_judges_every_target_from_the_numbers(tmp_path):
    q = _quality()
    cases = list(q.CASES)
    box = {c: 0.8 for c in cases}
    measures = {"box-mid": box, "box-mid-z": {**box, "lung2": 0.9},
                "jitter_px=5": {**box, "breast1": 0.7}, "jitter_px=10": {c: 0.75 for c in cases},
                "points": {c: 0.7 for c in cases}}
    finetune = {"litemedsam": {"decoder": {c: (0.5, 0.6) for c in cases},
                               "lora": {c: (0.5, 0.45 if q.CASES[c][0] == "MR" else 0.6) for c in cases}}}
    out = tmp_path / "quality.md"
    q.write_doc(out, {"litemedsam": {"default": measures}}, finetune, 3, 90.0, Path("../runs/quality/report"))
    text = out.read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| litemedsam | default | no: lung2"))
    assert "lung2 0.800 < 0.900" in row                 # box below the z-range reference
    assert "no (breast1 +0.100" in row                   # 5 px: the worst drop, above 0.05
    assert "yes (lung1 +0.050" in row                    # 10 px: within 0.10
    assert "yes (0.87)" in row                           # points 0.7 / box 0.8 = 0.875
    assert "litemedsam decoder: met; litemedsam lora: not met." in text
    assert "0.500 -> 0.450" in text                       # a loss is shown as it is
    assert "quality-notes.md" in text and "CPU: " in text
