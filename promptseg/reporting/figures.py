"""Figures for evaluation reports: PNGs drawn with matplotlib (Agg), written atomically.

Every figure function takes plain data and an output path and returns the
written :class:`~pathlib.Path`. The numbers behind each figure come from a
separate pure function, so they can be checked (and reused in tables):

============================  ===============================  =====================================
figure                        numbers                          what
============================  ===============================  =====================================
:func:`dice_heatmap`          :func:`median_table`             median Dice per dataset (rows) x model (columns)
:func:`metric_boxplots`       :func:`boxplot_groups`           distribution of a metric per label (and per model)
:func:`sweep_curves`          :func:`sweep_series`             median + IQR of Dice / NSD vs a swept prompt setting
:func:`case_montage`          :func:`montage_slices_by_reference`  slices with the most reference voxels, prediction filled
:func:`dataset_overview`      :func:`overview_numbers`         cases, labels, object sizes, train/val/test shares
============================  ===============================  =====================================

Metric rows are mappings with (at least) the keys of a benchmark ``metrics.csv``
row that the figure needs: ``dataset``, ``model``, ``label``, ``label_name``,
``dice`` (0-1), ``nsd`` (0-1), ``hd95`` (mm, may be ``inf``), ``sweep_param``,
``sweep_value``. Values may be numbers or the CSV strings; empty cells and
``nan`` are missing values and are left out, ``inf`` is kept where a median can
use it and left out of plots that cannot draw it (counted in the figure).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np

from ..datasets.metrics_table import metric_value
from ..datasets.splits import case_key
from ..errors import PromptsegError

#: display names and units of the metrics the figures know
METRIC_LABELS = {
    "dice": "Dice",
    "nsd": "NSD",
    "hd95": "HD95 (mm)",
    "pred_ml": "predicted volume (ml)",
    "ref_ml": "reference volume (ml)",
    "seconds": "time (s)",
}
#: the order of split names in the overview (others follow alphabetically)
SPLIT_ORDER = ("train", "val", "test")
#: 10 distinct colours (matplotlib's tab10), cycled
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


# --------------------------------------------------------------------------- helpers

def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically, close it, return the path."""
    from ..io.atomic import atomic_path

    plt = _pyplot()
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png", bbox_inches="tight", pad_inches=0.15)
    finally:
        plt.close(fig)
    return path


def _text(row: Mapping, key: str) -> str:
    value = row.get(key)
    return "" if value is None else str(value)


def label_display(row: Mapping) -> str:
    """``label_name`` when given (and not just the number), else ``"label N"``."""
    name = _text(row, "label_name").strip()
    label = _text(row, "label").strip()
    return f"label {label or '?'}" if not name or name == label else name


def _values(rows: Iterable[Mapping], metric: str, finite_only: bool = False) -> np.ndarray:
    out = np.array([metric_value(r.get(metric)) for r in rows], dtype=float)
    out = out[~np.isnan(out)]
    return out[np.isfinite(out)] if finite_only else out


