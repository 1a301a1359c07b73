"""Prediction files vs reference files -> per-case, per-label metric rows, CSV and JSON summary.

Files and folders
-----------------
``pred`` and ``gt`` are either two label files (one case, named after the reference
file) or two folders of label files, matched by **case name** = the file name without
its image suffix (``.nii.gz``, ``.nii``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``,
``.npz``, ``.png``, ...). Prediction and reference may use different formats
(``case1.nii.gz`` vs ``case1.npz``). Folders are not searched recursively; hidden files
and files without an image suffix (``.raw`` companions, CSV, JSON) are ignored.

``gt`` may also be a folder of DICOM case folders (a CT/MR series + an RTSTRUCT each,
see :mod:`promptseg.datasets.layouts`): the reference of case ``x`` is its RTSTRUCT
rasterised onto its series, compared with the prediction ``x.nii.gz`` (or any label
format) written on that series' grid.

A case found in only one folder is an error that lists them, unless
``allow_missing=True``: then a reference without a prediction is scored as an **empty
prediction** (Dice 0, NSD 0, HD95 inf -- a missed case must not vanish from the
averages) and a prediction without a reference is skipped; :class:`Matching` lists both.

Geometry
--------
Nothing is ever resampled. The two label maps must have the same shape, and spacing,
origin and direction must agree as far as *both* files store them (a PNG stores none, a
MedSAM ``.npz`` only the spacing); otherwise :class:`~promptseg.errors.GeometryError`
names both files and what differs. The spacing used for the metrics is the reference's,
or the prediction's when only the prediction stores one (e.g. a PNG reference with a
NIfTI prediction); a file pair that stores no spacing at all is measured with 1 mm
pixels. One-slice label maps (PNG, 2D ``.npz``, any ``(1, y, x)`` volume) are evaluated
as 2D images: boundaries are contours and NSD is a share of contour length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from ..datasets.metrics_table import metrics_text
from ..errors import GeometryError, ImageReadError
from ..io import SUPPORTED_IMAGE_SUFFIXES, atomic_paths, load_labels, load_volume
from ..io.common import format_suffix
from ..io.jsonfile import json_text
from ..io.readers import grid_differences
from ..volume import Volume
from .metrics import EvaluationError, case_metrics, check_labels, check_tolerance, surface_backend

_GEOMETRY = ("spacing", "origin", "direction")


def case_name(path) -> str:
    """The case name of a label file: its name without the image suffix (``"a.nii.gz"`` -> ``"a"``)."""
    path = Path(path)
    suffix = format_suffix(path)
    return path.name[: len(path.name) - len(suffix)] if suffix else path.name


def _is_label_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and format_suffix(path) in SUPPORTED_IMAGE_SUFFIXES


def _cases_in(folder: Path, role: str) -> dict[str, Path]:
    files: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if _is_label_file(path):
            files.setdefault(case_name(path), []).append(path)
    if not files:
        raise EvaluationError(
            f"the {role} folder {folder} holds no label files (looked for {', '.join(SUPPORTED_IMAGE_SUFFIXES)})"
        )
    clashes = {name: paths for name, paths in files.items() if len(paths) > 1}
    if clashes:
        shown = "; ".join(", ".join(p.name for p in paths) for paths in list(clashes.values())[:5])
        raise EvaluationError(
            f"the {role} folder {folder} holds several files for the same case name ({len(clashes)} case(s)): {shown}"
        )
    return {name: paths[0] for name, paths in files.items()}


def _dicom_cases(gt: Path) -> Optional[dict]:
    """``{case id: Case}`` when ``gt`` is a folder of DICOM case folders (series + RTSTRUCT), else None."""
    if not gt.is_dir() or any(_is_label_file(p) for p in gt.iterdir()):
        return None
    from ..datasets.layouts import DatasetError, load_dataset

    try:
        dataset = load_dataset(gt)
    except DatasetError:
        return None
    return {case.case_id: case for case in dataset.cases} if dataset.layout == "dicom" else None


def _listing(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


@dataclass
class Matching:
    """Prediction/reference file pairs of an evaluation.

    Attributes:
        pairs: ``(case, prediction path or None, reference path)``, sorted by case name;
            ``None`` = no prediction (only with ``allow_missing``; scored as empty).
        pred_only: cases with a prediction but no reference (skipped).
        gt_only: cases with a reference but no prediction.
    """

    pairs: list[tuple[str, Optional[Path], Path]]
    pred_only: list[str] = field(default_factory=list)
    gt_only: list[str] = field(default_factory=list)


def match_cases(pred, gt, allow_missing: bool = False) -> Matching:
    """Pair prediction and reference files by case name.

    Args:
        pred: a prediction label file, or a folder of them.
        gt: the reference label file, or a folder of them (same kind as ``pred``).
        allow_missing: see the module docstring; default: unmatched cases are an error.

    Raises:
        ImageReadError: a path does not exist.
        EvaluationError: a file and a folder, an empty folder, two files of one case in a
            folder, or (without ``allow_missing``) cases present in only one folder.
    """
    pred, gt = Path(pred), Path(gt)
    for role, path in (("prediction", pred), ("reference", gt)):
        if not path.exists():
            raise ImageReadError(f"no such file or folder: {path} ({role})")
    if pred.is_dir() != gt.is_dir():
        pred_kind, gt_kind = ("a folder" if p.is_dir() else "a file" for p in (pred, gt))
        raise EvaluationError(f"--pred is {pred_kind} and --gt is {gt_kind}: give two label files or two folders")
    if not pred.is_dir():
        return Matching([(case_name(gt), pred, gt)])
    preds, gts = _cases_in(pred, "prediction"), _dicom_cases(gt) or _cases_in(gt, "reference")
    pred_only = sorted(set(preds) - set(gts))
    gt_only = sorted(set(gts) - set(preds))
    if (pred_only or gt_only) and not allow_missing:
        parts = []
        if gt_only:
            parts.append(f"{len(gt_only)} reference case(s) without a prediction in {pred}: {_listing(gt_only)}")
        if pred_only:
            parts.append(f"{len(pred_only)} prediction(s) without a reference in {gt}: {_listing(pred_only)}")
        raise EvaluationError(
            "; ".join(parts) + " (files are matched by name without the suffix; --allow-missing scores "
            "missing predictions as empty and skips predictions without a reference)"
        )
    pairs = [(name, preds.get(name), gts[name]) for name in sorted(gts)]
    return Matching(pairs, pred_only, gt_only)


def _stored(volume: Volume) -> tuple[str, ...]:
    return tuple(volume.metadata.get("stored_geometry", _GEOMETRY))


def load_pair(pred, gt) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Read a prediction and a reference label map and check that they share a grid.

    Args:
        pred: prediction label file, or ``None`` for an empty prediction.
        gt: reference label file, or a DICOM :class:`~promptseg.datasets.layouts.Case`
            (its RTSTRUCT on its series).

    Returns:
        ``(pred_array, gt_array, spacing)`` -- integer arrays ``(z, y, x)`` with spacing
        ``(z, y, x)`` in mm, or ``(y, x)`` arrays with spacing ``(y, x)`` for one-slice maps.

    Raises:
        ImageReadError: unreadable file or not a label map.
        GeometryError: shape, or spacing/origin/direction stored by both files, differ.
    """
    if hasattr(gt, "reference_labels"):  # a DICOM case: series + RTSTRUCT
        series = load_volume(gt.image)
        reference = series.with_array(gt.reference_labels(series))
        gt = gt.label
    else:
        reference = load_labels(gt)
    if pred is None:
        prediction = reference.with_array(np.zeros_like(reference.array))
        prediction.metadata["stored_geometry"] = ()
    else:
        prediction = load_labels(pred)
    ref_fields, pred_fields = _stored(reference), _stored(prediction)
    shared = tuple(name for name in _GEOMETRY if name in ref_fields and name in pred_fields)
    differences = grid_differences(prediction, reference, shared)
    if differences:
        raise GeometryError(
            f"prediction {pred} does not fit reference {gt}: " + "; ".join(differences)
            + " (nothing is resampled; write predictions on the reference grid)"
        )
    source = reference if "spacing" in ref_fields or "spacing" not in pred_fields else prediction
    spacing = source.spacing_zyx
    pred_array, gt_array = prediction.array, reference.array
    if reference.is_2d:
        return pred_array[0], gt_array[0], spacing[1:]
    return pred_array, gt_array, spacing


