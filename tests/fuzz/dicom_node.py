"""The ``node`` fuzz target: what a DICOM peer sends to ``promptseg dicom-node``, from C-STORE to result.

An input is a set of DICOM files (a series, with or without an RTSTRUCT of its
study), mutated like the ``dicom-series`` inputs. Each file is sent the way a
peer's C-STORE arrives: the bytes after its File Meta Information (all of it
when there is none) are the request's data set, under the transfer syntax and
SOP class the meta names (Explicit VR Little Endian and CT Image Storage when
they are unreadable or not ones the node accepts -- association negotiation
would not let anything else through). They go, in file-name order, to the
node's own pynetdicom C-STORE handler (:meth:`promptseg.node.receiver.Receiver.on_store`)
inside one association, in a fresh node (storage and journal) per input. Then
the association ends, every series is complete, and the node's worker runs
each job as the running node would (:meth:`~promptseg.node.runner.DicomNode._run_job`):
rule, series checks, reading, ROI or box prompts, a fast stand-in model, the
RTSTRUCT writer.

Outcomes:

* *untyped* -- an exception escaped the C-STORE handler (pynetdicom would
  answer 0xC211 and log a traceback), or a job was quarantined as an
  "internal error" (an exception that is not a :class:`SeriesRejected`);
* *garbage* -- something was lost or misfiled: an instance acknowledged with
  success that is not in the storage byte for byte or not journaled, a job
  left in a non-final state, a quarantined job whose folder lacks its
  instances or a one-line reason, a refused instance not kept in
  ``quarantine/unidentified``, a result that is not an RTSTRUCT of the job's
  series, or a series the node segmented that the pydicom oracle contradicts;
* *typed* -- an instance refused with a status and a reason, or a series
  quarantined with a one-line reason;
* *accepted* -- every instance stored and every image series segmented.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import numpy as np

from promptseg.errors import PromptsegError
from promptseg.models.base import Prediction
from tests.fakes import ThresholdSegmenter

#: the box of the box-prompted rule, IJK pixels (inside the seeds' 24 x 20 slices and the real 512 x 512 CT slice)
BOX = [4, 3, 15, 12]
#: storage of the nodes, one per input (a tmpfs when there is one: every stored instance is fsynced)
_ROOT = Path("/dev/shm") if Path("/dev/shm").is_dir() else None


class NodeRefused(PromptsegError):
    """The node refused an instance or quarantined a series; the message lists the reasons."""


class NodeInternalError(Exception):
    """A job failed with an exception the node does not type (quarantined as an internal error)."""


class BoxMean(ThresholdSegmenter):
    """A fast, deterministic stand-in model: the voxels of the box at or above the box's mean (the threshold of
    tests/fakes.py finds nothing in a windowed CT's air)."""

    name = "box-mean"

    def decode(self, embedding, box=None, points=None, point_labels=None):
        image = embedding.features
        logits = np.full(image.shape, -100.0, np.float32)
        if box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            inside = image[max(0, y0):y1 + 1, max(0, x0):x1 + 1]
            if inside.size:
                logits[max(0, y0):y1 + 1, max(0, x0):x1 + 1] = inside - float(inside.mean()) + 0.5
        return Prediction(logits=logits, score=0.9)


def _config(root: Path):
    from promptseg.node import validate_config

    return validate_config({
        "node": {"ae_title": "PROMPTSEG", "host": "127.0.0.1", "port": 0, "storage": str(root / "store"),
                 "quiet_seconds": 0.01},
        "allowed_callers": [{"ae_title": "FUZZ_PEER"}],
        "rules": [
            {"name": "roi", "match": {"modality": ["MR"]}, "model": "fake",
             "prompts": [{"roi": "lesion", "label": 1}],
             "output": {"format": "rtstruct", "folder": str(root / "out")}},
            {"name": "box", "model": "fake", "prompts": [{"box": BOX, "slice": "middle", "label": 1, "name": "box"}],
             "output": {"format": "rtstruct", "folder": str(root / "out")}},
        ],
    })


