"""Markdown (and optionally HTML) reports with figures from benchmark run folders.

:func:`build_report` reads one or more run folders written by ``promptseg
benchmark`` (``run.json`` + ``metrics.csv``, and ``predictions/`` for the case
montages) and writes into ``out_dir``::

    report.md            tables + figures, all links relative (the folder can be moved)
    report.html          the same page as plain HTML (with html=True)
    figures/heatmap_dice.png           median Dice per dataset x model
    figures/heatmap_dice_cases.png     Dice per case x model (2 to MAX_CASE_ROWS cases)
    figures/boxplots_{dice,nsd,hd95}.png  per label and model
    figures/sweep_curves.png           only when a run sweeps a prompt setting
    figures/montages/<run>/{best,worst}N_<case>_label<L>.png
    figures/dataset_overview.png       cases, labels, object sizes (ml), split shares

Numbers: Dice and NSD are 0-1, HD95 in mm (``inf`` when a mask is empty; medians
keep it, means of HD95 are not reported), volumes in ml. A table or figure
summarises (case, label) rows; for a sweep run, each setting is summarised on
its own and never pooled with the other settings.
"""

from __future__ import annotations

import datetime as _dt
import html as _html
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from ..errors import PromptsegError
from ..datasets.metrics_table import metric_value, read_metrics
from ..datasets.splits import read_folds
from . import figures as fig

log = logging.getLogger(__name__)

#: figures folder inside the report folder
FIGURES = "figures"
#: what :func:`build_report` writes into its folder
REPORT_FILES = ("report.md", "report.html", FIGURES)
#: the per-case heatmap is drawn up to this many cases
MAX_CASE_ROWS = 40


# --------------------------------------------------------------------------- reading runs

def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", str(text)).strip("_") or "x"


@dataclass
class Run:
    """One benchmark run folder: its ``run.json`` and ``metrics.csv`` rows.

    ``rows`` carry three extra keys set by :func:`build_report`: ``run`` (the
    run's id in the report), ``config`` (the model, disambiguated when several
    runs use it differently) and ``column`` (``config`` plus the sweep setting).
    """

    path: Path
    info: dict
    rows: list[dict]
    id: str = ""

    @property
    def dataset(self) -> str:
        return str(self.info.get("dataset") or (self.rows[0].get("dataset") if self.rows else "") or "?")

    @property
    def model(self) -> str:
        return str(self.info.get("model") or (self.rows[0].get("model") if self.rows else "") or "?")

    @property
    def sweep(self) -> Optional[dict]:
        sweep = self.info.get("sweep")
        return sweep if isinstance(sweep, dict) and sweep.get("param") else None

    @property
    def settings(self) -> list[str]:
        """Sweep settings in order of appearance (``[""]`` without a sweep)."""
        return list(dict.fromkeys(r.get("setting", "") for r in self.rows)) or [""]

    @property
    def label_names(self) -> dict[int, str]:
        names = self.info.get("label_names") or {}
        out = {}
        if isinstance(names, dict):
            for key, value in names.items():
                try:
                    out[int(key)] = str(value)
                except (TypeError, ValueError):
                    continue
        return out

    def prompt_text(self) -> str:
        """``run.json`` prompt as short text, e.g. ``box-mid, jitter 5 px`` or ``points, 10 points``.

        The swept parameter is left out (the setting says it).
        """
        prompt = self.info.get("prompt") or {}
        if not isinstance(prompt, dict):
            return str(prompt)
        mode = str(prompt.get("mode", "?"))
        swept = (self.sweep or {}).get("param")
        parts = [mode]
        jitter = metric_value(prompt.get("jitter_px"))
        if swept != "jitter_px" and not math.isnan(jitter) and jitter:
            parts.append(f"jitter {jitter:g} px")
        if swept != "points" and mode == "points" and prompt.get("points") is not None:
            parts.append(f"{prompt['points']} points")
        for key in ("input_size", "aggregate"):
            if swept != key and prompt.get(key) not in (None, ""):
                parts.append(f"{key} {prompt[key]}")
        return ", ".join(parts)

    @property
    def labels(self) -> Optional[set[int]]:
        """The label values the run evaluated (``run.json`` ``labels``), None = all."""
        labels = self.info.get("labels")
        if not isinstance(labels, list):
            return None
        try:
            return {int(v) for v in labels}
        except (TypeError, ValueError):
            return None