def evaluate_files(
    pred,
    gt,
    labels: Optional[Sequence[int]] = None,
    tolerance_mm: float = 2.0,
    case: Optional[str] = None,
) -> list[dict]:
    """Metrics of one prediction file against its reference file.

    Args:
        pred: prediction label file (``None``: an empty prediction).
        gt: reference label file.
        labels: labels to evaluate; ``None`` = every label > 0 in either file.
        tolerance_mm: NSD tolerance in mm.
        case: case name for the rows (default: from the reference file name).

    Returns:
        One row per label: ``{"case", "label", "dice", "nsd", "hd95", "pred_ml", "ref_ml",
        "tolerance_mm"}`` (see :class:`~promptseg.evaluation.metrics.LabelMetrics`).

    Raises:
        ImageReadError, GeometryError, EvaluationError: see :func:`load_pair` and
        :func:`~promptseg.evaluation.metrics.case_metrics`.
    """
    tolerance = check_tolerance(tolerance_mm)
    wanted = None if labels is None else check_labels(labels)
    pred_array, gt_array, spacing = load_pair(pred, gt)
    name = case if case is not None else getattr(gt, "case_id", None) or case_name(gt)
    return [
        {"case": name, **m.as_dict()}
        for m in case_metrics(pred_array, gt_array, spacing, labels=wanted, tolerance_mm=tolerance)
    ]


