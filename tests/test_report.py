"""promptseg report: figures, the Markdown report and the CLI, on synthetic run folders.

The run folders are written by hand in the benchmark's format (run.json + metrics.csv +
predictions/), so these tests do not depend on the benchmark code. Montages use the real
breast1 MR case with predictions made by shifting / eroding its expert mask.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from datafiles import image as case_image, label as case_label
from promptseg.cli import main
from promptseg.errors import PromptsegError
from promptseg.reporting import figures as fig
from promptseg.datasets.metrics_table import read_metrics
from promptseg.reporting.report import build_report, load_run, select_best_worst
from promptseg.io import load_labels, load_volume, save_mask

COLUMNS = ["dataset", "model", "case", "label", "label_name", "prompt_mode", "setting", "sweep_param",
           "sweep_value", "dice", "nsd", "hd95", "pred_ml", "ref_ml", "tolerance_mm", "seconds"]


def assert_png(path: Path, min_w: int = 300, min_h: int = 200) -> tuple[int, int]:
    path = Path(path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    width, height = struct.unpack(">II", data[16:24])
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size == (width, height)
        assert (width, height) >= (min_w, min_h) and width < 5000 and height < 5000
        # not a blank canvas
        assert len(set(np.asarray(im.convert("L")).ravel().tolist())) > 5
    return width, height


def row(dataset, model, case, dice, label=1, label_name="lesion", nsd=None, hd95=None, setting="",
        sweep_param="", sweep_value="", ref_ml=1.0, pred_ml=1.0, tolerance=2.0):
    return {
        "dataset": dataset, "model": model, "case": case, "label": label, "label_name": label_name,
        "prompt_mode": "box-mid", "setting": setting, "sweep_param": sweep_param, "sweep_value": sweep_value,
        "dice": dice, "nsd": dice if nsd is None else nsd, "hd95": 1.0 if hd95 is None else hd95,
        "pred_ml": pred_ml, "ref_ml": ref_ml, "tolerance_mm": tolerance, "seconds": 0.5,
    }


def write_run(folder: Path, rows, dataset, model, cases=(), sweep=None, label_names=None, **info) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "dataset": dataset, "dataset_path": str(folder.parent), "model": model, "checkpoint": None, "seed": 0,
        "prompt": {"mode": "box-mid", "jitter_px": 0.0, "points": 1}, "sweep": sweep, "tolerance_mm": 2.0,
        "promptseg_version": "0.1.0", "started": "2026-01-01T00:00:00", "finished": "2026-01-01T00:10:00",
        "cases": list(cases), "label_names": label_names or {"1": "lesion"},
    }
    meta.update(info)
    (folder / "run.json").write_text(json.dumps(meta))
    with open(folder / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return folder


def dice_of(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


# --------------------------------------------------------------------------- fixtures

BREAST_PREDICTIONS = ("exact", "shift", "erode", "empty")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Five run folders: {breast, synth} x {m1, m2} and a sweep run on breast with m1."""
    root = tmp_path_factory.mktemp("runs")
    volume = load_volume(case_image("breast1"))
    reference = load_labels(case_label("breast1"), reference=volume).array
    voxel_ml = float(np.prod(volume.spacing)) / 1000.0
    predictions = {
        "exact": reference.copy(),
        "shift": np.roll(reference, 2, axis=2),
        "erode": ndimage.binary_erosion(reference > 0).astype(np.uint8),
        "empty": np.zeros_like(reference),
    }
    cases = [{"case": f"b_{name}", "image": str(case_image("breast1")), "label": str(case_label("breast1"))}
             for name in BREAST_PREDICTIONS]
    m1_rows, dices = [], {}
    for name in BREAST_PREDICTIONS:
        pred = predictions[name]
        save_mask(pred, root / "breast_m1" / "predictions" / f"b_{name}.nii.gz", volume)
        d = dice_of(pred, reference)
        dices[f"b_{name}"] = d
        m1_rows.append(row("breast", "m1", f"b_{name}", d, hd95=math.inf if name == "empty" else 2.5,
                           ref_ml=int(reference.sum()) * voxel_ml, pred_ml=int((pred > 0).sum()) * voxel_ml))
    out = {"root": root, "dices": dices, "voxel_ml": voxel_ml, "n_ref": int(reference.sum())}
    out["breast_m1"] = write_run(root / "breast_m1", m1_rows, "breast", "m1", cases)
    # m2 on breast: numbers only, no predictions (montages must be skipped with a note)
    out["breast_m2"] = write_run(root / "breast_m2", [row("breast", "m2", c["case"], d)
                                                      for c, d in zip(cases, [0.8, 0.6, 0.4, 0.2])],
                                 "breast", "m2", cases)
    # a synthetic two-label dataset without label files (sizes from ref_ml); empty cells and inf
    synth_cases = [{"case": f"s{i}", "image": "missing.nii.gz", "label": "missing_label.nii.gz"} for i in range(3)]
    names = {"1": "liver", "2": "tumour"}
    m1 = [row("synth", "m1", "s0", 0.90, 1, "liver", ref_ml=1500), row("synth", "m1", "s0", 0.30, 2, "tumour", ref_ml=3),
          row("synth", "m1", "s1", 0.95, 1, "liver", ref_ml=1700), row("synth", "m1", "s1", 0.50, 2, "tumour", ref_ml=12),
          row("synth", "m1", "s2", 0.92, 1, "liver", ref_ml=1600),
          row("synth", "m1", "s2", 0.00, 2, "tumour", nsd="", hd95="inf", ref_ml=0.5)]
    m2 = [row("synth", "m2", r["case"], v, r["label"], r["label_name"], ref_ml=r["ref_ml"])
          for r, v in zip(m1, [0.85, 0.20, 0.87, 0.40, 0.89, 0.10])]
    m2[1]["dice"] = ""  # an empty cell: a missing value
    out["synth_m1"] = write_run(root / "synth_m1", m1, "synth", "m1", synth_cases, label_names=names)
    out["synth_m2"] = write_run(root / "synth_m2", m2, "synth", "m2", synth_cases, label_names=names)
    # sweep of the number of points on breast with m1 (predictions under predictions/<setting>/)
    sweep_rows = []
    values = {1: [0.2, 0.4, 0.6, 0.8], 5: [0.5, 0.6, 0.7, 0.9], 10: [0.6, 0.7, 0.8, 1.0]}
    for points, ds in values.items():
        for c, d in zip(cases, ds):
            sweep_rows.append(row("breast", "m1", c["case"], d, setting=f"points={points}", sweep_param="points",
                                  sweep_value=points))
    for name in BREAST_PREDICTIONS:
        save_mask(predictions[name], root / "breast_sweep" / "predictions" / "points=10" / f"b_{name}.nii.gz", volume)
    out["sweep"] = write_run(root / "breast_sweep", sweep_rows, "breast", "m1", cases,
                             sweep={"param": "points", "values": [1, 5, 10]},
                             prompt={"mode": "points", "jitter_px": 0.0, "points": 1})
    return out


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    split = out.parent / "split.json"
    split.write_text(json.dumps({"train": ["b_exact", "b_shift", "s0"], "val": ["b_erode"], "test": ["s1"]}))
    path = build_report([runs[k] for k in ("breast_m1", "breast_m2", "synth_m1", "synth_m2", "sweep")], out,
                        best_worst=3, split=split, html=True)
    return path