def load_run(run_dir) -> Run:
    """Read a run folder (``run.json`` + ``metrics.csv``).

    Raises:
        PromptsegError: the folder does not exist, lacks ``run.json`` or
            ``metrics.csv``, or either is malformed (the message names the folder).
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise PromptsegError(f"run folder {path} does not exist" if not path.exists()
                             else f"{path} is not a run folder (not a directory)")
    info_path, metrics_path = path / "run.json", path / "metrics.csv"
    for needed in (info_path, metrics_path):
        if not needed.is_file():
            raise PromptsegError(f"{path} is not a benchmark run folder: {needed.name} is missing "
                                 "(run 'promptseg benchmark' first)")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise PromptsegError(f"cannot read {info_path}: {error}") from None
    except json.JSONDecodeError as error:
        raise PromptsegError(f"{info_path} is not valid JSON: {error.msg} (line {error.lineno})") from None
    if not isinstance(info, dict):
        raise PromptsegError(f"{info_path}: expected a JSON object")
    rows = read_metrics(metrics_path)
    for row in rows:
        row.setdefault("setting", "")
        row.setdefault("sweep_param", "")
        row.setdefault("sweep_value", "")
        if not row.get("dataset"):
            row["dataset"] = str(info.get("dataset") or "?")
        if not row.get("model"):
            row["model"] = str(info.get("model") or "?")
        if not row.get("prompt_mode"):
            row["prompt_mode"] = str((info.get("prompt") or {}).get("mode", "")) if isinstance(info.get("prompt"), dict) else ""
    return Run(path=path, info=info, rows=rows)


def _assign_ids(runs: list[Run]) -> None:
    """Unique, file-name-safe run ids: folder name, then parent/folder, then a counter."""
    used: set[str] = set()
    for run in runs:
        resolved = run.path.resolve()
        candidates = [resolved.name, f"{resolved.parent.name}_{resolved.name}"]
        chosen = next((_safe_name(c) for c in candidates if _safe_name(c) not in used), None)
        if chosen is None:
            base, k = _safe_name(resolved.name), 2
            while f"{base}_{k}" in used:
                k += 1
            chosen = f"{base}_{k}"
        used.add(chosen)
        run.id = chosen


def _assign_configs(runs: list[Run]) -> None:
    """Label each row's model configuration so different runs are never pooled by accident.

    ``config`` is the model name, plus the prompt mode when runs use the same
    model with different prompt modes, plus the checkpoint's file stem when
    they use different checkpoints, plus the segmentation options that are on
    (``+refine-prompt``) when those differ, plus the run id when one dataset still has
    two runs with the same label (and the same swept parameter, or none).
    ``column`` adds the sweep setting.
    """
    by_model: dict[str, list[Run]] = {}
    for run in runs:
        by_model.setdefault(run.model, []).append(run)
    configs: dict[str, str] = {}
    for model, members in by_model.items():
        modes = {str((r.info.get("prompt") or {}).get("mode", "")) if isinstance(r.info.get("prompt"), dict) else ""
                 for r in members}
        checkpoints = {str(r.info.get("checkpoint") or "") for r in members}
        options = {_options_text(r) for r in members}
        for r in members:
            name = model
            if len(modes) > 1:
                name += f" ({r.info.get('prompt', {}).get('mode', '?')})"
            if len(checkpoints) > 1:
                ckpt = r.info.get("checkpoint")
                name += f" [{Path(str(ckpt)).name.split('.')[0] if ckpt else 'bundled'}]"
            if len(options) > 1 and _options_text(r):
                name += f" {_options_text(r)}"
            configs[r.id] = name
    seen: dict[tuple[str, str, str], int] = {}
    key = lambda run: (run.dataset, configs[run.id], (run.sweep or {}).get("param", ""))  # noqa: E731
    for run in runs:
        seen[key(run)] = seen.get(key(run), 0) + 1
    for run in runs:
        if seen[key(run)] > 1:
            configs[run.id] += f" [{run.id}]"
    for run in runs:
        for row in run.rows:
            row["run"] = run.id
            row["config"] = configs[run.id]
            setting = row.get("setting", "")
            row["column"] = f"{configs[run.id]} {setting}" if setting else configs[run.id]


def _options_text(run: Run) -> str:
    """The run's segmentation options that are on, e.g. ``"+refine-prompt"`` (``""`` for none)."""
    options = run.info.get("segment_options") or {}
    return " ".join(f"+{k.replace('_', '-')}" for k, v in sorted(options.items()) if v)


