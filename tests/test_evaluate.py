"""``promptseg evaluate`` and its library: file matching, geometry checks, CSV/JSON output, summaries."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from promptseg.cli import main
from promptseg.errors import GeometryError, ImageReadError
from promptseg.datasets.metrics_table import CASE_COLUMNS, read_metrics, write_metrics
from promptseg.evaluation.evaluate import case_name, evaluate_files, evaluate_paths, match_cases
from promptseg.evaluation.metrics import EvaluationError
from promptseg.evaluation.summary import format_table, summarize
from promptseg.io import load_labels, save_mask
from promptseg.io.jsonfile import write_json
from promptseg.volume import Volume

from datafiles import label as real_label

BRAIN_VOXEL_ML = 0.78125 * 0.78125 * 6.5 / 1000  # brain2: 0.78 x 0.78 mm in-plane, 6.5 mm slices


def _grid(shape=(6, 16, 16), spacing=(0.8, 0.7, 2.5)) -> Volume:
    """A small reference grid; spacing (x, y, z) as in files."""
    return Volume(np.zeros(shape, np.uint8), spacing=spacing, origin=(10.0, -5.0, 3.0))


def _labels(shift=0) -> np.ndarray:
    a = np.zeros((6, 16, 16), np.uint8)
    a[1:4, 3:9, 3:9] = 1
    a[2:5, 10:14, 9:13] = 2
    return np.roll(a, shift, axis=2)


def test_real_label_map_against_itself_and_shifted_copies(tmp_path):
    """brain2: 0.78 x 0.78 x 6.5 mm. Shifting one slice costs 6.5 mm, two columns 1.56 mm."""
    gt = real_label("brain2")
    reference = load_labels(gt)
    assert reference.spacing_zyx == pytest.approx((6.5, 0.78125, 0.78125))
    [same] = evaluate_files(gt, gt)
    n = int(np.count_nonzero(reference.array == 1))
    assert same == {"case": "brain2_label", "label": 1, "dice": 1.0, "nsd": 1.0, "hd95": 0.0,
                    "pred_ml": pytest.approx(n * BRAIN_VOXEL_ML), "ref_ml": pytest.approx(n * BRAIN_VOXEL_ML),
                    "tolerance_mm": 2.0}
    z_shifted = save_mask(np.roll(reference.array, 1, axis=0), tmp_path / "z.nii.gz", reference)
    x_shifted = save_mask(np.roll(reference.array, 2, axis=2), tmp_path / "x.nrrd", reference)
    [z] = evaluate_files(z_shifted, gt)
    [x] = evaluate_files(x_shifted, gt, tolerance_mm=2.0)
    assert z["hd95"] == pytest.approx(6.5, abs=1e-4)
    assert x["hd95"] == pytest.approx(1.5625, abs=1e-4)
    assert x["nsd"] == pytest.approx(1.0) and z["nsd"] < 0.8  # 1.56 mm is within 2 mm; 6.5 mm is not
    assert evaluate_files(z_shifted, gt, tolerance_mm=7.0)[0]["nsd"] == pytest.approx(1.0)
    assert z["dice"] < x["dice"] < 1.0


def test_folders_matched_by_case_name_across_formats(tmp_path):
    grid = _grid()
    for name in ("a", "b"):
        save_mask(_labels(), tmp_path / "gt" / f"{name}.nrrd", grid)
    save_mask(_labels(shift=1), tmp_path / "pred" / "a.nii.gz", grid)
    save_mask(_labels(), tmp_path / "pred" / "b.npz", grid)  # NPZ: spacing only
    (tmp_path / "pred" / "notes.txt").write_text("ignored")
    (tmp_path / "pred" / ".b.tmp-123.nii.gz").write_bytes(b"ignored")  # hidden: ignored
    rows = evaluate_paths(tmp_path / "pred", tmp_path / "gt")
    assert [(r["case"], r["label"]) for r in rows] == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    assert rows[0]["hd95"] == pytest.approx(0.8, abs=1e-5)  # one column = 0.8 mm (x spacing)
    assert all(r["dice"] == 1.0 for r in rows[2:])
    only_2 = evaluate_paths(tmp_path / "pred", tmp_path / "gt", labels=[2, 3], tolerance_mm=0.5)
    assert [(r["case"], r["label"]) for r in only_2] == [("a", 2), ("a", 3), ("b", 2), ("b", 3)]
    assert only_2[0]["nsd"] < 1.0 and only_2[1]["dice"] == 1.0  # label 3: absent from both
    assert case_name("x/case_01.nii.gz") == "case_01" and case_name("y.seg.nrrd") == "y.seg"


def test_unmatched_cases_are_an_error_or_scored_as_empty(tmp_path):
    grid = _grid()
    save_mask(_labels(), tmp_path / "gt" / "a.nrrd", grid)
    save_mask(_labels(), tmp_path / "gt" / "lost.nrrd", grid)
    save_mask(_labels(), tmp_path / "pred" / "a.nrrd", grid)
    save_mask(_labels(), tmp_path / "pred" / "extra.nrrd", grid)
    with pytest.raises(EvaluationError, match=r"without a prediction .*: lost;.*without a reference .*: extra"):
        evaluate_paths(tmp_path / "pred", tmp_path / "gt")
    matching = match_cases(tmp_path / "pred", tmp_path / "gt", allow_missing=True)
    assert (matching.gt_only, matching.pred_only) == (["lost"], ["extra"])
    rows = evaluate_paths(tmp_path / "pred", tmp_path / "gt", allow_missing=True)
    lost = [r for r in rows if r["case"] == "lost"]
    assert [r["case"] for r in rows] == ["a", "a", "lost", "lost"]
    assert all((r["dice"], r["nsd"], r["hd95"], r["pred_ml"]) == (0.0, 0.0, math.inf, 0.0) for r in lost)


def test_bad_paths(tmp_path):
    grid = _grid()
    save_mask(_labels(), tmp_path / "gt" / "a.nrrd", grid)
    save_mask(_labels(), tmp_path / "gt" / "a.npz", grid)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvaluationError, match="a file and --gt is a folder"):
        evaluate_paths(tmp_path / "gt" / "a.nrrd", tmp_path / "gt")
    with pytest.raises(ImageReadError, match="no such file"):
        evaluate_paths(tmp_path / "nope", tmp_path / "gt")
    with pytest.raises(EvaluationError, match="holds no label files"):
        evaluate_paths(tmp_path / "empty", tmp_path / "gt")
    with pytest.raises(EvaluationError, match=r"several files for the same case name \(1 case\(s\)\): a.npz, a.nrrd"):
        evaluate_paths(tmp_path / "gt", tmp_path / "gt")


def test_geometry_mismatch_is_an_error_naming_the_files(tmp_path):
    grid = _grid()
    gt = save_mask(_labels(), tmp_path / "gt.nrrd", grid)
    other_spacing = Volume(grid.array, spacing=(0.8, 0.7, 3.0), origin=grid.origin)
    moved = Volume(grid.array, spacing=grid.spacing, origin=(0.0, 0.0, 0.0))
    small = Volume(np.zeros((6, 16, 15), np.uint8), spacing=grid.spacing, origin=grid.origin)
    cases = [
        (save_mask(_labels(), tmp_path / "spacing.nii.gz", other_spacing), r"spacing \(x, y, z\) mm"),
        (save_mask(_labels(), tmp_path / "origin.nrrd", moved), "origin"),
        (save_mask(_labels()[:, :, :15], tmp_path / "shape.npz", small), r"shape \(z, y, x\) \(6, 16, 15\) vs \(6, 16, 16\)"),
        (save_mask(_labels(), tmp_path / "npz_spacing.npz", other_spacing), "spacing"),
    ]
    for pred, what in cases:
        with pytest.raises(GeometryError, match=f"prediction {pred} does not fit reference {gt}: {what}"):
            evaluate_files(pred, gt)
    # an NPZ stores no origin: only what both files store is compared
    assert evaluate_files(save_mask(_labels(), tmp_path / "ok.npz", moved), gt)[0]["dice"] == 1.0


def test_2d_png_and_spacing_from_whichever_file_stores_it(tmp_path):
    slice_grid = Volume(np.zeros((1, 16, 16), np.uint8), spacing=(0.5, 0.25, 1.0))
    ref2d = _labels()[2:3]
    gt_png = save_mask(ref2d, tmp_path / "gt.png", slice_grid)
    pred_png = save_mask(np.roll(ref2d, 2, axis=2), tmp_path / "pred.png", slice_grid)
    pred_nii = save_mask(np.roll(ref2d, 2, axis=2), tmp_path / "pred.nii.gz", slice_grid)
    [png, _] = evaluate_files(pred_png, gt_png)
    assert png["hd95"] == pytest.approx(2.0)  # PNG stores no spacing: 1 mm pixels
    assert png["pred_ml"] == pytest.approx(36 / 1000)  # 2D: mm^2 / 1000
    [nii, _] = evaluate_files(pred_nii, gt_png)
    assert nii["hd95"] == pytest.approx(1.0)  # the NIfTI's 0.5 mm x spacing
    assert nii["pred_ml"] == pytest.approx(36 * 0.5 * 0.25 / 1000)
    assert nii["dice"] == png["dice"] == pytest.approx(4 / 6)


def test_csv_and_json_round_trip(tmp_path):
    rows = [
        {"case": "a", "label": 1, "dice": 0.5, "nsd": 0.25, "hd95": 3.0, "pred_ml": 1.0, "ref_ml": 2.0, "tolerance_mm": 2.0},
        {"case": "b", "label": 1, "dice": 0.0, "nsd": 0.0, "hd95": math.inf, "pred_ml": 0.0, "ref_ml": 2.0, "tolerance_mm": 2.0},
    ]
    path = write_metrics(rows, tmp_path / "out" / "m.csv")
    text = path.read_text().splitlines()
    assert text[0] == ",".join(CASE_COLUMNS)
    assert text[2] == "b,1,0,0,inf,0,2,2"
    assert read_metrics(path) == rows
    summary = summarize(read_metrics(path))
    json_path = write_json(tmp_path / "s.json", {"per_label": summary})
    loaded = json.loads(json_path.read_text())  # strict JSON: no NaN / Infinity
    assert loaded["per_label"][0]["hd95"] == {"mean": 3.0, "sd": None, "median": 3.0, "q1": 3.0, "q3": 3.0,
                                              "n_finite": 1, "n_nonfinite": 1}
    assert list(tmp_path.glob("**/.*tmp*")) == []  # atomic writes leave no temporaries


def test_summarize_statistics_and_table():
    rows = [{"label": lab, "dice": d, "nsd": d, "hd95": h}
            for lab, d, h in [(1, 0.2, 1.0), (1, 0.4, 2.0), (1, 0.6, 3.0), (1, 0.8, math.inf),
                              (10, 1.0, 0.0), (2, 0.5, "inf")]]
    summary = summarize(rows)
    assert [s["label"] for s in summary] == [1, 2, 10]  # numeric order
    one = summary[0]
    assert one["n"] == 4
    assert one["dice"]["mean"] == pytest.approx(0.5)
    assert one["dice"]["sd"] == pytest.approx(np.std([0.2, 0.4, 0.6, 0.8], ddof=1))
    assert (one["dice"]["median"], one["dice"]["q1"], one["dice"]["q3"]) == pytest.approx((0.5, 0.35, 0.65))
    assert one["hd95"]["mean"] == pytest.approx(2.0) and one["hd95"]["n_nonfinite"] == 1
    assert summary[1]["hd95"]["mean"] is None and summary[1]["hd95"]["n_nonfinite"] == 1
    [overall] = summarize(rows, by=())
    assert overall["n"] == 6 and overall["dice"]["n_finite"] == 6
    table = format_table(summary)
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["label", "n"] and "hd95 mm mean (sd)" in lines[0]
    assert lines[2].split()[:4] == ["1", "4", "0.500", "(0.258)"]
    assert "hd95: 1 of 4 values not finite (label 1); left out" in table
    assert "hd95: 1 of 1 values not finite (label 2); left out" in table


def test_cli_writes_csv_summary_and_prints_table(tmp_path, capsys):
    grid = _grid()
    for name, shift in (("a", 1), ("b", 0)):
        save_mask(_labels(), tmp_path / "gt" / f"{name}.nii.gz", grid)
        save_mask(_labels(shift=shift), tmp_path / "pred" / f"{name}.nrrd", grid)
    out = tmp_path / "res" / "metrics.csv"
    code = main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "-o", str(out),
                 "--labels", "1,2", "--tolerance-mm", "1", "--no-progress"])
    stdout = capsys.readouterr().out
    assert code == 0
    rows = read_metrics(out)
    assert [(r["case"], r["label"], r["tolerance_mm"]) for r in rows] == [
        ("a", 1, 1.0), ("a", 2, 1.0), ("b", 1, 1.0), ("b", 2, 1.0)]
    summary = json.loads((tmp_path / "res" / "metrics.summary.json").read_text())
    assert summary["tolerance_mm"] == 1.0 and summary["cases"] == 2
    assert [s["label"] for s in summary["per_label"]] == [1, 2]
    assert summary["per_label"][0]["dice"]["n_finite"] == 2
    assert "dice mean (sd)" in stdout and f"wrote {out}" in stdout and "metrics.summary.json" in stdout


@pytest.mark.parametrize("change, message", [
    ({"--labels": "1,x"}, "--labels '1,x': expected positive integers"),
    ({"--tolerance-mm": "-2"}, "tolerance must be finite and >= 0"),
    ({"--gt": "missing.nrrd"}, "no such file or folder"),
    ({"--gt": "thick.nrrd"}, "does not fit reference"),
])
def test_cli_bad_input_one_line_exit_2(tmp_path, capsys, change, message):
    grid = _grid()
    pred = save_mask(_labels(), tmp_path / "p.nrrd", grid)
    save_mask(_labels(), tmp_path / "thick.nrrd", Volume(grid.array, spacing=(0.8, 0.7, 5.0), origin=grid.origin))
    options = {"--pred": str(pred), "--gt": str(pred), "-o": str(tmp_path / "m.csv")}
    options.update({k: str(tmp_path / v) if k == "--gt" else v for k, v in change.items()})
    assert main(["evaluate", *[part for item in options.items() for part in item]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("promptseg: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "m.csv").exists()


def test_cli_help_has_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "promptseg evaluate --pred" in out and "--tolerance-mm" in out