# --------------------------------------------------------------------------- numbers behind the figures

def test_read_metrics_tolerates_inf_and_empty_cells(runs):
    rows = read_metrics(runs["synth_m1"] / "metrics.csv")
    assert len(rows) == 6
    assert rows[0]["dice"] == 0.9 and rows[0]["label"] == 1 and rows[0]["label_name"] == "liver"
    assert math.isinf(rows[5]["hd95"]) and math.isnan(rows[5]["nsd"])
    rows = read_metrics(runs["synth_m2"] / "metrics.csv")
    assert math.isnan(rows[1]["dice"])


def test_median_table_is_exact(runs):
    rows = [r for k in ("breast_m1", "breast_m2", "synth_m1", "synth_m2") for r in load_run(runs[k]).rows]
    table = fig.median_table(rows)
    assert table.rows == ["breast", "synth"] and table.columns == ["m1", "m2"]
    assert table.get("breast", "m1") == pytest.approx(float(np.median(list(runs["dices"].values()))))
    assert table.get("breast", "m2") == pytest.approx(0.5)          # median of 0.8, 0.6, 0.4, 0.2
    assert table.get("synth", "m1") == pytest.approx(0.7)           # 0 .3 .5 .9 .92 .95 -> (0.5 + 0.9) / 2
    assert table.get("synth", "m2") == pytest.approx(0.85)          # empty cell left out: .85 .87 .4 .89 .1
    assert table.counts.tolist() == [[4, 4], [6, 5]]