# --------------------------------------------------------------------------- statistics

def _values(rows, metric) -> np.ndarray:
    v = np.array([metric_value(r.get(metric)) for r in rows], dtype=float)
    return v[~np.isnan(v)]


def _median(rows, metric) -> float:
    return fig._median(_values(rows, metric))


def _mean(rows, metric) -> float:
    v = _values(rows, metric)
    return float(v.mean()) if v.size else math.nan


def _fmt(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}f}"


def heatmap_rows(runs: Sequence[Run]) -> list[dict]:
    """The rows of the Dice heatmap, one column (``model_column``) per model configuration.

    A run without a sweep gives all its rows under its ``config``; a sweep run
    gives the rows of its best setting (:func:`_best_setting`), labelled
    ``"<config> (best: <setting>)"``, and only when no run of the same
    configuration on the same dataset without a sweep exists -- so one model is
    never two columns.
    """
    plain = {(run.dataset, run.rows[0]["config"]) for run in runs if run.rows and len(run.settings) == 1
             and not run.sweep}
    out = []
    for run in runs:
        if not run.rows:
            continue
        config = run.rows[0]["config"]
        if len(run.settings) > 1 or run.sweep:
            if (run.dataset, config) in plain:
                continue
            setting = _best_setting(run)
            out += [{**r, "model_column": f"{config} (best: {setting})"} for r in run.rows
                    if r.get("setting", "") == setting]
        else:
            out += [{**r, "model_column": config} for r in run.rows]
    return out


def select_best_worst(rows: Sequence[Mapping], n: int = 3) -> tuple[list[Mapping], list[Mapping]]:
    """The ``n`` best and ``n`` worst (case, label) rows by Dice.

    Rows without a Dice value are ignored. Best is sorted by Dice descending,
    worst ascending; ties are broken by case id, then label. A row is never in
    both lists: with fewer than ``2 n`` rows, the worst list gets what the best
    list left.
    """
    scored = [r for r in rows if not math.isnan(metric_value(r.get("dice")))]
    key_up = sorted(scored, key=lambda r: (metric_value(r["dice"]), str(r.get("case")), str(r.get("label"))))
    best = sorted(scored, key=lambda r: (-metric_value(r["dice"]), str(r.get("case")), str(r.get("label"))))[:max(n, 0)]
    taken = {id(r) for r in best}
    worst = [r for r in key_up if id(r) not in taken][:max(n, 0)]
    return best, worst


def _best_setting(run: Run) -> str:
    """For a sweep run, the setting with the highest median Dice (the first on ties)."""
    best, best_value = run.settings[0], -math.inf
    for setting in run.settings:
        value = _median([r for r in run.rows if r.get("setting", "") == setting], "dice")
        if not math.isnan(value) and value > best_value:
            best, best_value = setting, value
    return best


# --------------------------------------------------------------------------- files of a run

def _resolve(text: Optional[str], run: Run) -> Optional[Path]:
    """A path from ``run.json``: absolute, or relative to ``dataset_path``, the run folder or the cwd."""
    if not text:
        return None
    path = Path(str(text))
    if path.is_absolute():
        return path if path.exists() else None
    bases = []
    if run.info.get("dataset_path"):
        base = Path(str(run.info["dataset_path"]))
        bases.append(base.parent if base.is_file() else base)   # a manifest file: relative to its folder
    bases += [run.path, Path.cwd()]
    for base in bases:
        candidate = base / path
        if candidate.exists():
            return candidate
    return None


