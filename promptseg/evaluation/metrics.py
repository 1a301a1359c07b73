"""Segmentation metrics with physical spacing: Dice, NSD (surface Dice), HD95, volumes.

Every function takes masks as NumPy arrays in **array-axis order** -- ``(z, y, x)`` for
volumes, ``(y, x)`` for 2D images -- and the voxel spacing in millimetres **in the same
order** (``Volume.spacing_zyx`` for a :class:`~promptseg.volume.Volume`, or its last two
entries for a one-slice image). Distances are in mm, volumes in ml.

Definitions
-----------
* **Dice** (DSC): ``2 |P & R| / (|P| + |R|)``, counted in voxels.
* **NSD** (normalised surface distance, a.k.a. surface Dice, Nikolov et al. 2021): the
  share of the two boundaries -- by *area* (3D) or *length* (2D) -- that lies within
  ``tolerance_mm`` of the other boundary. Computed with MONAI's
  ``compute_surface_dice(..., use_subvoxels=True)``: boundary elements sit on the
  corners between voxels and carry their area from the 2x2x2 neighbourhood pattern, as
  in DeepMind's ``surface-distance`` package that the MedSAM / LiteMedSAM challenge
  scripts use. So with anisotropic voxels a boundary element on a 0.7 x 0.9 mm face does
  not count as much as one on a 3 x 0.9 mm face (MONAI's default ``use_subvoxels=False``
  counts boundary voxels and would weigh them equally).
* **HD95**: the 95th percentile of the boundary-to-boundary distances, taken in each
  direction (prediction -> reference and reference -> prediction) and the larger of the
  two, in mm. Computed with MONAI's ``compute_hausdorff_distance(percentile=95)``:
  boundary = mask voxels with a 6-neighbour (4 in 2D) outside the mask (voxels at the
  array border count as boundary), distances between voxel centres, Euclidean in mm,
  percentile with linear interpolation.
* **Volumes**: ``voxel count * prod(spacing) / 1000`` ml.

No Dice gating: NSD and HD95 are computed for every case, also when the Dice is low
(MedSAM's scripts only compute NSD when Dice > 0.2; we do not).

Empty masks (conventions)
-------------------------
============================  ======  =====  ========
case                          Dice    NSD    HD95
============================  ======  =====  ========
both empty                    1.0     1.0    0.0
exactly one empty             0.0     0.0    ``inf``
============================  ======  =====  ========

Both empty is a correct answer ("nothing there, nothing predicted"); exactly one empty
is a complete miss, whose boundary distance is undefined -- ``inf`` rather than an
arbitrary finite penalty (such as the image diagonal) or NaN: it stays a worst value
when sorting, is written as ``inf`` in CSV files, and :func:`~promptseg.evaluation.summary.summarize`
leaves non-finite values out of mean / sd / median / IQR and says how many it left out.
MONAI itself returns NaN for these cases (both empty: NSD and HD; one empty: HD), so
they are decided here before MONAI is called.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np

from ..errors import GeometryError, PromptsegError


class EvaluationError(PromptsegError, ValueError):
    """Unusable evaluation input: bad tolerance, spacing or labels, unmatched files."""


@dataclass(frozen=True)
class LabelMetrics:
    """The metrics of one label in one case.

    Attributes:
        label: label value.
        dice: Dice similarity coefficient in [0, 1].
        nsd: normalised surface distance (surface Dice) at ``tolerance_mm``, in [0, 1].
        hd95: 95th-percentile Hausdorff distance in mm; 0 when both masks are empty,
            ``inf`` when exactly one is.
        pred_ml: predicted volume in ml (area in mm^2 / 1000 for 2D input).
        ref_ml: reference volume in ml (likewise).
        tolerance_mm: the NSD tolerance in mm.
    """

    label: int
    dice: float
    nsd: float
    hd95: float
    pred_ml: float
    ref_ml: float
    tolerance_mm: float

    def as_dict(self) -> dict:
        """``{"label", "dice", "nsd", "hd95", "pred_ml", "ref_ml", "tolerance_mm"}``."""
        return asdict(self)


def check_spacing(spacing: Sequence[float], ndim: int) -> list[float]:
    """``spacing`` as a list of ``ndim`` positive finite floats (mm), else :class:`EvaluationError`."""
    try:
        values = [float(s) for s in spacing]
    except (TypeError, ValueError):
        raise EvaluationError(f"spacing must be {ndim} numbers in mm, got {spacing!r}") from None
    if len(values) != ndim:
        raise EvaluationError(
            f"spacing must have one value per array axis ({ndim}), got {len(values)}: {tuple(values)}"
        )
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise EvaluationError(f"spacing must be positive and finite, got {tuple(values)}")
    return values


def check_tolerance(tolerance_mm: float) -> float:
    """The NSD tolerance as a float >= 0 (mm), else :class:`EvaluationError`."""
    try:
        value = float(tolerance_mm)
    except (TypeError, ValueError):
        raise EvaluationError(f"the NSD tolerance must be a number of mm, got {tolerance_mm!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise EvaluationError(f"the NSD tolerance must be finite and >= 0 mm, got {tolerance_mm!r}")
    return value


def _crop_pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cut to the bounding box of their union plus one empty voxel on every side.

    Only the region around the objects matters for boundary distances; cutting it out
    first keeps the float copies handed to MONAI small for large volumes. The padding is
    empty (background), which is also how MONAI treats the outside of the array, so
    objects touching the array border keep their boundary there.
    """
    union = pred | ref
    box = []
    for axis in range(union.ndim):
        others = tuple(a for a in range(union.ndim) if a != axis)
        hits = np.flatnonzero(union.any(axis=others))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    box = tuple(box)
    return np.pad(pred[box], 1), np.pad(ref[box], 1)