def evaluate_matching(
    matching: Matching,
    labels: Optional[Sequence[int]] = None,
    tolerance_mm: float = 2.0,
    progress: bool = False,
) -> list[dict]:
    """:func:`evaluate_files` over every pair of a :class:`Matching`, in case order."""
    from tqdm.auto import tqdm

    tolerance = check_tolerance(tolerance_mm)
    wanted = None if labels is None else check_labels(labels)
    if progress and matching.pairs:
        surface_backend()  # the one-off MONAI import, before the progress bar's clock starts
    rows: list[dict] = []
    bar = tqdm(matching.pairs, unit="case", desc="evaluating", disable=not progress or len(matching.pairs) < 2,
               leave=False)
    for name, pred_path, gt_path in bar:
        rows += evaluate_files(pred_path, gt_path, labels=wanted, tolerance_mm=tolerance, case=name)
    return rows


def evaluate_paths(
    pred,
    gt,
    labels: Optional[Sequence[int]] = None,
    tolerance_mm: float = 2.0,
    progress: bool = False,
    allow_missing: bool = False,
) -> list[dict]:
    """Metrics of a prediction file or folder against a reference file or folder.

    Args:
        pred: prediction label file or folder.
        gt: reference label file or folder (folders are matched by case name).
        labels: labels to evaluate; ``None`` = per case, every label > 0 in either map.
        tolerance_mm: NSD tolerance in mm.
        progress: show a progress bar (folders only).
        allow_missing: score references without a prediction as empty predictions and
            skip predictions without a reference, instead of raising.

    Returns:
        Rows as :func:`evaluate_files`, sorted by case, then in label order.

    Raises:
        ImageReadError, GeometryError, EvaluationError: see :func:`match_cases` and
        :func:`evaluate_files` (the message names the file).
    """
    return evaluate_matching(match_cases(pred, gt, allow_missing), labels, tolerance_mm, progress)


def write_evaluation(rows: Iterable[dict], summary, csv_path, json_path) -> tuple[Path, Path]:
    """Write the metrics CSV and its JSON summary together: both appear, or neither changes
    (a full disk or an unwritable folder leaves no half of the pair behind).

    Returns:
        ``(csv_path, json_path)``.

    Raises:
        ImageWriteError: one line naming the files.
    """
    csv_path, json_path = Path(csv_path), Path(json_path)
    with atomic_paths(csv_path, json_path) as (csv_tmp, json_tmp):
        csv_tmp.write_text(metrics_text(rows), encoding="utf-8", newline="")
        json_tmp.write_text(json_text(summary), encoding="utf-8")
    return csv_path, json_path