def _case_entry(run: Run, case: str) -> Optional[dict]:
    for entry in run.info.get("cases") or []:
        if isinstance(entry, dict) and str(entry.get("case")) == str(case):
            return entry
    return None


def _prediction_path(run: Run, case: str, setting: str) -> Optional[Path]:
    folder = run.path / "predictions"
    if setting:
        folder = folder / setting
    exact = folder / f"{case}.nii.gz"
    if exact.is_file():
        return exact
    matches = sorted(p for p in folder.glob(f"{glob_escape(case)}.*") if p.is_file()) if folder.is_dir() else []
    return matches[0] if matches else None


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


# --------------------------------------------------------------------------- dataset overview

def collect_datasets(runs: Sequence[Run], progress: bool = False) -> tuple[list[fig.DatasetInfo], list[str]]:
    """Datasets of the runs, with each case's object volumes (ml) from its reference label map.

    Cases are taken from ``run.json`` ``cases`` (merged over runs of the same
    dataset, each case once). For each case the reference label map is read
    with :func:`promptseg.io.load_labels`; the volume of label ``L`` is its voxel
    count times the voxel volume (spacing x * y * z in mm^3 / 1000 = ml). Label
    names come from ``run.json`` ``label_names`` (else ``label L``); when ``run.json``
    lists ``labels``, only those are counted. When a label
    file cannot be read, the case's ``ref_ml`` values from ``metrics.csv`` are
    used instead and a note says so.

    Returns:
        (datasets, notes): one :class:`~promptseg.reporting.figures.DatasetInfo` per
        dataset name in order of first appearance, and human-readable notes.
    """
    from tqdm import tqdm

    from ..io import load_labels

    order: dict[str, list[tuple[Run, dict]]] = {}
    seen: set[tuple[str, str]] = set()
    for run in runs:
        entries = [e for e in (run.info.get("cases") or []) if isinstance(e, dict) and "case" in e]
        if not entries:  # fall back to the cases in metrics.csv
            entries = [{"case": c} for c in dict.fromkeys(str(r.get("case")) for r in run.rows)]
        for entry in entries:
            key = (run.dataset, str(entry["case"]))
            if key not in seen:
                seen.add(key)
                order.setdefault(run.dataset, []).append((run, entry))
    notes: list[str] = []
    fallback: dict[str, list[str]] = {}
    datasets = []
    total = sum(len(v) for v in order.values())
    with tqdm(total=total, desc="reading reference labels", unit="case", disable=not progress or total < 2,
              leave=False) as bar:
        for name, entries in order.items():
            info = fig.DatasetInfo(name)
            for run, entry in entries:
                case = str(entry["case"])
                names = run.label_names
                objects: dict[str, float] = {}
                label_path = _resolve(entry.get("label"), run)
                try:
                    if label_path is None:
                        raise PromptsegError("label file not found")
                    labels = load_labels(label_path)
                    voxel_ml = float(np.prod(labels.spacing)) / 1000.0
                    counts = np.bincount(labels.array.ravel())
                    wanted = run.labels
                    for value in np.nonzero(counts)[0]:
                        if value and (wanted is None or int(value) in wanted):
                            objects[names.get(int(value), f"label {int(value)}")] = float(counts[value] * voxel_ml)
                except PromptsegError:
                    fallback.setdefault(name, []).append(case)
                    for r in run.rows:
                        if str(r.get("case")) == case and not math.isnan(metric_value(r.get("ref_ml"))):
                            label_name = fig.label_display(r)
                            if metric_value(r["ref_ml"]) > 0:
                                objects.setdefault(label_name, metric_value(r["ref_ml"]))
                info.cases.append(fig.CaseInfo(case, objects))
                bar.update(1)
            datasets.append(info)
    for name, cases in fallback.items():
        shown = ", ".join(cases[:5]) + (f" and {len(cases) - 5} more" if len(cases) > 5 else "")
        notes.append(f"{name}: reference label files not found or unreadable for {len(cases)} case(s) "
                     f"({shown}); their sizes come from ref_ml in metrics.csv.")
    return datasets, notes


