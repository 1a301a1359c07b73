"""Summaries of per-case metric rows: mean, sd, median and IQR per group (by default per label).

Non-finite values (``inf`` HD95 when exactly one of prediction and reference is empty,
NaN from elsewhere) are left out of every statistic and counted in ``n_nonfinite``, so
the summary says how many cases a mean does not cover.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

from ..datasets.metrics_table import metric_value

#: statistics computed per metric, in the order :func:`format_table` shows them
STATISTICS = ("mean", "sd", "median", "q1", "q3")


def _statistics(values: list[float]) -> dict:
    finite = np.array([v for v in values if math.isfinite(v)], dtype=float)
    counts = {"n_finite": int(finite.size), "n_nonfinite": len(values) - int(finite.size)}
    if finite.size == 0:
        return {**{name: None for name in STATISTICS}, **counts}
    q1, median, q3 = np.percentile(finite, [25, 50, 75])
    return {
        "mean": float(finite.mean()),
        "sd": float(finite.std(ddof=1)) if finite.size > 1 else None,
        "median": float(median),
        "q1": float(q1),
        "q3": float(q3),
        **counts,
    }


def _sort_key(key: tuple) -> tuple:
    # numbers before text, numbers numerically (label 10 after label 2)
    return tuple((0, float(k), "") if isinstance(k, (int, float)) else (1, 0.0, str(k)) for k in key)


def summarize(
    rows: Iterable[dict],
    by: Sequence[str] = ("label",),
    metrics: Sequence[str] = ("dice", "nsd", "hd95"),
) -> list[dict]:
    """Per-group statistics of metric rows.

    Args:
        rows: dicts with the ``by`` keys and the ``metrics`` keys (e.g. the rows of
            :func:`~promptseg.evaluation.evaluate.evaluate_paths`, or rows read back from
            the CSV: strings such as ``"0.91"`` or ``"inf"`` are accepted).
        by: keys to group on; ``()`` gives one group over all rows.
        metrics: metric keys to summarise.

    Returns:
        One dict per group, sorted by the group keys::

            {"label": 1, "n": 12,
             "dice": {"mean": .., "sd": .., "median": .., "q1": .., "q3": ..,
                      "n_finite": 12, "n_nonfinite": 0},
             "nsd": {...}, "hd95": {...}}

        ``n`` counts the rows of the group. Statistics use finite values only
        (``n_finite`` of them); a statistic without enough finite values is ``None``
        (``sd`` needs two; it is the sample standard deviation, ddof = 1). Quartiles and
        median use linear interpolation (NumPy's default).

    Raises:
        KeyError: a row lacks a ``by`` key.
    """
    by = tuple(by)
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[key] for key in by), []).append(row)
    out = []
    for key in sorted(groups, key=_sort_key):
        members = groups[key]
        entry: dict = dict(zip(by, key))
        entry["n"] = len(members)
        for metric in metrics:
            entry[metric] = _statistics([metric_value(row.get(metric)) for row in members])
        out.append(entry)
    return out


def _fmt(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


#: decimals shown per metric in :func:`format_table` (others: 3)
_DIGITS = {"dice": 3, "nsd": 3, "hd95": 2, "pred_ml": 2, "ref_ml": 2}
_UNITS = {"hd95": " mm", "pred_ml": " ml", "ref_ml": " ml"}


def format_table(summary_rows: Sequence[dict]) -> str:
    """A plain-text table of :func:`summarize` output, one line per group.

    Each metric shows ``mean (sd)`` and ``median [q1, q3]``; a footnote lists how many
    non-finite values (empty prediction or reference) were left out of which group.
    """
    summary_rows = list(summary_rows)
    if not summary_rows:
        return "(no rows)"
    first = summary_rows[0]
    metrics = [k for k, v in first.items() if isinstance(v, dict)]
    by = [k for k in first if k != "n" and k not in metrics]
    header = [*by, "n"]
    for metric in metrics:
        unit = _UNITS.get(metric, "")
        header += [f"{metric}{unit} mean (sd)", f"{metric} median [IQR]"]
    lines = [header]
    notes = []
    for row in summary_rows:
        cells = [str(row[k]) for k in by] + [str(row["n"])]
        for metric in metrics:
            s = row[metric]
            d = _DIGITS.get(metric, 3)
            cells.append(f"{_fmt(s['mean'], d)} ({_fmt(s['sd'], d)})")
            cells.append(f"{_fmt(s['median'], d)} [{_fmt(s['q1'], d)}, {_fmt(s['q3'], d)}]")
            if s["n_nonfinite"]:
                where = ", ".join(f"{k} {row[k]}" for k in by) or "all rows"
                notes.append(f"{metric}: {s['n_nonfinite']} of {row['n']} values not finite ({where}); left out")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) if i < len(by) else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))).rstrip()
            for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    if notes:
        text.append("")
        text += notes
        text.append("(not finite: HD95 is inf when exactly one of prediction and reference is empty)")
    return "\n".join(text)
