"""Segment many cases with one model: resumable, failure-tolerant, shardable.

:func:`run_batch` takes its shard's cases (:mod:`promptseg.batch.shard`) in
case-id order and, for each, reads the image, resolves the prompts
(:class:`~promptseg.prompts.source.PromptSource`), segments and writes

* the label map (atomically),
* the probability maps when asked (atomically),
* last, the provenance sidecar ``<case>.provenance.json``
  (:mod:`promptseg.inference.provenance`) with a ``batch`` record: the case id and
  the digest of the run's settings.

The sidecar is the case's completion record: a case whose sidecar exists, names
its existing label map and carries the same settings digest is *finished* and
skipped when the run starts again (after a crash, a kill, a full disk), so a
resumed run redoes only unfinished cases; ``overwrite=True`` redoes everything.
A case that fails (unreadable image, a prompt outside the image, a write error)
is recorded with its reason and the run goes on. The summary CSV (one row per case:
status ``done`` / ``skipped`` / ``failed``, reason, objects, voxels, ml, seconds)
is written atomically at the end; skipped cases take their numbers from their sidecars.

Under ``torchrun`` every rank runs this with its own model; the ranks' rows are
gathered over ``torch.distributed`` (gloo, the backend training uses on CPUs) and
rank 0 writes one summary. With ``--shard i/n`` (independent jobs, e.g. a SLURM
array) each shard writes ``summary-shard-<i>-of-<n>.csv``; a later run without
``--shard`` skips every finished case and writes the whole summary.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..errors import PromptsegError
from ..inference.provenance import sidecar_path
from ..io.guard import check_distinct
from ..prompts.source import PromptSource
from .cases import BatchCase
from .shard import Shard

log = logging.getLogger(__name__)

#: columns of the summary CSV
SUMMARY_COLUMNS = ("case", "status", "reason", "image", "output", "objects", "voxels", "volume_ml", "seconds")


@dataclass(frozen=True)
class BatchSettings:
    """What every case of a run shares.

    Attributes:
        prompt: the run's prompt (typed options, or one file for all); a case's own
            prompt file or label map replaces it.
        mode, modality, window, stop_rule, propagation, memory_options, refine_prompt,
            mask_prompt: as :func:`promptseg.segment`.
        probabilities: also write ``<case>_probabilities.nii.gz`` (float32; one file per
            object when there are several, see
            :meth:`~promptseg.inference.results.SegmentationResult.probability_paths`).
        model: the model's name and checkpoint, recorded in the settings digest.
    """

    prompt: PromptSource = field(default_factory=PromptSource)
    mode: str = "auto"
    modality: Optional[str] = None
    window: Optional[tuple[float, float]] = None
    stop_rule: Optional[object] = None
    propagation: str = "chain"
    memory_options: Optional[dict] = None
    refine_prompt: bool = False
    mask_prompt: bool = False
    probabilities: bool = False
    model: dict = field(default_factory=dict)

    def digest(self) -> str:
        """16 hex digits identifying the settings (a finished case with another digest is redone)."""
        document = {
            "prompt": {**asdict(self.prompt), "options": dict(sorted(self.prompt.options.items()))},
            "mode": self.mode, "modality": self.modality, "window": self.window,
            "stop_rule": asdict(self.stop_rule) if self.stop_rule is not None else None,
            "propagation": self.propagation, "memory_options": self.memory_options,
            "probabilities": self.probabilities, "model": self.model,
            # only when on, so the digests of runs made before the option existed stay valid
            **{name: True for name in ("refine_prompt", "mask_prompt") if getattr(self, name)},
        }
        text = json.dumps(document, sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class CaseOutcome:
    """One row of the summary."""

    case: str
    status: str
    reason: str = ""
    image: str = ""
    output: str = ""
    objects: int = 0
    voxels: int = 0
    volume_ml: float = 0.0
    seconds: float = 0.0

    def row(self) -> dict:
        return {k: getattr(self, k) for k in SUMMARY_COLUMNS}


def probability_path(case: BatchCase) -> Path:
    """``out/case7.nii.gz`` -> ``out/case7_probabilities.nii.gz``."""
    from ..io.common import format_suffix

    suffix = format_suffix(case.output) or ".nii.gz"
    stem = case.output.name[: len(case.output.name) - len(suffix)]
    return case.output.with_name(f"{stem}_probabilities{suffix}")


def check_cases(cases: Sequence[BatchCase], settings: BatchSettings, extra_inputs: Sequence = ()) -> None:
    """Before any model work: every output has a format promptseg writes, can be written, is no case's
    input, and no two cases share an output file.

    Raises:
        ImageWriteError: one line naming the first bad output.
    """
    from ..errors import ImageWriteError
    from ..inference.results import PROBABILITY_SUFFIXES
    from ..io import check_destination, check_output_path
    from ..io.common import format_suffix

    inputs = [Path(p) for case in cases for p in case.inputs()] + [Path(p) for p in extra_inputs if p is not None]
    files = {p.resolve() for p in inputs}
    folders = {p.resolve() for p in inputs if p.is_dir()}
    outputs = []
    for case in cases:
        images = [case.output] + ([probability_path(case)] if settings.probabilities else [])
        written = images + [sidecar_path(case.output)]
        for path in images:
            check_output_path(path)
        if settings.probabilities and format_suffix(case.output) not in PROBABILITY_SUFFIXES:
            raise ImageWriteError(f"cannot write probabilities next to {case.output}: they are float32 images; "
                                  f"write the label maps as {' / '.join(PROBABILITY_SUFFIXES)}")
        check_destination(written[-1])
        for path in written:
            target = path.resolve()
            if target in files or folders.intersection(target.parents):
                raise ImageWriteError(f"cannot write {path}: it is an input of this run, or inside an input folder; "
                                      "choose another output folder")
        outputs += written
    check_distinct(*outputs)


def finished(case: BatchCase, digest: str) -> Optional[dict]:
    """The sidecar of a finished case (same settings, label map present), else None."""
    path = sidecar_path(case.output)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    batch = doc.get("batch") if isinstance(doc, dict) else None
    if not isinstance(batch, dict) or batch.get("settings") != digest or batch.get("case") != case.case_id:
        return None
    labels = (doc.get("outputs") or {}).get("labels")
    return doc if labels and Path(labels).is_file() else None


def _outcome_from_sidecar(case: BatchCase, doc: dict, status: str) -> CaseOutcome:
    objects = doc.get("objects") or []
    return CaseOutcome(case.case_id, status, "", str(case.image), str(case.output), len(objects),
                       sum(int(o.get("voxels", 0)) for o in objects),
                       round(sum(float(o.get("volume_ml", 0.0)) for o in objects), 6),
                       float(doc.get("seconds", 0.0)))


def segment_case(case: BatchCase, segmenter, settings: BatchSettings, digest: str) -> dict:
    """Segment one case and write its outputs; returns its provenance document."""
    from ..inference import segment
    from ..io import load_volume

    volume = load_volume(case.image, series_uid=case.series)
    source = settings.prompt
    if case.prompt_file is not None or case.label_map is not None:
        source = PromptSource(prompt_file=str(case.prompt_file) if case.prompt_file else None,
                              label_map=str(case.label_map) if case.label_map else None, labels=case.labels)
    prompts, notes = source.resolve(volume)
    for note in notes:
        log.warning("case %s: %s", case.case_id, note)
    result = segment(volume, prompts, segmenter, mode=settings.mode, modality=settings.modality,
                     window=settings.window, stop_rule=settings.stop_rule, propagation=settings.propagation,
                     memory_options=settings.memory_options, refine_prompt=settings.refine_prompt,
                     mask_prompt=settings.mask_prompt)
    extra = {"prompt_source": source.description, "notes": notes,
             "batch": {"case": case.case_id, "settings": digest}}
    result.save(case.output, probabilities=probability_path(case) if settings.probabilities else None, extra=extra)
    return json.loads(sidecar_path(case.output).read_text(encoding="utf-8"))


def write_summary(path, outcomes: Sequence[CaseOutcome]) -> Path:
    """The summary CSV, atomically (rows in case order)."""
    from ..io.atomic import atomic_path

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for outcome in sorted(outcomes, key=lambda o: o.case):
        writer.writerow(outcome.row())
    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(buffer.getvalue(), encoding="utf-8")
    return path


def summary_name(shard: Shard) -> str:
    """``summary.csv``, or ``summary-shard-<i>-of-<n>.csv`` for a hand-made shard."""
    if shard.count > 1 and not shard.distributed:
        return f"summary-shard-{shard.index}-of-{shard.count}.csv"
    return "summary.csv"


def _gather(outcomes: list[CaseOutcome], shard: Shard) -> Optional[list[CaseOutcome]]:
    """Every rank's rows on rank 0 (None on the others); this process's rows without torchrun."""
    if not shard.distributed:
        return outcomes
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    gathered: list = [None] * shard.count
    dist.all_gather_object(gathered, [o.row() for o in outcomes])
    if shard.index != 0:
        return None
    return [CaseOutcome(**row) for rows in gathered for row in rows]


def run_batch(
    cases: Sequence[BatchCase],
    segmenter,
    settings: Optional[BatchSettings] = None,
    *,
    summary: Optional[str | Path] = None,
    shard: Shard = Shard(),
    overwrite: bool = False,
    progress: bool = False,
    on_case: Optional[Callable[[CaseOutcome], None]] = None,
) -> list[CaseOutcome]:
    """Segment this shard's cases (see the module docstring).

    Args:
        cases: all cases of the run (every shard sees the same list).
        segmenter: the model, built once for the process.
        settings: what the cases share.
        summary: the summary CSV (None: none written).
        shard: this process's share (:func:`~promptseg.batch.shard.choose_shard`).
        overwrite: redo finished cases too.
        progress: a progress bar over this shard's cases.
        on_case: called with each case's outcome as it is known.

    Returns:
        This shard's outcomes, in case order (on rank 0 of a torchrun job: every rank's).

    Raises:
        ImageWriteError: an output that cannot be written or clashes with an input (before any case runs).
    """
    from tqdm.auto import tqdm

    settings = settings or BatchSettings()
    mine = shard.take(cases, key=lambda c: c.case_id)
    check_cases(mine, settings, extra_inputs=settings.prompt.inputs())
    digest = settings.digest()
    outcomes: list[CaseOutcome] = []
    bar = tqdm(mine, desc=f"cases (shard {shard.label})" if shard.count > 1 else "cases", unit="case",
               disable=not progress)
    for case in bar:
        started = time.perf_counter()
        done = None if overwrite else finished(case, digest)
        if done is not None:
            outcome = _outcome_from_sidecar(case, done, "skipped")
            outcome.reason = "finished earlier"
        else:
            try:
                outcome = _outcome_from_sidecar(case, segment_case(case, segmenter, settings, digest), "done")
            except (PromptsegError, OSError, ValueError, RuntimeError, MemoryError) as error:
                reason = str(error) if isinstance(error, PromptsegError) else f"{type(error).__name__}: {error}"
                log.error("case %s failed: %s", case.case_id, reason)
                outcome = CaseOutcome(case.case_id, "failed", reason, str(case.image), str(case.output))
            outcome.seconds = round(time.perf_counter() - started, 3)
        outcomes.append(outcome)
        if on_case is not None:
            on_case(outcome)
    everyone = _gather(outcomes, shard)
    if summary is not None and everyone is not None:
        write_summary(summary, everyone)
    return everyone if everyone is not None else outcomes