def test_boxplot_groups_per_label_and_model(runs):
    rows = [r for k in ("synth_m1", "synth_m2") for r in load_run(runs[k]).rows]
    groups = fig.boxplot_groups(rows, "dice")
    assert list(groups) == ["liver", "tumour"]
    assert list(groups["tumour"]) == ["m1", "m2"]
    assert groups["tumour"]["m1"].tolist() == [0.3, 0.5, 0.0]
    assert groups["tumour"]["m2"].tolist() == [0.4, 0.1]
    hd = fig.boxplot_groups(rows, "hd95")
    assert hd["tumour"]["m1"].tolist() == [1.0, 1.0]   # inf cannot be drawn
    both = fig.boxplot_groups(rows + load_run(runs["breast_m2"]).rows, "dice")
    assert list(both) == ["synth: liver", "synth: tumour", "breast: lesion"]


def test_sweep_series_numeric_and_categorical(runs):
    series = fig.sweep_series(load_run(runs["sweep"]).rows, "dice")
    assert len(series) == 1
    s = series[0]
    assert s.param == "points" and s.numeric and s.x == ["1", "5", "10"]
    assert s.median.tolist() == pytest.approx([0.5, 0.65, 0.75])
    assert s.q1.tolist() == pytest.approx([0.35, 0.575, 0.675])
    assert s.q3.tolist() == pytest.approx([0.65, 0.75, 0.85])
    assert s.n.tolist() == [4, 4, 4]
    rows = [row("d", "m", f"c{i}", v, setting=f"aggregate={a}", sweep_param="aggregate", sweep_value=a)
            for a, vals in (("max", [0.1, 0.3]), ("avg", [0.5, 0.9])) for i, v in enumerate(vals)]
    (cat,) = fig.sweep_series(rows, "dice")
    assert not cat.numeric and cat.x == ["max", "avg"] and cat.at("avg") == pytest.approx(0.7)


def test_overview_numbers_and_split(tmp_path):
    info = [fig.DatasetInfo("a", [fig.CaseInfo("c1", {"liver": 1500.0, "tumour": 3.0}),
                                  fig.CaseInfo("c2.nii.gz", {"liver": 1600.0}), fig.CaseInfo("c3", {})]),
            fig.DatasetInfo("b", [fig.CaseInfo("c1", {"lesion": 0.2})])]
    split = {"c1": "train", "c2": "test", "b/c1": "val"}
    n = fig.overview_numbers(info, split)
    assert n.cases == {"a": 3, "b": 1}
    assert n.label_cases == {"a": {"liver": 2, "tumour": 1}, "b": {"lesion": 1}}
    assert n.sizes["a"]["liver"] == [1500.0, 1600.0]
    assert n.splits == {"a": {"train": 1, "test": 1, "unassigned": 1}, "b": {"val": 1}}
    assert fig.overview_numbers(info).splits == {}


def test_best_worst_selection():
    rows = [row("d", "m", f"c{i}", v) for i, v in enumerate([0.5, 0.9, math.nan, 0.1, 0.7, 0.9, 0.3])]
    best, worst = select_best_worst(rows, 2)
    assert [r["case"] for r in best] == ["c1", "c5"]        # tie 0.9 broken by case id
    assert [r["case"] for r in worst] == ["c3", "c6"]
    best, worst = select_best_worst(rows[:4], 3)            # 3 scored rows: no row in both lists
    assert [r["case"] for r in best] == ["c1", "c0", "c3"] and worst == []
    best, worst = select_best_worst(rows, 0)
    assert best == [] and worst == []