def _monai_inputs(pred: np.ndarray, ref: np.ndarray):
    import torch

    def as_tensor(mask: np.ndarray):  # (1 batch, 1 channel, *spatial) float, as MONAI expects
        return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]

    return as_tensor(pred), as_tensor(ref)


def surface_backend():
    """MONAI's ``(compute_surface_dice, compute_hausdorff_distance)``.

    Importing any part of MONAI loads all of it (several seconds), so this happens on
    first use only; call it up front to take that wait before a progress bar starts.
    """
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    return compute_surface_dice, compute_hausdorff_distance


def _surface_metrics(pred: np.ndarray, ref: np.ndarray, spacing: list[float], tolerance_mm: float) -> tuple[float, float]:
    """NSD and HD95 of two non-empty boolean masks (MONAI), spacing in array-axis order."""
    compute_surface_dice, compute_hausdorff_distance = surface_backend()
    y_pred, y = _monai_inputs(*_crop_pair(pred, ref))
    with warnings.catch_warnings():
        # MONAI 1.5+ passes its own deprecated `always_return_as_numpy` argument internally.
        warnings.simplefilter("ignore", FutureWarning)
        # Semantics checked against MONAI 1.6.1's source: `spacing` is per array axis in
        # the tensor's spatial order (here z, y, x); with a spacing the distances and
        # therefore `class_thresholds` are in mm (the docstring's "in pixels" holds only
        # without spacing). One channel + include_background=True = this one mask.
        nsd = compute_surface_dice(
            y_pred, y, class_thresholds=[tolerance_mm], include_background=True,
            spacing=spacing, use_subvoxels=True,
        )
        hd95 = compute_hausdorff_distance(
            y_pred, y, include_background=True, percentile=95, spacing=spacing,
        )
    return float(nsd[0, 0]), float(hd95[0, 0])


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Dice coefficient of two masks of the same shape (non-zero = inside); 1.0 when both are empty."""
    prediction, reference = np.asarray(prediction) != 0, np.asarray(reference) != 0
    total = int(np.count_nonzero(prediction)) + int(np.count_nonzero(reference))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(prediction & reference)) / total


def label_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing_zyx: Sequence[float],
    tolerance_mm: float = 2.0,
    label: int = 1,
) -> LabelMetrics:
    """Dice, NSD, HD95 and volumes of one label.

    Args:
        pred: predicted mask, ``(z, y, x)`` or ``(y, x)``; boolean (anything else: non-zero = inside).
        ref: reference mask, same shape.
        spacing_zyx: voxel size in mm in the array's axis order, one value per axis
            (``(z, y, x)`` for 3D, ``(y, x)`` for 2D).
        tolerance_mm: NSD tolerance in mm (>= 0).
        label: the label value to report (only stored in the result).

    Returns:
        :class:`LabelMetrics`. Empty masks: both empty -> dice 1, nsd 1, hd95 0; exactly
        one empty -> dice 0, nsd 0, hd95 ``inf`` (see the module docstring).

    Raises:
        GeometryError: ``pred`` and ``ref`` differ in shape.
        EvaluationError: not 2D/3D, bad spacing or tolerance.
    """
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.shape != ref.shape:
        raise GeometryError(f"prediction and reference masks differ in shape: {pred.shape} vs {ref.shape}")
    if pred.ndim not in (2, 3):
        raise EvaluationError(f"masks must be 2D (y, x) or 3D (z, y, x), got shape {pred.shape}")
    spacing = check_spacing(spacing_zyx, pred.ndim)
    tolerance = check_tolerance(tolerance_mm)
    pred = pred if pred.dtype == np.bool_ else pred != 0
    ref = ref if ref.dtype == np.bool_ else ref != 0

    voxel_ml = math.prod(spacing) / 1000.0
    n_pred = int(np.count_nonzero(pred))
    n_ref = int(np.count_nonzero(ref))
    volumes = dict(pred_ml=n_pred * voxel_ml, ref_ml=n_ref * voxel_ml, tolerance_mm=tolerance)
    if n_pred == 0 and n_ref == 0:
        return LabelMetrics(int(label), 1.0, 1.0, 0.0, **volumes)
    if n_pred == 0 or n_ref == 0:
        return LabelMetrics(int(label), 0.0, 0.0, math.inf, **volumes)
    nsd, hd95 = _surface_metrics(pred, ref, spacing, tolerance)
    return LabelMetrics(int(label), dice(pred, ref), nsd, hd95, **volumes)


def present_labels(*label_maps: np.ndarray) -> list[int]:
    """Every label value > 0 occurring in any of ``label_maps``, sorted."""
    found: set[int] = set()
    for array in label_maps:
        values = np.unique(np.asarray(array))
        found.update(int(v) for v in values if v > 0)
    return sorted(found)


def case_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing_zyx: Sequence[float],
    labels: Optional[Sequence[int]] = None,
    tolerance_mm: float = 2.0,
) -> list[LabelMetrics]:
    """:func:`label_metrics` for each label of two integer label maps.

    Args:
        pred: predicted label map, ``(z, y, x)`` or ``(y, x)``, integer values (0 = background).
        ref: reference label map, same shape.
        spacing_zyx: voxel size in mm per array axis (see :func:`label_metrics`).
        labels: label values to evaluate (each > 0). ``None``: every label > 0 present in
            either map, sorted -- a label missing from both maps is then not reported;
            name it explicitly to get its "both empty" row.
        tolerance_mm: NSD tolerance in mm.

    Returns:
        One :class:`LabelMetrics` per label, in the order of ``labels``.

    Raises:
        GeometryError: the maps differ in shape.
        EvaluationError: bad labels, spacing or tolerance.
    """
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.shape != ref.shape:
        raise GeometryError(f"prediction and reference label maps differ in shape: {pred.shape} vs {ref.shape}")
    check_spacing(spacing_zyx, pred.ndim)
    check_tolerance(tolerance_mm)
    wanted = present_labels(pred, ref) if labels is None else check_labels(labels)
    return [label_metrics(pred == value, ref == value, spacing_zyx, tolerance_mm, label=value) for value in wanted]


def check_labels(labels: Sequence[int]) -> list[int]:
    """Label values as distinct positive ints, in the given order, else :class:`EvaluationError`."""
    out: list[int] = []
    for value in labels:
        try:
            number = int(value)
            ok = number == float(value) and number > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise EvaluationError(f"labels must be positive integers, got {value!r}")
        if number in out:
            raise EvaluationError(f"label {number} is given twice")
        out.append(number)
    if not out:
        raise EvaluationError("the list of labels is empty")
    return out