def _median(values: np.ndarray) -> float:
    """Median that copes with ``inf`` (numpy's interpolation gives nan for inf + inf - ...)."""
    if values.size == 0:
        return math.nan
    s = np.sort(values)
    n = s.size
    if n % 2:
        return float(s[n // 2])
    lo, hi = s[n // 2 - 1], s[n // 2]
    if lo == hi:
        return float(lo)
    return float((lo + hi) / 2.0)


def _order(keys: Iterable[str]) -> list[str]:
    """Distinct values in order of first appearance."""
    return list(OrderedDict.fromkeys(keys))


def _horizontal() -> dict:
    """``boxplot`` keyword for horizontal boxes (``orientation`` from matplotlib 3.10, ``vert`` before)."""
    import matplotlib

    major, minor = (int(v) for v in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}


def _colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _need(rows: Sequence[Mapping], metric: str, what: str) -> None:
    if not any(not math.isnan(metric_value(r.get(metric))) for r in rows):
        raise PromptsegError(f"{what}: no {METRIC_LABELS.get(metric, metric)} values to plot")


# --------------------------------------------------------------------------- heatmap

@dataclass(frozen=True)
class MedianTable:
    """Medians of one metric in a grid.

    ``values[i, j]`` is the median over the rows with ``index == rows[i]`` and
    ``columns == columns[j]`` (nan when there are none); ``counts[i, j]`` the
    number of values behind it.
    """

    rows: list[str]
    columns: list[str]
    values: np.ndarray
    counts: np.ndarray

    def get(self, row: str, column: str) -> float:
        return float(self.values[self.rows.index(row), self.columns.index(column)])


def median_table(rows: Sequence[Mapping], metric: str = "dice", index: str = "dataset",
                 columns: str = "model") -> MedianTable:
    """Median of ``metric`` per (``index``, ``columns``) value pair, in order of first appearance."""
    row_keys = _order(_text(r, index) for r in rows)
    col_keys = _order(_text(r, columns) for r in rows)
    values = np.full((len(row_keys), len(col_keys)), np.nan)
    counts = np.zeros((len(row_keys), len(col_keys)), dtype=int)
    cells: dict[tuple[str, str], list[Mapping]] = {}
    for r in rows:
        cells.setdefault((_text(r, index), _text(r, columns)), []).append(r)
    for (rk, ck), members in cells.items():
        v = _values(members, metric)
        i, j = row_keys.index(rk), col_keys.index(ck)
        counts[i, j] = v.size
        values[i, j] = _median(v)
    return MedianTable(row_keys, col_keys, values, counts)


def dice_heatmap(rows: Sequence[Mapping], path, metric: str = "dice", index: str = "dataset",
                 columns: str = "model", title: Optional[str] = None) -> Path:
    """Heatmap of the median ``metric`` (Dice by default, 0-1) per dataset (rows) x model (columns).

    Each cell shows the median (3 decimals) and the number of (case, label)
    values behind it; empty cells are grey. The colour scale is fixed to 0-1 so
    heatmaps of different reports compare. The numbers are :func:`median_table`
    with the same arguments.

    Args:
        rows: metric rows (see the module docstring).
        path: output PNG.
        metric: the column to summarise (a 0-1 metric: ``dice`` or ``nsd``).
        index / columns: the row keys giving the heatmap's rows and columns. Rows
            of several sweep settings are pooled unless ``columns`` tells them
            apart (the report uses a key holding model + setting).

    Raises:
        PromptsegError: no value of ``metric`` in ``rows``.
    """
    _need(rows, metric, "heatmap")
    plt = _pyplot()
    table = median_table(rows, metric, index, columns)
    n_rows, n_cols = table.values.shape
    width = min(2.5 + 1.3 * n_cols + max(len(c) for c in table.rows) * 0.07, 30)
    fig, ax = plt.subplots(figsize=(max(width, 4.5), 1.5 + 0.6 * n_rows))
    cmap = plt.get_cmap("viridis").with_extremes(bad="#dddddd")
    image = ax.imshow(np.ma.masked_invalid(table.values), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(n_cols), table.columns, rotation=30 if n_cols > 3 else 0,
                  ha="right" if n_cols > 3 else "center")
    ax.set_yticks(range(n_rows), table.rows)
    for i in range(n_rows):
        for j in range(n_cols):
            v = table.values[i, j]
            if np.isnan(v):
                ax.text(j, i, "–", ha="center", va="center", color="black")
                continue
            ax.text(j, i, f"{v:.3f}\nn={table.counts[i, j]}", ha="center", va="center", fontsize=8,
                    color="black" if v > 0.6 else "white")
    fig.colorbar(image, ax=ax, label=f"median {METRIC_LABELS.get(metric, metric)}")
    ax.set_title(title or f"Median {METRIC_LABELS.get(metric, metric)} per {index} and {columns}", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------- box plots

def boxplot_groups(rows: Sequence[Mapping], metric: str = "dice", group: str = "model",
                   finite_only: bool = True) -> "OrderedDict[str, OrderedDict[str, np.ndarray]]":
    """The values :func:`metric_boxplots` draws: ``{label: {group value: values}}``.

    Labels are ``label_name`` (``"dataset: label_name"`` when the rows hold
    several datasets), in order of first appearance; missing values (and, with
    ``finite_only``, infinite ones) are left out.
    """
    several = len({_text(r, "dataset") for r in rows}) > 1
    out: "OrderedDict[str, OrderedDict[str, list]]" = OrderedDict()
    for r in rows:
        key = f"{_text(r, 'dataset')}: {label_display(r)}" if several else label_display(r)
        out.setdefault(key, OrderedDict()).setdefault(_text(r, group), []).append(r)
    return OrderedDict(
        (k, OrderedDict((g, _values(members, metric, finite_only)) for g, members in groups.items()))
        for k, groups in out.items()
    )


def metric_boxplots(rows: Sequence[Mapping], path, metric: str = "dice", group: str = "model",
                    title: Optional[str] = None, legend_title: Optional[str] = None) -> Path:
    """Box plots of ``metric`` per label, one box per ``group`` value (model / run) within each label.

    Boxes show the median, quartiles and 1.5 IQR whiskers, with every value drawn
    as a dot on top (benchmarks are often small). Infinite values (HD95 when a
    mask is empty) cannot be drawn; their number is given in the title. Dice and
    NSD get a fixed 0-1 axis. Numbers: :func:`boxplot_groups`.

    Raises:
        PromptsegError: no value of ``metric`` in ``rows``.
    """
    _need(rows, metric, "box plots")
    plt = _pyplot()
    groups = boxplot_groups(rows, metric, group)
    n_inf = int(np.isinf(_values(rows, metric)).sum())
    hues = _order(g for per_label in groups.values() for g in per_label)
    n_labels = len(groups)
    most = max(sum(1 for v in per_label.values() if v.size) for per_label in groups.values())
    width = 0.8 / max(most, 1)
    fig, ax = plt.subplots(figsize=(min(3.0 + n_labels * (0.6 + 0.45 * most), 30), 4.5))
    rng = np.random.default_rng(0)
    labelled: set[str] = set()
    for i, per_label in enumerate(groups.values()):
        present = [(hue, v) for hue, v in per_label.items() if v.size]
        for k, (hue, values) in enumerate(present):
            x = i + (k - (len(present) - 1) / 2) * width
            j = hues.index(hue)
            parts = ax.boxplot([values], positions=[x], widths=width * 0.8, patch_artist=True,
                               showfliers=False, manage_ticks=False)
            parts["boxes"][0].set(facecolor=_colour(j), alpha=0.35, edgecolor=_colour(j))
            parts["medians"][0].set(color="black")
            jitter = rng.uniform(-width * 0.25, width * 0.25, size=values.size)
            ax.scatter(x + jitter, values, s=9, color=_colour(j), alpha=0.8, zorder=3,
                       label=None if hue in labelled else hue)
            labelled.add(hue)
    ax.set_xticks(range(n_labels), list(groups), rotation=20 if n_labels > 3 else 0,
                  ha="right" if n_labels > 3 else "center")
    ax.set_xlim(-0.6, n_labels - 0.4)
    if metric in ("dice", "nsd"):
        ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.grid(axis="y", alpha=0.3)
    if len(hues) > 1:
        ax.legend(title=legend_title or group, fontsize=8, title_fontsize=8, loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), frameon=False)
    text = title or f"{METRIC_LABELS.get(metric, metric)} per label"
    if n_inf:
        text += f" ({n_inf} infinite value{'s' if n_inf > 1 else ''} not shown)"
    ax.set_title(text, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------- sweeps

@dataclass(frozen=True)
class SweepSeries:
    """One line of a sweep plot: a metric's median and quartiles at each swept value.

    ``x`` holds the swept values as text (``"5"``, ``"avg"``); ``numeric`` says
    whether they all parse as numbers (then they are sorted numerically and drawn
    on a numeric axis, else kept in order of first appearance, categorical).
    ``median``, ``q1``, ``q3`` (25th / 75th percentile, linear interpolation) and
    ``n`` are per value of ``x``.
    """

    param: str
    name: str
    metric: str
    x: list[str]
    numeric: bool
    median: np.ndarray
    q1: np.ndarray
    q3: np.ndarray
    n: np.ndarray

    def at(self, value) -> float:
        """Median at swept value ``value`` (compared as text, or numerically when numeric)."""
        if self.numeric:
            xs = [float(v) for v in self.x]
            return float(self.median[xs.index(float(value))])
        return float(self.median[self.x.index(str(value))])


def _sweep_value_text(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def sweep_series(rows: Sequence[Mapping], metric: str = "dice", line: str = "model") -> list[SweepSeries]:
    """The lines :func:`sweep_curves` draws for ``metric``.

    Only rows with a ``sweep_param`` take part. One series per (sweep parameter,
    dataset, ``line`` value, and label when that dataset has several labels);
    its name is ``"dataset / line value[ / label]"``.
    """
    swept = [r for r in rows if _text(r, "sweep_param").strip()]
    labels_per_dataset: dict[str, set] = {}
    for r in swept:
        labels_per_dataset.setdefault(_text(r, "dataset"), set()).add(label_display(r))
    groups: "OrderedDict[tuple[str, str], list[Mapping]]" = OrderedDict()
    for r in swept:
        name = f"{_text(r, 'dataset')} / {_text(r, line)}"
        if len(labels_per_dataset[_text(r, 'dataset')]) > 1:
            name += f" / {label_display(r)}"
        groups.setdefault((_text(r, "sweep_param").strip(), name), []).append(r)
    out = []
    for (param, name), members in groups.items():
        by_x: "OrderedDict[str, list[Mapping]]" = OrderedDict()
        for r in members:
            by_x.setdefault(_sweep_value_text(r.get("sweep_value")), []).append(r)
        xs = list(by_x)
        numeric = all(not math.isnan(metric_value(x)) for x in xs)
        if numeric:
            xs.sort(key=float)
        med, q1, q3, n = [], [], [], []
        for x in xs:
            v = _values(by_x[x], metric)
            n.append(v.size)
            med.append(_median(v))
            finite = v[np.isfinite(v)]
            if finite.size == v.size and v.size:
                a, b = np.percentile(v, [25, 75])
            else:
                a = b = math.nan
            q1.append(float(a))
            q3.append(float(b))
        if sum(n):
            out.append(SweepSeries(param, name, metric, xs, numeric, np.array(med), np.array(q1),
                                   np.array(q3), np.array(n)))
    return out


def sweep_curves(rows: Sequence[Mapping], path, metrics: Sequence[str] = ("dice", "nsd"),
                 line: str = "model", title: Optional[str] = None) -> Path:
    """Median (line) and interquartile range (band) of each metric vs the swept prompt setting.

    One panel per (sweep parameter, metric): panel rows are the parameters
    (``points``, ``jitter_px`` in px, ``input_size`` in px, ``aggregate``),
    columns the metrics that have values (Dice, NSD). One line per
    dataset / model (/ label). Numeric settings are drawn on a numeric axis at
    their values; text settings (``avg``, ``max``) as categories. Numbers:
    :func:`sweep_series`.

    Raises:
        PromptsegError: no row with a ``sweep_param`` and a value of the metrics.
    """
    per_metric = {m: sweep_series(rows, m, line) for m in metrics}
    per_metric = {m: s for m, s in per_metric.items() if s}
    if not per_metric:
        raise PromptsegError("sweep curves: no swept rows (sweep_param) with metric values")
    params = _order(s.param for series in per_metric.values() for s in series)
    names = _order(s.name for series in per_metric.values() for s in series)
    plt = _pyplot()
    fig, axes = plt.subplots(len(params), len(per_metric), figsize=(5.2 * len(per_metric), 3.6 * len(params)),
                             squeeze=False)
    for i, param in enumerate(params):
        for j, (metric, series) in enumerate(per_metric.items()):
            ax = axes[i, j]
            mine = [s for s in series if s.param == param]
            categories = _order(x for s in mine if not s.numeric for x in s.x)
            for s in mine:
                c = _colour(names.index(s.name))
                x = np.array([float(v) for v in s.x]) if s.numeric else np.array([categories.index(v) for v in s.x])
                ax.plot(x, s.median, marker="o", color=c, label=s.name)
                ax.fill_between(x, s.q1, s.q3, color=c, alpha=0.18, linewidth=0)
            if categories:
                ax.set_xticks(range(len(categories)), categories)
                ax.set_xlim(-0.5, len(categories) - 0.5)
            else:
                ticks = sorted({float(v) for s in mine for v in s.x})
                if len(ticks) <= 12:
                    ax.set_xticks(ticks, [_sweep_value_text(t) for t in ticks])
            unit = " (px)" if param in ("jitter_px", "input_size") else ""
            ax.set_xlabel(param + unit)
            ax.set_ylabel(f"median {METRIC_LABELS.get(metric, metric)}")
            if metric in ("dice", "nsd"):
                ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            ax.set_title(f"{METRIC_LABELS.get(metric, metric)} vs {param} (band: IQR)", fontsize=9)
            if i == 0 and j == len(per_metric) - 1:
                ax.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------- montages

def montage_slices_by_reference(reference: np.ndarray, prediction: Optional[np.ndarray] = None,
                                max_slices: int = 8) -> list[int]:
    """Up to ``max_slices`` slice indices (ascending): the slices with the most reference voxels.

    Ties go to the lower slice. When the prediction also covers slices without
    any reference voxel (a false positive, e.g. propagation running past the
    object), those slices with the most predicted voxels are shown too: they
    fill the slots the reference leaves free, and take at least 2 slots (fewer
    if there are fewer such slices) when the reference would fill them all.
    With an empty reference only predicted slices are shown; with both empty,
    the middle slice.
    """
    def ranked(counts: np.ndarray) -> list[int]:
        return sorted((z for z in range(counts.size) if counts[z]), key=lambda z: (-counts[z], z))

    max_slices = max(int(max_slices), 1)
    ref_counts = reference.reshape(reference.shape[0], -1).sum(axis=1, dtype=np.int64)
    ref_z = ranked(ref_counts)
    pred_z: list[int] = []
    if prediction is not None:
        pred_counts = prediction.reshape(prediction.shape[0], -1).sum(axis=1, dtype=np.int64)
        pred_counts[ref_counts > 0] = 0
        pred_z = ranked(pred_counts)
    if not ref_z and not pred_z:
        return [reference.shape[0] // 2]
    n_pred = min(len(pred_z), max(max_slices - len(ref_z), 2 if ref_z else max_slices))
    n_pred = min(n_pred, max_slices - 1) if ref_z else n_pred
    return sorted(ref_z[: max_slices - n_pred] + pred_z[:n_pred])


class _CroppedSlices:
    """``slices[z]`` cropped to fixed rows / columns, without normalising unused slices."""

    def __init__(self, slices, rows: slice, cols: slice) -> None:
        self.slices, self.rows, self.cols = slices, rows, cols

    def __getitem__(self, z):
        return self.slices[z][self.rows, self.cols]


def case_montage(image_path, label_path, prediction_path, path, title: Optional[str] = None,
                 label: Optional[int] = None, max_slices: int = 8, modality: Optional[str] = None,
                 window=None) -> Path:
    """Montage of one case: the slices with the most reference voxels, prediction filled, reference outlined.

    Slices: :func:`montage_slices_by_reference` (predicted slices outside the
    reference are included, so false positives show).

    The image is normalised as the models see it (:class:`promptseg.intensity.NormalizedSlices`,
    CT soft-tissue window / MR percentiles unless ``modality`` / ``window`` say
    otherwise) and drawn with :func:`promptseg.reporting.overlay.save_overlay`: the
    prediction as a coloured fill with contour, the reference as a white dotted
    contour, zoomed on both (a prediction far from the reference stays in view).

    Args:
        image_path, label_path, prediction_path: the image, its reference label
            map and the predicted label map (both on the image grid).
        path: output PNG.
        title: figure title.
        label: show only this label value (reference and prediction); None = all
            labels (reference = any label > 0).
        max_slices: number of slices shown (default 8).

    Raises:
        PromptsegError: unreadable files or label maps not on the image grid.
    """
    from ..intensity import NormalizedSlices
    from ..io import load_labels, load_volume
    from .overlay import crop_window, save_overlay

    volume = load_volume(image_path)
    reference = load_labels(label_path, reference=volume).array
    prediction = load_labels(prediction_path, reference=volume).array
    if label is not None:
        reference = reference == label
        prediction = np.where(prediction == label, label, 0).astype(prediction.dtype)
    else:
        reference = reference > 0
    zs = montage_slices_by_reference(reference, prediction > 0, max_slices)
    union = reference | (prediction > 0)
    rows, cols = crop_window(union, ())
    image = _CroppedSlices(NormalizedSlices.of(volume, modality, window), rows, cols)
    return save_overlay(path, image, prediction[:, rows, cols], slices=zs, reference=reference[:, rows, cols],
                        crop=False, title=title, direction=volume.direction)


# --------------------------------------------------------------------------- dataset overview

@dataclass
class CaseInfo:
    """One labelled case: ``objects`` maps label name -> volume of that label in ml (> 0 only)."""

    case: str
    objects: dict[str, float] = field(default_factory=dict)


@dataclass
class DatasetInfo:
    """A dataset for :func:`dataset_overview`: its name and labelled cases."""

    name: str
    cases: list[CaseInfo] = field(default_factory=list)


def _split_of(split: Mapping[str, str], dataset: str, case: str) -> Optional[str]:
    key = case_key(case)
    return split.get(f"{dataset}/{key}", split.get(key))


@dataclass(frozen=True)
class OverviewNumbers:
    """What :func:`dataset_overview` draws.

    ``cases[d]``: number of cases of dataset ``d``; ``label_cases[d][name]``: cases
    holding that label; ``sizes[d][name]``: object volumes in ml; ``splits[d][set]``:
    cases per split set (``"unassigned"`` for cases the split does not list),
    empty when no split is given.
    """

    datasets: list[str]
    cases: dict[str, int]
    label_cases: dict[str, dict[str, int]]
    sizes: dict[str, dict[str, list[float]]]
    splits: dict[str, dict[str, int]]


def overview_numbers(datasets_info: Sequence[DatasetInfo], split: Optional[Mapping[str, str]] = None) -> OverviewNumbers:
    """Counts behind :func:`dataset_overview` (split keys: ``case`` or ``dataset/case``)."""
    names = [d.name for d in datasets_info]
    cases, label_cases, sizes, splits = {}, {}, {}, {}
    for d in datasets_info:
        cases[d.name] = len(d.cases)
        lc: dict[str, int] = {}
        sz: dict[str, list[float]] = {}
        for c in d.cases:
            for label, ml in c.objects.items():
                lc[label] = lc.get(label, 0) + 1
                sz.setdefault(label, []).append(float(ml))
        label_cases[d.name], sizes[d.name] = lc, sz
        if split:
            counts: dict[str, int] = {}
            for c in d.cases:
                s = _split_of(split, d.name, c.case) or "unassigned"
                counts[s] = counts.get(s, 0) + 1
            order = [s for s in SPLIT_ORDER if s in counts] + sorted(
                s for s in counts if s not in SPLIT_ORDER and s != "unassigned")
            if "unassigned" in counts:
                order.append("unassigned")
            splits[d.name] = {s: counts[s] for s in order}
    return OverviewNumbers(names, cases, label_cases, sizes, splits)


def _plain_log_ticks(axis, most: int = 6) -> None:
    """Log-axis labels that never overlap: at most ``most`` major ticks (decades, or 1-2-5 steps inside a
    decade), written as plain numbers (0.1, 1, 10), and no labels on minor ticks."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    low, high = sorted(axis.get_view_interval())
    decades = np.log10(max(high, 1e-12)) - np.log10(max(low, 1e-12))
    subs = (1.0,) if decades >= 2 else (1.0, 2.0, 5.0)
    axis.set_major_locator(LogLocator(base=10, subs=subs, numticks=most))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def dataset_overview(datasets_info: Sequence[DatasetInfo], path, split: Optional[Mapping[str, str]] = None,
                     title: Optional[str] = None) -> Path:
    """Overview of the datasets: cases per dataset, label frequency, object sizes, split shares.

    Panels: (1) number of cases per dataset; (2) per dataset and label, the
    number of cases holding that label; (3) object volume per dataset and label
    in ml on a log axis (one dot per case, box for the quartiles) -- an "object"
    is all voxels of one label in one case; (4) when ``split`` is given, the share
    of each dataset's cases in train / val / test (and cases the split does not
    list). Numbers: :func:`overview_numbers`.

    Args:
        datasets_info: the datasets.
        path: output PNG.
        split: optional ``{case id: set name}`` (see :mod:`promptseg.datasets.splits`); keys may be
            ``"dataset/case"`` to tell datasets apart.

    Raises:
        PromptsegError: no dataset given.
    """
    if not datasets_info:
        raise PromptsegError("dataset overview: no dataset")
    from matplotlib.ticker import MaxNLocator

    numbers = overview_numbers(datasets_info, split)
    plt = _pyplot()
    n_panels = 4 if numbers.splits else 3
    fig, axes = plt.subplots(1, n_panels, figsize=(4.4 * n_panels, 1.8 + 0.45 * max(4, len(numbers.datasets) * 2)))
    names = numbers.datasets
    y = np.arange(len(names))

    ax = axes[0]
    ax.barh(y, [numbers.cases[n] for n in names], color=[_colour(i) for i in range(len(names))])
    for yi, n in zip(y, names):
        ax.text(numbers.cases[n], yi, f" {numbers.cases[n]}", va="center", fontsize=8)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("cases")
    ax.set_title("Cases per dataset", fontsize=10)
    ax.margins(x=0.15)

    pairs = [(d, label) for d in names for label in numbers.label_cases[d]]
    tick_names = [f"{d}: {label}" if len(names) > 1 else label for d, label in pairs]
    colours = [_colour(names.index(d)) for d, _ in pairs]
    ax = axes[1]
    yy = np.arange(len(pairs))
    ax.barh(yy, [numbers.label_cases[d][label] for d, label in pairs], color=colours)
    ax.set_yticks(yy, tick_names)
    ax.invert_yaxis()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("cases holding the label")
    ax.set_title("Label frequency", fontsize=10)

    ax = axes[2]
    rng = np.random.default_rng(0)
    data = [np.asarray(numbers.sizes[d][label], dtype=float) for d, label in pairs]
    positive = [v[v > 0] for v in data]
    if any(v.size for v in positive):
        spots = [i for i, v in enumerate(positive) if v.size]
        parts = ax.boxplot([positive[i] for i in spots], positions=[yy[i] for i in spots], widths=0.6,
                           **_horizontal(), showfliers=False, patch_artist=True, manage_ticks=False)
        for box, i in zip(parts["boxes"], spots):
            box.set(facecolor=colours[i], alpha=0.3, edgecolor=colours[i])
        for median in parts["medians"]:
            median.set(color="black")
        for i in spots:
            ax.scatter(positive[i], yy[i] + rng.uniform(-0.15, 0.15, positive[i].size), s=9,
                       color=colours[i], zorder=3)
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis)
    ax.set_yticks(yy, tick_names)
    if pairs:
        ax.set_ylim(len(pairs) - 0.5, -0.5)
    ax.set_xlabel("object volume (ml, log scale)")
    ax.set_title("Object sizes", fontsize=10)

    if numbers.splits:
        ax = axes[3]
        found = {s for d in names for s in numbers.splits.get(d, {})}
        sets = [s for s in SPLIT_ORDER if s in found] + sorted(found - set(SPLIT_ORDER) - {"unassigned"})
        sets += ["unassigned"] if "unassigned" in found else []
        split_colours = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c", "unassigned": "#bbbbbb"}
        left = np.zeros(len(names))
        for k, s in enumerate(sets):
            shares = np.array([numbers.splits[d].get(s, 0) / max(numbers.cases[d], 1) for d in names])
            ax.barh(y, shares, left=left, label=s, color=split_colours.get(s, _colour(k + 4)))
            for yi, share, x0 in zip(y, shares, left):
                if share >= 0.08:
                    ax.text(x0 + share / 2, yi, f"{share:.0%}", ha="center", va="center", fontsize=8)
            left += shares
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of cases")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=min(len(sets), 4),
                  frameon=False)
        ax.set_title("Train / val / test", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)