def _as_sent(data: bytes):
    """``(data set bytes, transfer syntax, SOP class UID, SOP instance UID)`` of a peer's C-STORE of ``data``."""
    from pydicom.filereader import _read_file_meta_info
    from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
    from pydicom.uid import ExplicitVRLittleEndian, UID

    syntax, sop_class, sop_uid, start = ExplicitVRLittleEndian, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", 0
    if data[128:132] == b"DICM":
        stream = io.BytesIO(data)
        stream.seek(132)
        try:
            meta = _read_file_meta_info(stream)
            start = stream.tell()
            syntax = str(meta.get("TransferSyntaxUID", syntax)).strip("\x00 ")
            sop_class = str(meta.get("MediaStorageSOPClassUID", sop_class)).strip("\x00 ")
            sop_uid = str(meta.get("MediaStorageSOPInstanceUID", sop_uid)).strip("\x00 ")
        except Exception:  # noqa: BLE001 - an unreadable meta: the peer sends what follows the preamble
            start = 132
    if syntax not in ALL_TRANSFER_SYNTAXES:
        syntax = ExplicitVRLittleEndian
    if sop_class not in {c.abstract_syntax for c in AllStoragePresentationContexts}:
        sop_class = "1.2.840.10008.5.1.4.1.1.2"
    if not UID(sop_uid).is_valid:
        sop_uid = "1.2.3.4"
    return data[start:], UID(syntax), UID(sop_class), UID(sop_uid)


def _store_event(association, data: bytes, message_id: int):
    """A pynetdicom C-STORE event carrying ``data`` as a peer sends it."""
    from pynetdicom import evt
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.events import Event
    from pynetdicom.presentation import PresentationContextTuple

    dataset, syntax, sop_class, sop_uid = _as_sent(data)
    request = C_STORE()
    request.MessageID = message_id
    request.AffectedSOPClassUID = sop_class
    request.AffectedSOPInstanceUID = sop_uid
    request.Priority = 2
    request.DataSet = io.BytesIO(dataset)
    context = PresentationContextTuple(1, sop_class, syntax)
    return Event(association, evt.EVT_C_STORE, {"request": request, "context": context})


def _one_line(text: str) -> bool:
    return bool(text.strip()) and "\n" not in text and "\r" not in text


def _check_result(path: Path, series_uid: str) -> Optional[str]:
    import pydicom

    try:
        result = pydicom.dcmread(str(path))
        referenced = {str(s.SeriesInstanceUID)
                      for f in result.ReferencedFrameOfReferenceSequence
                      for st in f.RTReferencedStudySequence for s in st.RTReferencedSeriesSequence}
        modality = str(result.Modality)
    except Exception as error:  # noqa: BLE001 - the oracle judges, it does not crash
        return f"the result {path.name} is not a readable RTSTRUCT ({type(error).__name__}: {error})"
    if modality != "RTSTRUCT" or referenced != {series_uid}:
        return f"the result is a {modality} referring to series {sorted(referenced)}, not to {series_uid}"
    return None


