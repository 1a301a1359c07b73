"""One job, from received instances to a result file: rule, checks, volume, prompts, model, RTSTRUCT/SEG.

Everything that makes a series unprocessable raises :class:`~promptseg.node.checks.SeriesRejected`
with the reason the quarantine file gives. The output step (``writer``), the series reader
and the model factory can be swapped (tests use a fast stand-in model).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import PromptsegError
from ..volume import Volume
from .checks import SeriesRejected, check_series
from .config import NodeConfig, Rule
from .journal import Job, Journal
from .prompting import build_prompts
from .rules import SeriesFacts, describe, select_rule
from .storage import Storage, copy_durable, link_or_copy, safe_name

LOG = logging.getLogger("promptseg.node")

#: ``(labels, reference, path, *, fmt, names, series_description, algorithm) -> Path``
Writer = Callable[..., Path]
#: ``(model name, checkpoint path or None) -> Segmenter``
SegmenterFactory = Callable[[str, Optional[Path]], object]


def write_result(labels: Volume, reference: Volume, path: Path, *, fmt: str, names: dict[int, str],
                 series_description: str, algorithm: str) -> Path:
    """Write ``labels`` as an RTSTRUCT or a SEG referencing ``reference`` (the dicom-rt writers)."""
    from ..io import dicom

    write = dicom.write_rtstruct if fmt == "rtstruct" else dicom.write_seg
    return write(labels, reference, path, names=names, series_description=series_description, algorithm=algorithm)


def read_series(folder: Path) -> Volume:
    from ..io.dicom import read_dicom_series

    return read_dicom_series(folder)


def build_model(name: str, checkpoint: Optional[Path]):
    from ..models import build_segmenter

    return build_segmenter(name, checkpoint=checkpoint)


@dataclass(frozen=True)
class Outcome:
    """A processed job: the rule used, the result file, the labels that are not empty, the folder copy if any."""

    rule: Rule
    result: Path
    labels: dict[int, str]
    folder_copy: Optional[Path]


class Processor:
    """Runs jobs for one node (one at a time; models are built once per model/checkpoint)."""

    def __init__(self, config: NodeConfig, storage: Storage, journal: Journal, *,
                 segmenter_factory: Optional[SegmenterFactory] = None, writer: Optional[Writer] = None,
                 reader: Optional[Callable[[Path], Volume]] = None) -> None:
        self.config, self.storage, self.journal = config, storage, journal
        self._factory = segmenter_factory or build_model
        self._writer = writer or write_result
        self._reader = reader or read_series
        self._models: dict[tuple[str, Optional[str]], object] = {}

    def _model(self, rule: Rule):
        key = (rule.model, str(rule.checkpoint) if rule.checkpoint else None)
        if key not in self._models:
            try:
                self._models[key] = self._factory(rule.model, rule.checkpoint)
            except PromptsegError as error:
                raise SeriesRejected(f"model {rule.model}: {error}") from None
        return self._models[key]

    def rule_for(self, job: Job) -> Rule:
        facts = SeriesFacts(job.modality, job.series_description, job.body_part, job.calling_ae)
        rule = select_rule(self.config.rules, facts)
        if rule is None:
            raise SeriesRejected(f"no rule matches this series ({describe(facts)})")
        return rule

    def process(self, job: Job) -> Outcome:
        """Segment ``job``'s series and write its result under ``results/<job id>/``.

        Raises:
            SeriesRejected: the reason to quarantine the series.
        """
        from ..inference import segment

        rule = self.rule_for(job)
        files = self.journal.job_instances(job)
        check_series(files)
        work = self.storage.job_work(job.id)
        self.storage.clear_work(job.id)
        try:
            for path in files:
                link_or_copy(path, work / path.name)
            try:
                volume = self._reader(work)
            except PromptsegError as error:
                raise SeriesRejected(f"cannot read the series: {error}") from None
            prompts, names = build_prompts(rule, volume, self.journal.study_instances(job.study_uid, "RTSTRUCT"))
            model = self._model(rule)
            try:
                result = segment(volume, prompts, model)
            except PromptsegError as error:
                raise SeriesRejected(f"segmentation: {error}") from None
            present = {label: name for label, name in names.items() if np.any(result.labels.array == label)}
            if not present:
                raise SeriesRejected(f"the model found nothing for {', '.join(names.values())}")
            for label, name in names.items():
                if label not in present:
                    LOG.warning("job %d: %s is empty; it is left out of the result", job.id, name)
            path = self.storage.result_path(job.id, rule.output.format)
            try:
                self._writer(result.labels, volume, path, fmt=rule.output.format, names=present,
                             series_description=rule.output.series_description, algorithm=f"promptseg {rule.model}")
            except PromptsegError as error:
                raise SeriesRejected(f"writing the {rule.output.format.upper()}: {error}") from None
        finally:
            self.storage.clear_work(job.id)
        copy = None
        if rule.output.folder is not None:
            copy = Path(rule.output.folder) / f"{safe_name(job.series_uid)}-v{job.version}-{rule.output.format}.dcm"
            copy_durable(path, copy)
        return Outcome(rule=rule, result=path, labels=present, folder_copy=copy)
