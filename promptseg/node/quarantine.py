"""The quarantine folder: series the node could not process, each with a ``reason.txt``.

``quarantine/<job id>-<series UID>/`` holds the series' instances (hard links to the
received files) and ``reason.txt``, whose first line is ``reason: <one line>``, followed
by the job's facts (no patient data). ``quarantine/unidentified/`` holds instances whose
UIDs were missing or unusable, each ``<name>.dcm`` next to ``<name>.reason.txt``.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Sequence

from .journal import Job
from .storage import Storage, link_or_copy, safe_name, write_durable


def _stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def quarantine_job(storage: Storage, job: Job, files: Sequence[Path], reason: str) -> Path:
    """Put ``job``'s instance files and a reason file into its quarantine folder; returns the folder."""
    folder = storage.quarantine / f"{job.id}-{safe_name(job.series_uid)}"
    folder.mkdir(parents=True, exist_ok=True)
    for path in files:
        if Path(path).is_file():
            link_or_copy(Path(path), folder / Path(path).name)
    lines = [
        f"reason: {reason}",
        f"job: {job.id} (version {job.version} of the series)",
        f"series instance UID: {job.series_uid}",
        f"study instance UID: {job.study_uid or '?'}",
        f"modality: {job.modality or '?'}",
        f"calling AE: {job.calling_ae or '?'}",
        f"instances: {len(files)}",
        f"quarantined at: {_stamp()}",
    ]
    write_durable(folder / "reason.txt", ("\n".join(lines) + "\n").encode("utf-8"))
    return folder


def quarantine_instance(storage: Storage, data: bytes, reason: str, calling_ae: str) -> Path:
    """Keep an instance that cannot be filed under a series; returns its path."""
    folder = storage.quarantine / "unidentified"
    name = f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"
    write_durable(folder / f"{name}.dcm", data)
    text = f"reason: {reason}\ncalling AE: {calling_ae}\nquarantined at: {_stamp()}\n"
    write_durable(folder / f"{name}.reason.txt", text.encode("utf-8"))
    return folder / f"{name}.dcm"


def read_reason(folder: Path) -> str:
    """The one-line reason of a quarantined series folder."""
    first = (Path(folder) / "reason.txt").read_text(encoding="utf-8").splitlines()[0]
    return first.removeprefix("reason: ")
