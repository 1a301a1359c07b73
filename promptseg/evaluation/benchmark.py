"""Benchmark a model on a labelled dataset with simulated prompts: resumable, seeded, with prompt sweeps.

:func:`run_benchmark` takes every case of a :class:`~promptseg.datasets.layouts.Dataset`,
simulates one prompt per reference label (:mod:`promptseg.evaluation.simulate`),
segments with :func:`promptseg.segment`, measures the prediction against the
reference (:func:`promptseg.evaluation.metrics.case_metrics`) and writes a run
folder::

    RUN_DIR/
      run.json                  settings, cases, label names, start / finish times
      metrics.csv               one row per (case, label, setting): promptseg.datasets.metrics_table
      prompts/<case>.json       the exact prompts, in promptseg's prompt-file format
      predictions/<case>.nii.gz the label map on the reference image's grid
      units/<case>.json         the completion record of each (case, setting) unit
      summary.json              summarize(rows, by=("setting", "label")), written at the end

With a sweep the three per-case folders get one sub-folder per setting
(``prompts/points=5/<case>.json``).

Resuming. The work is split into *units*, one per (case, setting). A unit
writes its prediction, then its prompts, then -- last, atomically -- its
record in ``units/`` holding its metric rows; ``metrics.csv`` is then rewritten
(atomically) from all records, in dataset order. A unit counts as done only
when its record, prediction and prompt file all exist, so a unit interrupted
half-way is redone from scratch and never half-counted, and a finished run's
``metrics.csv`` is the same whether or not it was interrupted. Starting a run
in a folder that holds a run with other settings is an error (``overwrite``
starts over).

Seeds. Each object's prompt comes from its own generator, a function of
(seed, case id, label, prompt mode) only (:func:`~promptseg.evaluation.simulate.prompt_rng`):
prompts do not depend on which units ran before, and settings that do not
change the prompt (``aggregate``, ``input_size``) use exactly the same prompts.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import PromptsegError
from ..datasets.layouts import Case, Dataset, load_dataset
from ..datasets.metrics_table import COLUMNS, write_metrics
from ..inference import ObjectResult, compose_labels, segment
from ..io import load_volume, save_mask
from ..io.jsonfile import json_ready, write_json
from ..models import Capability, Segmenter, has
from ..prompts import ObjectPrompt, prompt_to_dict
from .simulate import NEGATIVE_BAND_PX, PROMPT_MODES, simulate_prompts

log = logging.getLogger(__name__)

#: the sweeps and their default values
SWEEPS: dict[str, list] = {
    "points": [1, 5, 10, 20],
    "jitter_px": [0, 5, 10, 20],
    "input_size": [256, 512, 1024],
    "aggregate": ["avg", "max"],
}
_SWEEP_ALIASES = {"jitter": "jitter_px", "input-size": "input_size", "jitter-px": "jitter_px"}
#: run.json keys that must match for a run to be resumed
_CONFIG_KEYS = ("dataset", "dataset_path", "model", "checkpoint", "seed", "prompt", "sweep", "labels",
                "tolerance_mm", "cases", "label_names", "segment_options")
_RUN_FILES = ("run.json", "metrics.csv", "summary.json")
_RUN_FOLDERS = ("prompts", "predictions", "units")


class BenchmarkError(PromptsegError):
    """Bad benchmark settings, or a run folder that holds another run."""


# ---------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """One point of a sweep (or the single setting of a run without sweep).

    Attributes:
        name: ``""`` without sweep, else ``"<param>=<value>"`` (e.g. ``"jitter_px=5"``);
            also the sub-folder of the setting's files.
        param, value: the swept parameter and its value (None without sweep).
        prompt_mode: ``"box-mid"``, ``"box-mid-z"``, ``"box-2d"``, ``"box3d"`` or ``"points"``.
        jitter_px: box jitter, pixels.
        n_points: clicks per object (points mode).
        negatives: how many of the clicks are negative (None: ``floor(n_points / 2)``).
        input_size: model input size, pixels (None = the model's own).
        aggregate: ``"avg"`` / ``"max"`` over the case's phases, or None (primary image only).
    """

    name: str
    param: Optional[str]
    value: Any
    prompt_mode: str
    jitter_px: float
    n_points: int
    input_size: Optional[int] = None
    aggregate: Optional[str] = None
    negatives: Optional[int] = None

    @property
    def segment_mode(self) -> str:
        return PROMPT_MODES[self.prompt_mode]

    def path(self, root: Path, folder: str, case_id: str, suffix: str) -> Path:
        """``root/folder[/name]/case_id + suffix``."""
        base = root / folder / self.name if self.name else root / folder
        return base / f"{case_id}{suffix}"


def _format_value(value) -> str:
    if isinstance(value, str):
        return value
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def canonical_sweep(param: Optional[str]) -> Optional[str]:
    """``"jitter"`` -> ``"jitter_px"``, ``"input-size"`` -> ``"input_size"``; None stays None."""
    if param is None:
        return None
    name = _SWEEP_ALIASES.get(param, param)
    if name not in SWEEPS:
        raise BenchmarkError(f"unknown sweep {param!r}; choose from points, jitter, input-size, aggregate")
    return name


def _check_values(param: str, values: Sequence) -> list:
    if not values:
        raise BenchmarkError(f"--sweep {param}: no values")
    out = []
    for v in values:
        try:
            if param == "aggregate":
                if v not in ("avg", "max"):
                    raise ValueError
                out.append(v)
            elif param == "jitter_px":
                f = float(v)
                if not (math.isfinite(f) and f >= 0):
                    raise ValueError
                out.append(int(f) if f.is_integer() else f)
            else:
                i = int(v)
                if i != float(v) or i < 1:
                    raise ValueError
                out.append(i)
        except (TypeError, ValueError):
            allowed = {"aggregate": "avg or max", "jitter_px": "pixels >= 0"}.get(param, "integers >= 1")
            raise BenchmarkError(f"--sweep {param}: bad value {v!r} ({allowed})") from None
    if len(set(map(str, out))) != len(out):
        raise BenchmarkError(f"--sweep {param}: values repeat ({', '.join(map(str, out))})")
    return out


def sweep_settings(
    prompt_mode: str = "box-mid",
    jitter_px: float = 0.0,
    points: int = 5,
    sweep: Optional[str] = None,
    values: Optional[Sequence] = None,
    negatives: Optional[int] = None,
) -> list[Setting]:
    """The settings of a run, in order.

    A ``points`` sweep uses prompt mode ``points``; a ``jitter_px`` sweep needs a
    box mode. Other parameters keep the given base values.

    Raises:
        BenchmarkError: unknown mode or sweep, bad values, jitter with points.
    """
    if prompt_mode not in PROMPT_MODES:
        raise BenchmarkError(f"unknown prompt mode {prompt_mode!r}; choose from {', '.join(PROMPT_MODES)}")
    param = canonical_sweep(sweep)
    if param == "points":
        prompt_mode = "points"
    if not (math.isfinite(float(jitter_px)) and jitter_px >= 0):
        raise BenchmarkError(f"jitter must be >= 0 pixels, got {jitter_px}")
    if int(points) != points or points < 1:
        raise BenchmarkError(f"--points must be an integer >= 1, got {points}")
    if prompt_mode == "points" and (jitter_px or param == "jitter_px"):
        raise BenchmarkError("jitter applies to box prompts (box-mid, box-mid-z, box-2d, box3d), not to points")
    if negatives is not None:
        if prompt_mode != "points":
            raise BenchmarkError("--negatives applies to point prompts (--prompt points or --sweep points)")
        if int(negatives) != negatives or negatives < 0:
            raise BenchmarkError(f"--negatives must be an integer >= 0, got {negatives}")
        counts = [int(v) for v in (values or SWEEPS["points"])] if param == "points" else [int(points)]
        if any(negatives >= n for n in counts):
            raise BenchmarkError(f"--negatives {negatives} leaves no positive click with {min(counts)} point(s)")
        negatives = int(negatives)
    base = dict(prompt_mode=prompt_mode, jitter_px=float(jitter_px), n_points=int(points), negatives=negatives)
    if param is None:
        if values:
            raise BenchmarkError("sweep values given without a sweep")
        return [Setting(name="", param=None, value=None, **base)]
    settings = []
    for value in _check_values(param, list(values) if values is not None else SWEEPS[param]):
        kw = dict(base)
        if param == "points":
            kw["n_points"] = int(value)
        elif param == "jitter_px":
            kw["jitter_px"] = float(value)
        elif param == "input_size":
            kw["input_size"] = int(value)
        else:
            kw["aggregate"] = value
        settings.append(Setting(name=f"{param}={_format_value(value)}", param=param, value=value, **kw))
    return settings


# ---------------------------------------------------------------------------
# multi-phase aggregation
# ---------------------------------------------------------------------------
def combine_logits(per_phase: Sequence[dict[int, np.ndarray]], how: str) -> dict[int, np.ndarray]:
    """Combine one object's per-slice logits from several co-registered phases.

    Args:
        per_phase: for each phase, ``{z: (H, W) logits}`` (``ObjectResult.logits``:
            float16, present only on slices where that phase's mask is not empty).
        how: ``"max"`` -- voxel-wise maximum over the phases that have slice ``z``
            (a union: a slice any phase segmented is kept); ``"avg"`` -- voxel-wise
            mean over all phases, on the slices every phase segmented (a phase
            without the slice counts as "outside", so the slice is dropped).

    Returns:
        ``{z: (H, W) float32 logits}``; inside = ``> 0``.
    """
    if how not in ("avg", "max"):
        raise ValueError(f"how must be 'avg' or 'max', got {how!r}")
    if not per_phase:
        return {}
    if how == "max":
        zs = sorted(set().union(*per_phase))
        return {z: np.max(np.stack([p[z].astype(np.float32) for p in per_phase if z in p]), axis=0) for z in zs}
    zs = sorted(set(per_phase[0]).intersection(*per_phase[1:]))
    return {z: np.mean(np.stack([p[z].astype(np.float32) for p in per_phase]), axis=0) for z in zs}


def aggregate_labels(
    prompts: Sequence[ObjectPrompt], per_phase: Sequence[Sequence[ObjectResult]], how: str, shape: tuple[int, int, int]
) -> np.ndarray:
    """Label map ``(Z, H, W)`` from per-phase results (``per_phase[k][i]`` = phase k, object i).

    Each object's logits are combined over the phases (:func:`combine_logits`);
    overlaps go to the object with the highest combined logit, as in
    :func:`promptseg.inference.compose_labels`.
    """
    combined = [
        ObjectResult(prompt, logits=combine_logits([phase[i].logits for phase in per_phase], how))
        for i, prompt in enumerate(prompts)
    ]
    return compose_labels(combined, shape)


# ---------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _clear_run(out: Path) -> None:
    for name in _RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for name in _RUN_FOLDERS:
        shutil.rmtree(out / name, ignore_errors=True)


def _first_difference(old: dict, new: dict) -> str:
    for key in _CONFIG_KEYS:
        a, b = old.get(key), new.get(key)
        if key == "segment_options":  # runs written before the option existed used none
            a, b = a or {}, b or {}
        if a != b:
            if key == "cases":
                return "the case list"
            return f"{key}: {json.dumps(a)} there, {json.dumps(b)} now"
    return ""


#: what :func:`run_benchmark` writes into its run folder
RUN_FILES = ("run.json", "metrics.csv", "summary.json", "prompts", "predictions", "units")


def _prepare_run_dir(out: Path, config: dict, overwrite: bool) -> dict:
    """Create or re-open ``out``; returns the run.json document to keep updating."""
    run_file = out / "run.json"
    if out.exists() and not out.is_dir():
        raise BenchmarkError(f"{out} is a file; give a folder for the run")
    if overwrite:
        _clear_run(out)
    elif run_file.is_file():
        try:
            old = json.loads(run_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise BenchmarkError(f"{run_file}: cannot read ({exc}); use --overwrite to start over") from None
        normalised = json_ready(config)
        difference = _first_difference(old, normalised)
        if difference:
            raise BenchmarkError(
                f"{out} holds a run with other settings ({difference}); "
                "use another folder, or --overwrite to start over"
            )
        if old.get("promptseg_version") != config["promptseg_version"]:
            log.warning("resuming a run started with promptseg %s under %s",
                        old.get("promptseg_version"), config["promptseg_version"])
        doc = dict(old)
        doc["finished"] = None
        doc.setdefault("resumed", []).append(_now())
        write_json(run_file, doc)
        return doc
    elif out.is_dir() and any(p for p in out.iterdir() if p.name in _RUN_FILES + _RUN_FOLDERS):
        raise BenchmarkError(f"{out} holds benchmark files but no run.json; use --overwrite to start over")
    doc = dict(config, started=_now(), finished=None)
    write_json(run_file, doc)
    return doc


# ---------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------
class _CaseData:
    """A case's image(s) and reference, loaded on first use."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self._volume = None
        self._reference = None
        self._phases = None

    @property
    def volume(self):
        if self._volume is None:
            self._volume = load_volume(self.case.image)
        return self._volume

    @property
    def reference(self) -> np.ndarray:
        if self._reference is None:
            self._reference = self.case.reference_labels(self.volume)
        return self._reference

    @property
    def phase_volumes(self) -> list:
        if self._phases is None:
            phases = [self.volume]
            for path in self.case.phases:
                vol = load_volume(path)
                if not vol.same_grid(self.volume):
                    raise BenchmarkError(
                        f"case {self.case.case_id}: phase {path} is not on the grid of {self.case.image} "
                        "(phases must be co-registered and resampled to one grid)"
                    )
                phases.append(vol)
            self._phases = phases
        return self._phases


def _run_config(dataset: Dataset, cases: list[Case], model: str, checkpoint, seed: int, settings: list[Setting],
                sweep: Optional[str], labels, tolerance_mm: float) -> dict:
    from .. import __version__

    first = settings[0]
    return {
        "dataset": dataset.name,
        "dataset_path": str(Path(dataset.path).resolve()) if dataset.path is not None else None,
        "model": model,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "seed": int(seed),
        "prompt": {
            "mode": first.prompt_mode,
            "segment_mode": first.segment_mode,
            "jitter_px": first.jitter_px,
            "points": first.n_points,
            "negatives": first.negatives,
            "positive_points": "ceil(points / 2)" if first.negatives is None else f"points - {first.negatives}",
            "negative_band_px": list(NEGATIVE_BAND_PX),
        },
        "sweep": None if sweep is None else {"param": sweep, "values": [s.value for s in settings]},
        "labels": None if labels is None else sorted(int(v) for v in labels),
        "tolerance_mm": float(tolerance_mm),
        "promptseg_version": __version__,
        "cases": [c.as_dict() for c in cases],
        "label_names": {str(k): v for k, v in dataset.label_names.items()},
    }


def _unit_done(out: Path, setting: Setting, case_id: str) -> Optional[dict]:
    record = setting.path(out, "units", case_id, ".json")
    if not (record.is_file() and setting.path(out, "predictions", case_id, ".nii.gz").is_file()
            and setting.path(out, "prompts", case_id, ".json").is_file()):
        return None
    try:
        return json.loads(record.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def run_benchmark(
    dataset: Dataset | str | Path,
    segmenter: Segmenter,
    out_dir: str | Path,
    *,
    prompt_mode: str = "box-mid",
    jitter_px: float = 0.0,
    points: int = 5,
    negatives: Optional[int] = None,
    seed: int = 0,
    sweep: Optional[str] = None,
    sweep_values: Optional[Sequence] = None,
    tolerance_mm: float = 2.0,
    labels: Optional[Sequence[int]] = None,
    limit: Optional[int] = None,
    checkpoint: Optional[str | Path] = None,
    stop_rule=None,
    segment_options: Optional[dict] = None,
    progress: bool = True,
    resume: bool = True,
    overwrite: bool = False,
) -> Path:
    """Segment every case of ``dataset`` from simulated prompts and measure the results.

    Args:
        dataset: a :class:`Dataset` or a path for :func:`load_dataset`.
        segmenter: the model (``segmenter.name`` is recorded as the model name).
        out_dir: the run folder (created; see the module docstring for its files).
        prompt_mode: ``"box-mid"`` (box on the middle slice, 3D propagation),
            ``"box-mid-z"`` (the same box chained over the label's true z-range),
            ``"box-2d"`` (box on every slice, 2D), ``"box3d"`` (challenge 3D box),
            ``"points"`` (clicks on the middle slice, 3D propagation).
        jitter_px: box jitter, pixels (box modes).
        points: clicks per object (points mode): ``ceil(n/2)`` positive, the rest negative.
        negatives: how many clicks are negative instead (e.g. 3 + 1 with ``points=4, negatives=1``).
        seed: seeds every prompt (with the case id, label and mode), >= 0.
        sweep: None, ``"points"``, ``"jitter_px"`` (``"jitter"``), ``"input_size"``
            (``"input-size"``; only for backends declaring ``Capability.RESIZABLE_INPUT``),
            or ``"aggregate"`` (avg / max of logits over each case's phases).
        sweep_values: values to sweep (default :data:`SWEEPS`).
        tolerance_mm: NSD tolerance, mm.
        labels: only these label values (default: every label of each reference).
        limit: only the first ``limit`` cases.
        checkpoint: recorded in run.json (the segmenter is already built).
        stop_rule: :class:`~promptseg.inference.StopRule` for 3D propagation (default rule).
        segment_options: more keyword options of :func:`promptseg.segment` (e.g.
            ``{"refine_prompt": True}``); recorded in run.json, and a run resumes only with the same.
        progress: show a progress bar over the units.
        resume: skip units a previous run of the same settings completed
            (False: redo them all, replacing their files).
        overwrite: delete the run files in ``out_dir`` first (any settings).

    Returns:
        ``out_dir`` as a Path.

    Raises:
        BenchmarkError: bad settings; ``out_dir`` holds a run with other settings;
            an input-size sweep on a fixed-size model; an aggregate sweep without
            multi-phase cases.
        PromptsegError: unreadable images, labels off the image grid, ...
    """
    from tqdm.auto import tqdm

    from .metrics import case_metrics

    if not isinstance(dataset, Dataset):
        dataset = load_dataset(dataset)
    if int(seed) != seed or seed < 0:
        raise BenchmarkError(f"--seed must be an integer >= 0, got {seed}")
    if not (math.isfinite(float(tolerance_mm)) and tolerance_mm >= 0):
        raise BenchmarkError(f"--tolerance-mm must be >= 0, got {tolerance_mm}")
    param = canonical_sweep(sweep)
    settings = sweep_settings(prompt_mode, jitter_px, points, param, sweep_values, negatives)
    cases = list(dataset.cases)
    if limit is not None:
        if int(limit) < 1:
            raise BenchmarkError(f"--limit must be >= 1, got {limit}")
        cases = cases[: int(limit)]
    if labels is not None:
        labels = sorted({int(v) for v in labels})
        if not labels or labels[0] < 1:
            raise BenchmarkError("--labels: label values are integers >= 1")
    model_name = getattr(segmenter, "name", type(segmenter).__name__)
    if param == "input_size" and not has(segmenter, Capability.RESIZABLE_INPUT):
        raise BenchmarkError(
            f"model {model_name} has a fixed input size of {segmenter.input_size}; "
            "--sweep input-size needs a backend whose input size can be changed"
        )
    if param == "aggregate" and not any(c.phases for c in cases):
        raise BenchmarkError(
            f"--sweep aggregate needs cases with phases (co-registered images); none of the {len(cases)} case(s) has any"
        )
    from ..io.guard import check_output_folder

    out = check_output_folder(out_dir, inputs=[*dataset.files(), checkpoint], writes=RUN_FILES)
    segment_options = dict(segment_options or {})
    config = _run_config(dataset, cases, model_name, checkpoint, seed, settings, param, labels, tolerance_mm)
    config["segment_options"] = segment_options
    doc = _prepare_run_dir(out, config, overwrite)
    names = dataset.label_names

    units = [(case, setting) for case in cases for setting in settings]
    records: dict[tuple[str, str], dict] = {}
    if resume:
        for case, setting in units:
            record = _unit_done(out, setting, case.case_id)
            if record is not None:
                records[(case.case_id, setting.name)] = record
    sized: dict[int, Segmenter] = {}

    def model_for(setting: Setting) -> Segmenter:
        if setting.input_size is None:
            return segmenter
        if setting.input_size not in sized:
            sized[setting.input_size] = segmenter.with_input_size(setting.input_size)
        return sized[setting.input_size]

    def all_rows() -> list[dict]:
        return [row for case, setting in units for row in records.get((case.case_id, setting.name), {}).get("rows", [])]

    bar = tqdm(total=len(units), initial=len(records), unit="unit", desc="benchmark", disable=not progress)
    try:
        for case in cases:
            data = _CaseData(case)
            phase_cache: dict[tuple, tuple[list, float, int]] = {}
            for setting in settings:
                key = (case.case_id, setting.name)
                if key in records:
                    continue
                bar.set_postfix_str(f"{case.case_id} {setting.name}".strip())
                record = _run_unit(out, data, setting, seed, labels, names, tolerance_mm, model_for(setting),
                                   stop_rule, phase_cache, case_metrics, dataset.name, model_name, segment_options)
                records[key] = record
                write_metrics(all_rows(), out / "metrics.csv", COLUMNS)
                bar.update(1)
    finally:
        bar.close()

    rows = all_rows()
    write_metrics(rows, out / "metrics.csv", COLUMNS)
    if not rows:
        raise BenchmarkError(
            "no reference label to benchmark: "
            + (f"none of the labels {', '.join(map(str, labels))} occurs in any case" if labels else "every reference is empty")
        )
    from .summary import summarize

    order = {s.name: i for i, s in enumerate(settings)}
    summary = sorted(summarize(rows, by=("setting", "label")), key=lambda e: order.get(e["setting"], len(order)))
    write_json(out / "summary.json", summary)
    doc["finished"] = _now()
    write_json(out / "run.json", doc)
    return out


def _run_unit(out: Path, data: _CaseData, setting: Setting, seed: int, labels, names: dict[int, str],
              tolerance_mm: float, model: Segmenter, stop_rule, phase_cache: dict, case_metrics,
              dataset_name: str, model_name: str, segment_options: Optional[dict] = None) -> dict:
    """Segment, save and measure one (case, setting); returns its record (already written)."""
    case = data.case
    volume, reference = data.volume, data.reference
    prompts = simulate_prompts(reference, setting.prompt_mode, seed=seed, case_id=case.case_id, values=labels,
                               names=names, jitter_px=setting.jitter_px, n_points=setting.n_points,
                               negatives=setting.negatives)
    present = [p.label for p in prompts]
    if not present:
        log.warning("case %s: no label to prompt%s", case.case_id, f" among {labels}" if labels else "")
    mode = setting.segment_mode
    encoded = 0
    n_phases = 1
    started = time.perf_counter()
    if not prompts:
        prediction = np.zeros(volume.shape, dtype=np.uint8)
        seconds = 0.0
    elif setting.aggregate is None:
        result = segment(volume, prompts, model, mode=mode, stop_rule=stop_rule, progress=False,
                         **(segment_options or {}))
        prediction, encoded = result.labels.array, len(result.encoded_slices)
        seconds = time.perf_counter() - started
    else:
        cache_key = (json.dumps([prompt_to_dict(p) for p in prompts]), mode, id(model))
        if cache_key not in phase_cache:
            per_phase, encoded = [], 0
            for vol in data.phase_volumes:
                result = segment(vol, prompts, model, mode=mode, stop_rule=stop_rule, progress=False,
                                 **(segment_options or {}))
                per_phase.append(result.objects)
                encoded += len(result.encoded_slices)
            phase_cache[cache_key] = (per_phase, time.perf_counter() - started, encoded)
        per_phase, seconds, encoded = phase_cache[cache_key]
        n_phases = len(per_phase)
        prediction = aggregate_labels(prompts, per_phase, setting.aggregate, volume.shape)

    pred_path = setting.path(out, "predictions", case.case_id, ".nii.gz")
    prompt_path = setting.path(out, "prompts", case.case_id, ".json")
    save_mask(prediction, pred_path, reference=volume)
    write_json(prompt_path, {"objects": [prompt_to_dict(p) for p in prompts]})

    rows = []
    if present:
        for m in case_metrics(prediction, reference, volume.spacing_zyx, labels=present, tolerance_mm=tolerance_mm):
            metrics = m.as_dict()
            label = int(metrics["label"])
            row = {
                "dataset": dataset_name, "model": model_name, "case": case.case_id, "label": label,
                "label_name": names.get(label, str(label)), "prompt_mode": setting.prompt_mode,
                "setting": setting.name, "sweep_param": setting.param or "",
                "sweep_value": "" if setting.param is None else _format_value(setting.value),
            }
            for k in ("dice", "nsd", "hd95", "pred_ml", "ref_ml", "tolerance_mm"):
                row[k] = float(metrics[k])
            row.update(seconds=round(seconds, 3), phases=n_phases, encoded_slices=encoded, seed=int(seed))
            rows.append(row)
    record = {
        "case": case.case_id, "setting": setting.name, "prompt_mode": setting.prompt_mode, "segment_mode": mode,
        "jitter_px": setting.jitter_px, "points": setting.n_points, "negatives": setting.negatives,
        "input_size": setting.input_size,
        "aggregate": setting.aggregate, "seed": int(seed),
        "prediction": str(pred_path.relative_to(out)), "prompts": str(prompt_path.relative_to(out)),
        "finished": _now(), "rows": rows,
    }
    # an infinite HD95 is kept as "inf" so that a resumed run writes the same metrics.csv
    write_json(setting.path(out, "units", case.case_id, ".json"), record, nonfinite_as_text=True)
    return record