# --------------------------------------------------------------------------- rendering

@dataclass
class _Page:
    """The report as blocks, rendered to Markdown and to HTML."""

    blocks: list[tuple] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self.blocks.append(("table", list(headers), [list(map(str, r)) for r in rows]))

    def img(self, src: str, alt: str) -> None:
        self.blocks.append(("img", src, alt))

    def markdown(self) -> str:
        out = []
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                out.append("#" * block[1] + " " + block[2])
            elif kind == "p":
                out.append(block[1])
            elif kind == "table":
                cell = lambda s: str(s).replace("|", "\\|")  # noqa: E731
                out.append("\n".join(["| " + " | ".join(cell(h) for h in block[1]) + " |",
                                      "|" + "---|" * len(block[1])]
                                     + ["| " + " | ".join(cell(c) for c in r) + " |" for r in block[2]]))
            elif kind == "img":
                out.append(f"![{block[2]}]({block[1]})")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        def inline(text: str) -> str:
            text = _html.escape(text)
            text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
            text = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)
            return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', text)

        body = []
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                body.append(f"<h{block[1]}>{inline(block[2])}</h{block[1]}>")
            elif kind == "p":
                body.append(f"<p>{inline(block[1])}</p>")
            elif kind == "table":
                head = "".join(f"<th>{inline(h)}</th>" for h in block[1])
                rows = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in block[2])
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif kind == "img":
                body.append(f'<p><img src="{_html.escape(block[1])}" alt="{_html.escape(block[2])}"></p>')
        style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
                 "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
                 "text-align:left;font-size:90%}img{max-width:100%}code{background:#f4f4f4}")
        return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{_html.escape(title)}</title>"
                f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _case_sets(split) -> Optional[dict[str, str]]:
    """``{case id: set name}`` from a split file (its first fold) or a mapping; None without a split."""
    if isinstance(split, (str, Path)):
        return {case: name for name, cases in read_folds(split)[0].items() for case in cases}
    return dict(split) if split else None


def _write_text(path: Path, text: str) -> Path:
    from ..io.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the report

