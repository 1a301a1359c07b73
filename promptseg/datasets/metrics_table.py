"""The per-case metrics table: one CSV row per (case, label) -- and per setting in a benchmark run.

``promptseg evaluate`` writes the :data:`CASE_COLUMNS`; ``promptseg benchmark`` writes
every column of :data:`COLUMNS` to a run folder's ``metrics.csv``; summaries, reports
and figures read either with :func:`read_metrics`. Columns:

==================  ==========================================================
``dataset``         dataset name (benchmark)
``model``           model name (benchmark)
``case``            case id
``label``           label value (int >= 1)
``label_name``      the label's name, or the value as text (benchmark)
``prompt_mode``     ``box-mid``, ``box-2d``, ``box3d`` or ``points`` (benchmark)
``setting``         ``<param>=<value>`` of a sweep, empty without (benchmark)
``sweep_param``     the swept parameter, empty without a sweep (benchmark)
``sweep_value``     its value as text (benchmark)
``dice``, ``nsd``   0-1
``hd95``            mm; ``inf`` when exactly one of prediction and reference is empty
``pred_ml``         predicted volume, ml
``ref_ml``          reference volume, ml
``tolerance_mm``    the NSD tolerance, mm
``seconds``         segmentation time of the case (benchmark)
``phases``          images segmented for the case (benchmark; > 1 for multi-phase aggregation)
``encoded_slices``  slices the image encoder ran on (benchmark)
``seed``            the prompt simulation's seed (benchmark)
==================  ==========================================================
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import PromptsegError
from ..io.atomic import atomic_path

#: every column, in the order a benchmark's metrics.csv holds them
COLUMNS = (
    "dataset", "model", "case", "label", "label_name", "prompt_mode", "setting", "sweep_param", "sweep_value",
    "dice", "nsd", "hd95", "pred_ml", "ref_ml", "tolerance_mm", "seconds", "phases", "encoded_slices", "seed",
)
#: the columns ``promptseg evaluate`` writes, in order
CASE_COLUMNS = ("case", "label", "dice", "nsd", "hd95", "pred_ml", "ref_ml", "tolerance_mm")
#: columns read as whole numbers (an empty cell -> None)
INT_COLUMNS = ("label", "phases", "encoded_slices", "seed")
#: columns read as floats (an empty cell -> nan, ``inf`` -> inf)
FLOAT_COLUMNS = ("dice", "nsd", "hd95", "pred_ml", "ref_ml", "tolerance_mm", "seconds")
#: columns a table cannot do without
REQUIRED_COLUMNS = ("case", "dice")
_WHOLE = re.compile(r"-?\d+")


def metric_value(value) -> float:
    """A metric cell as a float: numbers unchanged, CSV text parsed (``"inf"`` -> inf).

    None, an empty cell, ``nan`` and text that is not a number are all a missing
    value: nan (:func:`read_metrics` rejects such text earlier, naming file and line).
    """
    if value is None:
        return math.nan
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return math.nan


def _cell(value) -> str:
    """A value as CSV text: floats as the shortest text that reads back to the same float
    (``2.0`` -> ``"2"``, ``inf`` -> ``"inf"``), None as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    return str(value)


def metrics_text(rows: Iterable[dict], columns: Sequence[str] = CASE_COLUMNS) -> str:
    """Metric rows as CSV text: ``columns`` first, any other keys of the rows after.

    Floats are written so that :func:`read_metrics` gives back exactly the same
    number (an infinite HD95 as ``inf``); None becomes an empty cell.
    """
    rows = list(rows)
    header = list(columns)
    for row in rows:
        header += [key for key in row if key not in header]
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(row.get(column)) for column in header])
    return buffer.getvalue()


def write_metrics(rows: Iterable[dict], path, columns: Sequence[str] = CASE_COLUMNS) -> Path:
    """Write :func:`metrics_text` of ``rows`` to ``path`` atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(metrics_text(rows, columns), encoding="utf-8", newline="")
    return path


def _convert(row: dict, path: Path, line: int) -> dict:
    for name in FLOAT_COLUMNS:
        if name in row:
            text = row[name]
            try:
                row[name] = math.nan if text == "" else float(text)
            except ValueError:
                raise PromptsegError(f"{path} line {line}: {name} is {text!r}, not a number") from None
    for name in INT_COLUMNS:
        if name in row:
            text = row[name]
            row[name] = None if text == "" else int(text) if _WHOLE.fullmatch(text) else text
    return row


def read_metrics(path) -> list[dict]:
    """Rows of a metrics table (the CSV, or a benchmark run folder holding ``metrics.csv``).

    Cells are stripped of surrounding spaces. :data:`FLOAT_COLUMNS` become floats
    (an empty cell or ``nan`` -> nan, ``inf`` -> inf); :data:`INT_COLUMNS` become
    ints when they hold a whole number (an empty cell -> None, other text stays
    text); everything else stays text. Columns the file lacks are not added.

    Raises:
        PromptsegError: the file is unreadable or not UTF-8, lacks a header or a
            required column (:data:`REQUIRED_COLUMNS`), is malformed CSV, or a float
            cell holds text (the message names the file, line and column).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.csv"
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames:
                raise PromptsegError(f"{path}: empty file, expected a CSV header")
            columns = [c.strip() for c in reader.fieldnames]
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise PromptsegError(f"{path}: missing column(s) {', '.join(missing)} (has {', '.join(columns)})")
            return [_convert({(k or "").strip(): v.strip() if isinstance(v, str) else "" for k, v in raw.items()},
                             path, line)
                    for line, raw in enumerate(reader, start=2)]
    except OSError as error:
        raise PromptsegError(f"cannot read {path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise PromptsegError(f"{path} is not a UTF-8 text file") from None
    except csv.Error as error:
        raise PromptsegError(f"{path}: malformed CSV ({error})") from None