def call(path: Path, labels: bool) -> Optional[str]:
    """Send the input's files to a fresh node and run its jobs; see the module docstring for the outcome."""
    from promptseg.node import DicomNode
    from promptseg.node.journal import DONE, KEPT, QUARANTINED, QUEUED, RECEIVING, SENDING
    from promptseg.node.quarantine import read_reason
    from promptseg.node.receiver import SUCCESS

    from .oracle import dicom_series_problem

    files = sorted(p for p in path.parent.rglob("*") if p.is_file())
    root = Path(tempfile.mkdtemp(prefix="promptseg-fuzz-node-", dir=_ROOT))
    judged: list[str] = []

    def read_and_judge(folder: Path):
        """The node's series reader, with the oracle's verdict on what it read (the work folder still exists)."""
        from promptseg.node.processor import read_series

        volume = read_series(folder)
        problem = dicom_series_problem(folder, volume)
        if problem:
            judged.append(f"series segmented although {problem}")
        return volume

    try:
        node = DicomNode(_config(root), segmenter_factory=lambda name, checkpoint: BoxMean(),
                         reader=read_and_judge)
        try:
            association = SimpleNamespace(requestor=SimpleNamespace(ae_title="FUZZ_PEER", address="127.0.0.1"))
            opened = SimpleNamespace(assoc=association)
            node.receiver.on_accepted(opened)
            refused, stored = [], []
            for number, file in enumerate(files, 1):
                event = _store_event(association, file.read_bytes(), number)
                status = node.receiver.on_store(event)
                if status == SUCCESS:
                    stored.append(event.encoded_dataset())
                else:
                    refused.append(f"{file.name}: status 0x{status:04X}")
            node.receiver.on_ended(opened, "released")
            problem = _check_stored(node, stored, refused)
            if problem:
                return problem
            reasons = []
            for job in node.journal.jobs(RECEIVING):
                state = KEPT if (job.modality or "").upper() == "RTSTRUCT" else QUEUED
                node.journal.transition(job.id, state, "fuzz: complete", expect=RECEIVING)
            node._worker_loop()
            for job in node.journal.jobs():
                if job.state == QUARANTINED:
                    reason = read_reason(node.storage.quarantine / f"{job.id}-{_safe(job.series_uid)}")
                    if reason.startswith("internal error"):
                        raise NodeInternalError(f"job {job.id}: {reason}")
                    problem = _check_quarantined(node, job, reason)
                    if problem:
                        return problem
                    reasons.append(reason)
                elif job.state in (SENDING, DONE):
                    problem = _check_result(Path(job.result_path), job.series_uid)
                    if problem:
                        return problem
                elif job.state != KEPT:
                    return f"job {job.id} left in state {job.state}"
            if judged:
                return judged[0]
            if refused or reasons:
                raise NodeRefused("; ".join(refused + reasons))
            return None
        finally:
            node.journal.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _safe(uid: str) -> str:
    from promptseg.node.storage import safe_name

    return safe_name(uid)


def _check_stored(node, stored: list[bytes], refused: list[str]) -> Optional[str]:
    """Every acknowledged instance in the storage byte for byte and journaled; every refusal kept with a reason."""
    import pydicom

    on_disk = {p.read_bytes(): p for p in node.storage.instances.glob("*/*.dcm")}
    for data in stored:
        if data in on_disk:
            if str(on_disk[data]) not in node.journal.known_paths():
                return f"{on_disk[data].name} stored but not journaled"
            continue
        try:  # a second instance with a SOP Instance UID already stored is acknowledged and not kept
            uid = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID).strip()
        except Exception:  # noqa: BLE001
            uid = None
        if uid is None or not node.journal.has_instance(uid):
            return f"an instance acknowledged with success is not in the storage (SOP Instance UID {uid})"
    kept = sorted((node.storage.quarantine / "unidentified").glob("*.reason.txt"))
    unstored = [r for r in refused if r.endswith("0xC210")]
    if len(kept) != len(unstored):
        return f"{len(unstored)} instance(s) refused as not understood, {len(kept)} kept in quarantine/unidentified"
    for reason_file in kept:
        first = reason_file.read_text(encoding="utf-8").split("\ncalling AE: ")[0]
        if not _one_line(first) or not reason_file.with_name(reason_file.name.replace(".reason.txt", ".dcm")).is_file():
            return f"quarantined instance {reason_file.name}: reason {first[:200]!r} is not one line, or its file is missing"
        refused.append(first.removeprefix("reason: "))
    return None


def _check_quarantined(node, job, reason: str) -> Optional[str]:
    folder = node.storage.quarantine / f"{job.id}-{_safe(job.series_uid)}"
    text = (folder / "reason.txt").read_text(encoding="utf-8")
    if not _one_line(reason) or not text.split("\n", 1)[1].startswith("job: "):
        return f"job {job.id}: the quarantine reason is not one line: {text[:300]!r}"
    missing = [p.name for p in node.journal.job_instances(job) if not (folder / p.name).is_file()]
    if missing:
        return f"job {job.id} quarantined without {len(missing)} of its instances"
    return None