# --------------------------------------------------------------------------- the figures

def test_every_figure_is_a_real_png(runs, tmp_path):
    rows = [r for k in ("breast_m1", "breast_m2", "synth_m1", "synth_m2") for r in load_run(runs[k]).rows]
    assert_png(fig.dice_heatmap(rows, tmp_path / "heat.png"))
    assert_png(fig.metric_boxplots(rows, tmp_path / "box.png"))
    assert_png(fig.metric_boxplots(rows, tmp_path / "hd.png", metric="hd95"))
    assert_png(fig.sweep_curves(load_run(runs["sweep"]).rows, tmp_path / "sweep.png"))
    info = [fig.DatasetInfo("a", [fig.CaseInfo("c1", {"liver": 1500.0, "tumour": 3.0}),
                                  fig.CaseInfo("c2", {"liver": 1600.0, "tumour": 0.4})])]
    w3, _ = assert_png(fig.dataset_overview(info, tmp_path / "ov3.png"))
    w4, _ = assert_png(fig.dataset_overview(info, tmp_path / "ov4.png", split={"c1": "train", "c2": "test"}))
    assert w4 > w3   # the split panel is added
    with pytest.raises(PromptsegError, match="no Dice"):
        fig.dice_heatmap([row("d", "m", "c", "")], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
    assert not list(tmp_path.glob(".*tmp*"))    # atomic writes leave nothing behind


def test_case_montage_on_real_breast1(runs, tmp_path):
    reference = load_labels(case_label("breast1")).array > 0
    counts = reference.reshape(reference.shape[0], -1).sum(axis=1)
    zs = fig.montage_slices_by_reference(reference, max_slices=3)
    assert zs == sorted(np.argsort(-counts, kind="stable")[:3].tolist())
    assert all(counts[z] >= counts[[k for k in range(len(counts)) if k not in zs]].max() for z in zs)
    assert fig.montage_slices_by_reference(np.zeros((5, 4, 4), bool)) == [2]
    pred = runs["breast_m1"] / "predictions" / "b_shift.nii.gz"
    out = fig.case_montage(case_image("breast1"), case_label("breast1"), pred, tmp_path / "m.png",
                           title="breast1 shifted", label=1, max_slices=4)
    w, h = assert_png(out)
    assert w > h    # 4 slices in one row
    # an empty prediction still shows the reference slices
    empty = runs["breast_m1"] / "predictions" / "b_empty.nii.gz"
    assert_png(fig.case_montage(case_image("breast1"), case_label("breast1"), empty, tmp_path / "e.png"))


# --------------------------------------------------------------------------- the report

def md_tables(text: str) -> dict[str, list[list[str]]]:
    """Markdown tables keyed by their first header cell."""
    tables, lines = {}, text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header = [c.strip() for c in line.strip("|").split(" | ")]
            body = []
            for nxt in lines[i + 2:]:
                if not nxt.startswith("| "):
                    break
                body.append([c.strip() for c in nxt.strip()[2:-2].split(" | ")])
            tables.setdefault(header[0], []).append([header] + body)
    return tables


def test_report_tables_have_the_right_numbers(report, runs):
    text = report.read_text(encoding="utf-8")
    assert report.name == "report.md"
    (runs_table,) = md_tables(text)["run"][:1]
    header, body = runs_table[0], runs_table[1:]
    col = {name: header.index(name) for name in header}
    lines = {(r[col["run"]], r[col["setting"]]): r for r in body}
    assert len(body) == 4 + 3    # four runs + three sweep settings
    m2 = lines[("breast_m2", "–")]
    assert m2[col["Dice median"]] == "0.500" and m2[col["Dice mean"]] == "0.500" and m2[col["cases"]] == "4"
    synth = lines[("synth_m1", "–")]
    assert synth[col["Dice median"]] == "0.700" and synth[col["Dice mean"]] == f"{(0.9+0.3+0.95+0.5+0.92)/6:.3f}"
    assert synth[col["NSD median"]] == "0.900" and synth[col["HD95 inf"]] == "1"
    assert synth[col["cases"]] == "3" and synth[col["rows"]] == "6" and synth[col["NSD τ (mm)"]] == "2"
    assert lines[("synth_m2", "–")][col["Dice median"]] == "0.850"
    m1 = lines[("breast_m1", "–")]
    assert m1[col["prompt"]] == "box-mid" and lines[("breast_sweep", "points=1")][col["prompt"]] == "points"
    assert m1[col["Dice median"]] == f"{np.median(list(runs['dices'].values())):.3f}"
    assert m1[col["HD95 median (mm)"]] == "2.50"
    assert lines[("breast_sweep", "points=5")][col["Dice median"]] == "0.650"
    assert lines[("breast_sweep", "points=10")][col["Dice median"]] == "0.750"
    # per label
    per_label = md_tables(text)["run"][1]
    h = per_label[0]
    tumour = next(r for r in per_label[1:] if r[0] == "synth_m1" and r[h.index("label")] == "tumour")
    assert tumour[h.index("Dice median")] == "0.300" and tumour[h.index("n")] == "3"
    assert tumour[h.index("HD95 median (mm)")] == "1.00"     # 1, 1, inf


def test_report_best_worst_and_montages(report, runs):
    text = report.read_text(encoding="utf-8")
    tables = md_tables(text)
    # 4 breast cases < 2 x 3: no "best" or "worst", every case ranked by Dice
    ranked_m1, ranked_m2, ranked_synth2, ranked_sweep = tables["rank by Dice"]  # synth m2: 5 scored rows
    dices = runs["dices"]
    ranked = sorted(dices, key=lambda c: (-dices[c], c))
    assert [r[1] for r in ranked_m1[1:]] == ranked and [r[0] for r in ranked_m1[1:]] == ["1", "2", "3", "4"]
    assert all(r[-1].startswith("[png](figures/montages/breast_m1/") for r in ranked_m1[1:])
    assert all("prediction file not found" in r[-1] for r in ranked_m2[1:])
    # synth: 6 (case, label) rows: 3 best, 3 worst; no image files -> notes, best are the liver rows
    (best_synth1,), (worst_synth1,) = tables["best"], tables["worst"]
    assert [r[3] for r in ranked_synth2[1:]] == ["0.890", "0.870", "0.850", "0.400", "0.100"]
    assert [r[2] for r in best_synth1[1:]] == ["liver"] * 3 and [r[2] for r in worst_synth1[1:]] == ["tumour"] * 3
    # the sweep run's montages come from its best setting, points=10
    assert "setting points=10" in text
    assert [r[3] for r in ranked_sweep[1:]] == ["1.000", "0.800", "0.700", "0.600"]
    assert all(r[-1].startswith("[png](figures/montages/breast_sweep/") for r in ranked_sweep[1:])
    assert "best 1" not in text.split("## Best and worst cases")[1].split("### synth")[0]


def test_report_links_are_relative_and_exist(report, tmp_path):
    text = report.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)]+)\)", text)
    pngs = [link for link in links if link.endswith(".png")]
    assert {"figures/heatmap_dice.png", "figures/boxplots_dice.png", "figures/boxplots_nsd.png",
            "figures/boxplots_hd95.png", "figures/sweep_curves.png", "figures/dataset_overview.png"} <= set(pngs)
    assert len([p for p in pngs if "/montages/" in p]) >= 6
    moved = tmp_path / "moved"
    shutil.copytree(report.parent, moved)
    for link in pngs:
        assert not link.startswith("/")
        assert (moved / link).is_file(), link
    for link in set(pngs):
        assert_png(report.parent / link)
    html = (report.parent / "report.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and '<img src="figures/heatmap_dice.png"' in html
    assert "http" not in html


def test_report_dataset_overview(report, runs):
    text = report.read_text(encoding="utf-8")
    (overview,) = md_tables(text)["dataset"]
    h = overview[0]
    rows = {r[0]: r for r in overview[1:]}
    ml = runs["n_ref"] * runs["voxel_ml"]
    assert rows["breast"][h.index("cases")] == "4"
    assert rows["breast"][h.index("labels (cases holding them)")] == "lesion (4)"
    assert rows["breast"][h.index("object volume median (min–max), ml")] == f"{ml:.2f} ({ml:.2f}–{ml:.2f})"
    assert rows["breast"][h.index("split")] == "train 2, val 1, unassigned 1"
    assert rows["synth"][h.index("labels (cases holding them)")] == "liver (3), tumour (3)"
    assert rows["synth"][h.index("split")] == "train 1, test 1, unassigned 1"
    assert "synth: reference label files not found" in text


def test_report_inside_a_run_folder_and_without_montages(runs):
    out = runs["synth_m1"] / "report"
    path = build_report([runs["synth_m1"], runs["synth_m1"]], out, best_worst=0)
    text = path.read_text(encoding="utf-8")
    assert path == out / "report.md" and "Best and worst" not in text and "Prompt sweeps" not in text
    assert (out / "figures" / "heatmap_dice.png").is_file()
    assert len(md_tables(text)["run"][0]) == 2     # the same folder twice counts once
    shutil.rmtree(out)


def test_bad_run_folders(tmp_path, runs):
    with pytest.raises(PromptsegError, match="does not exist"):
        load_run(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PromptsegError, match=r"empty is not a benchmark run folder: run.json is missing"):
        build_report([runs["synth_m1"], empty], tmp_path / "out")
    (empty / "run.json").write_text("{}")
    with pytest.raises(PromptsegError, match="metrics.csv is missing"):
        load_run(empty)
    (empty / "metrics.csv").write_text("case,label\nc1,1\n")
    with pytest.raises(PromptsegError, match="missing column.*dice"):
        load_run(empty)
    (empty / "metrics.csv").write_text("case,label,dice\nc1,1,0.5\nc2,1,high\n")
    with pytest.raises(PromptsegError, match="line 3: dice is 'high'"):
        load_run(empty)
    (empty / "metrics.csv").write_text("case,label,dice\n")
    (empty / "run.json").write_text("{oops")
    with pytest.raises(PromptsegError, match="run.json is not valid JSON"):
        load_run(empty)
    with pytest.raises(PromptsegError, match="best_worst"):
        build_report([runs["synth_m1"]], tmp_path / "out", best_worst=-1)
    assert not (tmp_path / "out" / "report.md").exists()


def test_cli(runs, tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["report", str(runs["synth_m1"]), str(runs["synth_m2"]), "-o", str(out), "--no-progress",
                 "--best-worst", "1"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == str(out / "report.md") and Path(printed).is_file()
    assert main(["report", str(tmp_path / "missing"), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("promptseg: error:") and "missing" in err
    assert main(["report", str(runs["synth_m1"]), "-o", str(out), "--best-worst", "-2"]) == 2
    assert "--best-worst" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    assert "promptseg report runs/" in capsys.readouterr().out




def test_per_case_heatmap_and_runs_told_apart_by_their_segmentation_options(tmp_path):
    from promptseg.reporting.figures import median_table

    cases = ("lung1", "brain2", "breast1")
    plain = write_run(tmp_path / "plain", [row("real", "litemedsam", c, d) for c, d in zip(cases, (0.8, 0.5, 0.4))],
                      "real", "litemedsam")
    refined = write_run(tmp_path / "refined", [row("real", "litemedsam", c, d) for c, d in zip(cases, (0.9, 0.45, 0.4))],
                        "real", "litemedsam", segment_options={"refine_prompt": True})
    text = build_report([plain, refined], tmp_path / "report", best_worst=0).read_text(encoding="utf-8")
    assert "## Dice per case and model" in text
    assert_png(tmp_path / "report" / "figures" / "heatmap_dice_cases.png")
    assert "litemedsam +refine-prompt" in text
    # the numbers behind the heatmap: one row per case, one column per configuration
    rows = [dict(r, column="litemedsam" if i < 3 else "litemedsam +refine-prompt")
            for i, r in enumerate(row("real", "litemedsam", c, d) for c, d in
                                  zip(cases * 2, (0.8, 0.5, 0.4, 0.9, 0.45, 0.4)))]
    table = median_table(rows, "dice", index="case", columns="column")
    assert table.rows == list(cases) and table.values[:, 1].tolist() == [0.9, 0.45, 0.4]