def build_report(run_dirs: Sequence[Union[str, Path]], out_dir, best_worst: int = 3,
                 split: Union[None, str, Path, Mapping[str, str]] = None, html: bool = False,
                 progress: bool = False, max_slices: int = 8) -> Path:
    """Write ``out_dir/report.md`` (and ``report.html`` with ``html=True``) with figures from benchmark runs.

    Contents: a table of the runs (one line per run and sweep setting: dataset,
    model, prompt, cases, median / mean Dice and NSD, median HD95 in mm), a
    table per label, the heatmap of median Dice per dataset x model, box plots
    of Dice / NSD / HD95 per label and model, sweep curves (only when a run
    sweeps a prompt setting), overlay montages of the ``best_worst`` best and
    worst (case, label) rows by Dice of every run (for a sweep run: of its
    setting with the highest median Dice), and the dataset overview (cases,
    label frequency, object sizes in ml from the reference labels, and the
    train/val/test shares when ``split`` is given).

    Args:
        run_dirs: benchmark run folders (``run.json`` + ``metrics.csv``).
        out_dir: report folder, created if needed (may be inside a run folder).
        best_worst: montages of the N best and N worst cases per run; 0 = none.
        split: a split file (any form :func:`promptseg.datasets.splits.read_folds` reads;
            of a file with several folds, the first is shown) or a ``{case: set}`` mapping.
        html: also write ``report.html``.
        progress: progress bars on stderr while reading labels and drawing montages.
        max_slices: slices per montage.

    Returns:
        The path of ``report.md``.

    Raises:
        PromptsegError: no run folder, a folder without ``run.json`` /
            ``metrics.csv`` or with malformed ones, a bad split file, a
            negative ``best_worst``.
    """
    from tqdm import tqdm

    from .. import __version__

    if not run_dirs:
        raise PromptsegError("no run folder given")
    if best_worst < 0:
        raise PromptsegError(f"best_worst must be >= 0, got {best_worst}")
    unique: dict[Path, Path] = {}
    for d in run_dirs:
        unique.setdefault(Path(d).resolve(), Path(d))
    runs = [load_run(d) for d in unique.values()]
    split_map = _case_sets(split)
    _assign_ids(runs)
    _assign_configs(runs)
    out_dir = Path(out_dir)
    figdir = out_dir / FIGURES
    rel = lambda p: Path(p).relative_to(out_dir).as_posix()  # noqa: E731
    all_rows = [r for run in runs for r in run.rows]

    page = _Page()
    page.h(1, "promptseg benchmark report")
    stamp = _dt.datetime.now().astimezone().replace(microsecond=0).isoformat()
    page.p(f"{len(runs)} run(s), {len(all_rows)} (case, label) rows; written {stamp} by promptseg {__version__}. "
           "Dice and NSD are 0-1 (NSD at the run's tolerance τ in mm), HD95 in mm (`inf` when a mask is empty); "
           "medians and means are over (case, label) rows.")

    # ---- runs table
    page.h(2, "Runs")
    table = []
    for run in runs:
        status = "finished" if run.info.get("finished") else "unfinished"
        if not run.rows:
            table.append([run.id, run.dataset, run.model, run.prompt_text(), "", "0", "0", "–", "–", "–", "–", "–",
                          "–", "–", status + ", no metric rows"])
            continue
        for setting in run.settings:
            rows = [r for r in run.rows if r.get("setting", "") == setting]
            tolerances = sorted({t for t in _values(rows, "tolerance_mm")})
            if not tolerances and isinstance(run.info.get("tolerance_mm"), (int, float)):
                tolerances = [float(run.info["tolerance_mm"])]
            n_inf = int(np.isinf(_values(rows, "hd95")).sum())
            table.append([
                run.id, run.dataset, rows[0]["config"], run.prompt_text(), setting or "–",
                str(len({str(r.get("case")) for r in rows})), str(len(rows)),
                _fmt(_median(rows, "dice")), _fmt(_mean(rows, "dice")),
                _fmt(_median(rows, "nsd")), _fmt(_mean(rows, "nsd")),
                ", ".join(f"{t:g}" for t in tolerances) or "–",
                _fmt(_median(rows, "hd95"), 2), str(n_inf), status,
            ])
    page.table(["run", "dataset", "model", "prompt", "setting", "cases", "rows", "Dice median", "Dice mean",
                "NSD median", "NSD mean", "NSD τ (mm)", "HD95 median (mm)", "HD95 inf", "status"], table)
    for run in runs:
        page.p(f"`{run.id}`: `{run.path}`" + (f", checkpoint `{run.info['checkpoint']}`" if run.info.get("checkpoint") else "")
               + (f", seed {run.info['seed']}" if "seed" in run.info else "")
               + (f", sweep of `{run.sweep['param']}` over {', '.join(map(str, run.sweep.get('values', [])))}"
                  if run.sweep else "") + ".")

    # ---- per label
    if all_rows:
        page.h(2, "Per label")
        table = []
        for run in runs:
            for setting in run.settings:
                rows = [r for r in run.rows if r.get("setting", "") == setting]
                for label in dict.fromkeys(fig.label_display(r) for r in rows):
                    mine = [r for r in rows if fig.label_display(r) == label]
                    dice = _values(mine, "dice")
                    iqr = (f"{np.percentile(dice, 25):.3f}–{np.percentile(dice, 75):.3f}" if dice.size else "–")
                    table.append([run.id, setting or "–", label, str(len(mine)), _fmt(_median(mine, "dice")), iqr,
                                  _fmt(_median(mine, "nsd")), _fmt(_median(mine, "hd95"), 2),
                                  _fmt(_median(mine, "ref_ml"), 2), _fmt(_median(mine, "pred_ml"), 2)])
        page.table(["run", "setting", "label", "n", "Dice median", "Dice IQR", "NSD median", "HD95 median (mm)",
                    "reference median (ml)", "predicted median (ml)"], table)

    # ---- heatmap
    scored = [r for r in all_rows if not math.isnan(metric_value(r.get("dice")))]
    heat = [r for r in heatmap_rows(runs) if not math.isnan(metric_value(r.get("dice")))]
    if heat:
        page.h(2, "Median Dice per dataset and model")
        path = fig.dice_heatmap(heat, figdir / "heatmap_dice.png", columns="model_column",
                                title="Median Dice per dataset (rows) and model (columns)")
        page.p("Each cell: the median Dice over all (case, label) rows and their number n. One column per model: "
               "a prompt sweep shows in the sweep curves, and in the heatmap only where no run of the same model "
               "without a sweep exists (then with its best setting).")
        page.img(rel(path), "median Dice per dataset and model")
        cases = {(r.get("dataset"), r.get("case")) for r in scored}
        if 1 < len(cases) <= MAX_CASE_ROWS:
            page.h(2, "Dice per case and model")
            path = fig.dice_heatmap(scored, figdir / "heatmap_dice_cases.png", index="case", columns="column",
                                    title="Dice per case (rows) and model (columns)")
            page.p("Each cell: the median Dice over the case's labels (n). Sweep settings are separate columns.")
            page.img(rel(path), "Dice per case and model")

    # ---- box plots
    box_figs = []
    for metric in ("dice", "nsd", "hd95"):
        if any(np.isfinite(metric_value(r.get(metric))) for r in all_rows):
            box_figs.append((metric, fig.metric_boxplots(all_rows, figdir / f"boxplots_{metric}.png", metric=metric,
                                                         group="column", legend_title="model")))
    if box_figs:
        page.h(2, "Distributions per label")
        page.p("Boxes: quartiles and median, whiskers 1.5 IQR; every (case, label) row is a dot.")
        for metric, path in box_figs:
            page.img(rel(path), f"{fig.METRIC_LABELS[metric]} per label")

    # ---- sweeps
    swept = [r for run in runs if run.sweep or any(r.get("sweep_param") for r in run.rows) for r in run.rows
             if r.get("sweep_param")]
    if swept:
        page.h(2, "Prompt sweeps")
        page.p("Median over (case, label) rows with the interquartile range as a band, for each swept "
               "prompt setting.")
        try:
            path = fig.sweep_curves(swept, figdir / "sweep_curves.png", line="config")
            page.img(rel(path), "sweep curves")
        except PromptsegError as error:
            page.p(f"No sweep curves: {error}.")

    # ---- montages
    if best_worst and scored:
        page.h(2, "Best and worst cases")
        page.p("Prediction filled in colour, reference as a white dotted contour; the slices with the most "
               "reference voxels, plus slices where the prediction lies outside the reference. "
               f"A run with fewer than {2 * best_worst} scored (case, label) rows has no best and worst: all its "
               "rows are shown, ranked by Dice.")
        jobs = []
        for run in runs:
            setting = _best_setting(run) if len(run.settings) > 1 else run.settings[0]
            rows = [r for r in run.rows if r.get("setting", "") == setting]
            scored_rows = [r for r in rows if not math.isnan(metric_value(r.get("dice")))]
            if len(scored_rows) >= 2 * best_worst:
                best, worst = select_best_worst(rows, best_worst)
                groups = (("best", best), ("worst", worst))
            else:  # too few to call any "best" or "worst"
                groups = (("ranked", select_best_worst(rows, len(scored_rows))[0]),)
            for kind, chosen in groups:
                for rank, row in enumerate(chosen, start=1):
                    jobs.append((run, setting, kind, rank, row))
        results: dict[tuple[str, str], list[tuple]] = {}
        with tqdm(total=len(jobs), desc="montages", unit="case", disable=not progress or len(jobs) < 4,
                  leave=False) as bar:
            for run, setting, kind, rank, row in jobs:
                case, label = str(row.get("case")), row.get("label")
                entry = _case_entry(run, case) or {}
                image, reference = _resolve(entry.get("image"), run), _resolve(entry.get("label"), run)
                prediction = _prediction_path(run, case, setting)
                name = f"{kind}{rank}_{_safe_name(case)}_label{_safe_name(str(label))}.png"
                target = figdir / "montages" / run.id / name
                missing = [what for what, p in (("image", image), ("reference", reference),
                                                ("prediction", prediction)) if p is None]
                link, note = None, ""
                place = f"rank {rank} by Dice" if kind == "ranked" else f"{kind} {rank}"
                title = (f"{run.id} {place}: {case}, {fig.label_display(row)}, "
                         f"Dice {_fmt(metric_value(row.get('dice')))}")
                if missing:
                    note = f"no montage: {', '.join(missing)} file not found"
                else:
                    try:
                        link = rel(fig.case_montage(image, reference, prediction, target, title=title,
                                                    label=label if isinstance(label, int) else None,
                                                    max_slices=max_slices))
                    except PromptsegError as error:
                        note = f"no montage: {error}"
                if note:
                    log.warning("%s %s: %s", run.id, case, note)
                results.setdefault((run.id, kind), []).append((rank, row, link, note))
                bar.update(1)
        for run in runs:
            setting = _best_setting(run) if len(run.settings) > 1 else run.settings[0]
            page.h(3, f"{run.id} ({run.dataset}, {run.rows[0]['config'] if run.rows else run.model})"
                   + (f", setting {setting}" if setting else ""))
            for kind in ("best", "worst", "ranked"):
                items = results.get((run.id, kind), [])
                if not items:
                    continue
                page.table(["rank by Dice" if kind == "ranked" else kind, "case", "label", "Dice", "NSD", "HD95 (mm)", "reference (ml)", "predicted (ml)",
                            "montage"],
                           [[str(rank), str(row.get("case")), fig.label_display(row), _fmt(metric_value(row.get("dice"))),
                             _fmt(metric_value(row.get("nsd"))), _fmt(metric_value(row.get("hd95")), 2),
                             _fmt(metric_value(row.get("ref_ml")), 2), _fmt(metric_value(row.get("pred_ml")), 2),
                             f"[png]({link})" if link else note] for rank, row, link, note in items])
                for rank, row, link, note in items:
                    if link:
                        page.img(link, f"{'rank' if kind == 'ranked' else kind} {rank}: {row.get('case')}")

    # ---- datasets
    page.h(2, "Datasets")
    datasets, notes = collect_datasets(runs, progress=progress)
    numbers = fig.overview_numbers(datasets, split_map)
    overview_rows = []
    for d in numbers.datasets:
        labels = ", ".join(f"{k} ({v})" for k, v in numbers.label_cases[d].items()) or "–"
        sizes = np.array([v for vs in numbers.sizes[d].values() for v in vs], dtype=float)
        size_text = (f"{np.median(sizes):.2f} ({sizes.min():.2f}–{sizes.max():.2f})" if sizes.size else "–")
        shares = ", ".join(f"{k} {v}" for k, v in numbers.splits.get(d, {}).items()) or "–"
        overview_rows.append([d, str(numbers.cases[d]), labels, size_text, shares])
    page.table(["dataset", "cases", "labels (cases holding them)", "object volume median (min–max), ml",
                "split"], overview_rows)
    for note in notes:
        page.p(note)
    page.p("An object is all voxels of one label in one case. "
           + ("The split comes from " + (f"`{split}`" if isinstance(split, (str, Path)) else "the given mapping")
              + "; cases it does not list are `unassigned`." if split_map
              else "No train/val/test split given (`--split split.json`)."))
    if datasets:
        path = fig.dataset_overview(datasets, figdir / "dataset_overview.png", split=split_map)
        page.img(rel(path), "dataset overview")

    report = _write_text(out_dir / "report.md", page.markdown())
    if html:
        _write_text(out_dir / "report.html", page.html("promptseg benchmark report"))
    return report

