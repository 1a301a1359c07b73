"""The DICOM node: receiver, completion, processing and sending, with recovery at start-up.

>>> from promptseg.node import DicomNode, load_config
>>> node = DicomNode(load_config("node.yaml"))
>>> node.start()            # listens; resumes whatever the journal says is pending
>>> node.wait_idle(60)      # (tests) until nothing is receiving, queued, processing or sending
>>> node.stop()

or, blocking until SIGINT/SIGTERM: ``run_node(load_config("node.yaml"))``.

Threads: pynetdicom's server (one thread per association), a completion loop (series
-> queued), one worker (queued -> sending / quarantined) and one sender (deliveries with
retry and back-off). Every state change goes through the journal first, so stopping or
killing the process at any moment leaves a state that :meth:`DicomNode.start` completes.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from .checks import SeriesRejected
from .completion import Completion
from .config import NodeConfig
from .journal import (FINAL_STATES, KEPT, PROCESSING, QUARANTINED, QUEUED, RECEIVING, SENDING, InstanceInfo, Job,
                      Journal)
from .processor import Processor, SegmenterFactory, Writer
from .quarantine import quarantine_job
from .receiver import Receiver
from .sender import SendError, send_file
from .storage import Storage
from .tls import server_context

LOG = logging.getLogger("promptseg.node")


class DicomNode:
    """One DICOM node (see the module docstring).

    Args:
        config: a validated :class:`~promptseg.node.config.NodeConfig`.
        segmenter_factory: ``(model name, checkpoint) -> Segmenter`` (default :func:`promptseg.build_segmenter`).
        writer: the output step (default: the RTSTRUCT / SEG writers of :mod:`promptseg.io.dicom`).
        reader: ``folder -> Volume`` for a job's series (default :func:`promptseg.io.dicom.read_dicom_series`).
        poll_seconds: how often the loops look for work (default: a fifth of the quiet period, at most 1 s).
    """

    def __init__(self, config: NodeConfig, *, segmenter_factory: Optional[SegmenterFactory] = None,
                 writer: Optional[Writer] = None, reader: Optional[Callable] = None,
                 poll_seconds: Optional[float] = None) -> None:
        self.config = config
        self.storage = Storage(config.node.storage)
        self.journal = Journal(self.storage.journal)
        self.completion = Completion(config.node.quiet_seconds)
        self.receiver = Receiver(config, self.journal, self.storage, self.completion)
        self.processor = Processor(config, self.storage, self.journal, segmenter_factory=segmenter_factory,
                                   writer=writer, reader=reader)
        self.poll_seconds = poll_seconds or min(1.0, config.node.quiet_seconds / 5)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- life cycle --------------------------------------------------------
    @property
    def port(self) -> int:
        """The port the node listens on (the real one when the config says 0)."""
        if self.receiver.server is None:
            raise RuntimeError("the node is not running")
        return int(self.receiver.server.server_address[1])

    def start(self) -> "DicomNode":
        """Recover what the journal says is pending, listen, and start the loops."""
        self.recover()
        context = server_context(self.config.node.tls) if self.config.node.tls else None
        self.receiver.start(context)
        self._stop.clear()
        for name, loop in (("completion", self._completion_loop), ("worker", self._worker_loop), ("sender", self._sender_loop)):
            thread = threading.Thread(target=self._guard, args=(loop,), name=f"promptseg-node-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        LOG.info("DICOM node %s listening on %s:%d%s", self.config.node.ae_title, self.config.node.host, self.port,
                 " (TLS)" if context else "")
        return self

    def stop(self) -> None:
        """Stop listening and let the loops end (a job being processed is finished first)."""
        self.receiver.stop()
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        self.journal.close()

    def __enter__(self) -> "DicomNode":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def pending(self) -> dict[str, int]:
        """Number of jobs per state that is not final."""
        counts: dict[str, int] = {}
        for job in self.journal.jobs():
            if job.state not in FINAL_STATES:
                counts[job.state] = counts.get(job.state, 0) + 1
        return counts

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every job reached a final state and no association is sending; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.pending() and not self.completion.busy_series():
                return True
            time.sleep(self.poll_seconds)
        return False

    # -- recovery ----------------------------------------------------------
    def recover(self) -> None:
        """Finish what a crash left: temporaries, open associations, unjournaled files, interrupted jobs, sends."""
        removed = self.storage.remove_temporaries()
        lost = self.journal.close_open_associations()
        adopted = self._adopt_orphans()
        requeued = self.journal.requeue_interrupted()
        for job in self.journal.jobs(SENDING):
            self._settle(job.id)
        for job_id in requeued:
            self.storage.clear_work(job_id)
        pending = self.pending()
        if removed or lost or adopted or requeued or pending:
            LOG.info("recovery: %d half-written file(s) removed, %d association(s) cut off, %d unjournaled instance(s) "
                     "adopted, %d interrupted job(s) requeued; pending jobs: %s", removed, lost, adopted, len(requeued),
                     ", ".join(f"{n} {state}" for state, n in sorted(pending.items())) or "none")

    def _adopt_orphans(self) -> int:
        """Journal instance files that were stored (durably) but not journaled when the node died."""
        import pydicom

        known = self.journal.known_paths()
        count = 0
        for path in sorted(self.storage.instances.glob("*/*.dcm")):
            if str(path) in known:
                continue
            try:
                ds = pydicom.dcmread(str(path), stop_before_pixels=True)
                info = InstanceInfo(sop_uid=str(ds.SOPInstanceUID), series_uid=str(ds.SeriesInstanceUID),
                                    study_uid=str(ds.StudyInstanceUID), modality=ds.get("Modality"),
                                    sop_class_uid=str(ds.get("SOPClassUID", "")) or None,
                                    series_description=ds.get("SeriesDescription"), body_part=ds.get("BodyPartExamined"))
            except Exception as error:
                LOG.warning("recovery: %s cannot be read (%s); left in place", path, error)
                continue
            if self.journal.add_instance(info, path, path.stat().st_size, None, None) is not None:
                count += 1
        return count

    # -- loops -------------------------------------------------------------
    def _guard(self, loop) -> None:
        while not self._stop.is_set():
            try:
                loop()
            except Exception:  # a bug must not stop the node: log it and go on
                LOG.exception("unexpected error in %s", threading.current_thread().name)
            self._stop.wait(self.poll_seconds)

    def _completion_loop(self) -> None:
        now = time.time()
        for job in self.completion.due(self.journal.jobs(RECEIVING), now):
            quiet_since = now - self.completion.quiet_seconds
            if (job.modality or "").upper() == "RTSTRUCT":
                if self.journal.transition(job.id, KEPT, "structure set kept for ROI prompts", expect=RECEIVING,
                                           quiet_since=quiet_since):
                    LOG.info("job %d: series %s (RTSTRUCT) kept for ROI prompts", job.id, job.series_uid)
            elif self.journal.transition(job.id, QUEUED, "series complete", expect=RECEIVING, quiet_since=quiet_since):
                count = len(self.journal.job_instances(job))
                LOG.info("job %d: series %s (%s, %d instance(s) from %s) complete, queued",
                         job.id, job.series_uid, job.modality or "?", count, job.calling_ae or "?")

    def _worker_loop(self) -> None:
        while not self._stop.is_set():
            job = self.journal.next_queued()
            if job is None:
                return
            self._run_job(job)

    def _run_job(self, job: Job) -> None:
        try:
            outcome = self.processor.process(job)
        except SeriesRejected as error:
            self._quarantine(job, str(error))
            return
        except Exception as error:
            LOG.exception("job %d: unexpected error", job.id)
            self._quarantine(job, f"internal error: {type(error).__name__}: {error}")
            return
        send_to = list(outcome.rule.output.send_to)
        self.journal.start_sending(job.id, outcome.result, send_to, outcome.rule.name)
        where = ", ".join(send_to + ([str(outcome.folder_copy)] if outcome.folder_copy else []))
        LOG.info("job %d: series %s segmented by rule %r (%s); %s -> %s", job.id, job.series_uid, outcome.rule.name,
                 ", ".join(outcome.labels.values()), outcome.rule.output.format.upper(), where)
        if not send_to:
            self._settle(job.id)

    def _quarantine(self, job: Job, reason: str) -> None:
        folder = quarantine_job(self.storage, job, self.journal.job_instances(job), reason)
        self.journal.transition(job.id, QUARANTINED, reason, expect=PROCESSING, reason=reason)
        LOG.warning("job %d: series %s quarantined in %s: %s", job.id, job.series_uid, folder.name, reason)

    def _sender_loop(self) -> None:
        retry = self.config.retry
        for delivery in self.journal.due_deliveries():
            if self._stop.is_set():
                return
            job = self.journal.job(delivery.job_id)
            destination = self.config.destinations.get(delivery.destination)
            attempt = delivery.attempts + 1
            try:
                if destination is None:
                    raise SendError(f"destination {delivery.destination!r} is no longer configured")
                send_file(Path(job.result_path), destination, self.config.node.ae_title, name=delivery.destination,
                          confirmed=lambda: self.journal.delivery_sent(job.id, delivery.destination))
                LOG.info("job %d: result sent to %s (attempt %d)", job.id, delivery.destination, attempt)
            except Exception as error:
                message = str(error) if isinstance(error, SendError) else f"{type(error).__name__}: {error}"
                if attempt >= retry.max_attempts or destination is None:
                    self.journal.delivery_failed(job.id, delivery.destination, message, None)
                    LOG.error("job %d: giving up sending to %s after %d attempt(s): %s", job.id, delivery.destination,
                              attempt, message)
                else:
                    delay = retry.delay(attempt)
                    self.journal.delivery_failed(job.id, delivery.destination, message, time.time() + delay)
                    LOG.warning("job %d: attempt %d of %d to %s failed (%s); next in %.1f s", job.id, attempt,
                                retry.max_attempts, delivery.destination, message, delay)
            self._settle(job.id)

    def _settle(self, job_id: int) -> None:
        state = self.journal.settle(job_id)
        if state is not None:
            LOG.info("job %d: %s", job_id, "delivered" if state == "done" else "delivery failed")


def run_node(config: NodeConfig, **options) -> None:
    """Run a node until SIGINT or SIGTERM (options as for :class:`DicomNode`)."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    node = DicomNode(config, **options).start()
    try:
        stop.wait()
    finally:
        LOG.info("stopping")
        node.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
