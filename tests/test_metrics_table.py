"""The per-case metrics table (promptseg.datasets.metrics_table): exact round trips and one-line errors."""

from __future__ import annotations

import math

import pytest

from promptseg.datasets.metrics_table import COLUMNS, metric_value, read_metrics, write_metrics
from promptseg.errors import PromptsegError


def benchmark_row(**changes) -> dict:
    row = {"dataset": "ds", "model": "m", "case": "c0", "label": 2, "label_name": "lesion", "prompt_mode": "box-mid",
           "setting": "jitter_px=5", "sweep_param": "jitter_px", "sweep_value": "5", "dice": 0.8571428571428571,
           "nsd": 1 / 3, "hd95": math.inf, "pred_ml": 1e-7, "ref_ml": 12.0, "tolerance_mm": 2.0, "seconds": 1.234,
           "phases": 1, "encoded_slices": 7, "seed": 0}
    row.update(changes)
    return row


def test_benchmark_rows_round_trip_exactly_in_column_order(tmp_path):
    rows = [benchmark_row(), benchmark_row(case="c1", label=1, hd95=0.0, dice=1.0, encoded_slices=None)]
    path = write_metrics(rows, tmp_path / "run" / "metrics.csv", COLUMNS)
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[0] == ",".join(COLUMNS)
    assert lines[2].startswith("ds,m,c1,1,lesion,box-mid,jitter_px=5,jitter_px,5,1,0.3333333333333333,0,1e-07,12,2,")
    back = read_metrics(tmp_path / "run")            # a run folder reads its metrics.csv
    assert back[0] == rows[0]                        # every float exactly, inf included
    assert back[1]["encoded_slices"] is None and {k: v for k, v in back[1].items() if k != "encoded_slices"} == {
        k: v for k, v in rows[1].items() if k != "encoded_slices"}


def test_extra_keys_follow_the_given_columns(tmp_path):
    path = write_metrics([{"case": "a", "label": 1, "dice": 0.5, "note": "x"}], tmp_path / "m.csv")
    assert path.read_text(encoding="utf-8").splitlines()[0] == "case,label,dice,nsd,hd95,pred_ml,ref_ml,tolerance_mm,note"
    [row] = read_metrics(path)
    assert list(row) == ["case", "label", "dice", "nsd", "hd95", "pred_ml", "ref_ml", "tolerance_mm", "note"]
    assert (row["case"], row["label"], row["dice"], row["note"]) == ("a", 1, 0.5, "x")
    assert all(math.isnan(row[k]) for k in ("nsd", "hd95", "pred_ml", "ref_ml", "tolerance_mm"))  # empty cells


def test_read_errors_name_the_file_line_and_column(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("case,label,dice\na,1,0.5\nb,1,high\n", encoding="utf-8")
    with pytest.raises(PromptsegError, match=r"m.csv line 3: dice is 'high', not a number"):
        read_metrics(path)
    path.write_text("case,label\na,1\n", encoding="utf-8")
    with pytest.raises(PromptsegError, match=r"missing column\(s\) dice \(has case, label\)"):
        read_metrics(path)
    path.write_text("", encoding="utf-8")
    with pytest.raises(PromptsegError, match="empty file, expected a CSV header"):
        read_metrics(path)
    with pytest.raises(PromptsegError, match="cannot read"):
        read_metrics(tmp_path / "missing.csv")


def test_metric_value_reads_numbers_and_csv_text():
    assert metric_value(0.5) == 0.5 and metric_value(" inf ") == math.inf and metric_value("2") == 2.0
    assert all(math.isnan(metric_value(v)) for v in (None, "", "nan", "high"))
