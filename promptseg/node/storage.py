"""The node's folders and durable writes.

Layout under ``node.storage``::

    journal.sqlite3                      the journal (see journal.py)
    instances/<series UID>/<SOP UID>.dcm every instance received, as received
    work/<job id>/                       a job's input series (hard links), while it is processed
    results/<job id>/<format>.dcm        a job's RTSTRUCT / SEG, kept until it is delivered
    quarantine/<job id>-<series UID>/    series that could not be processed, with reason.txt
    quarantine/unidentified/             instances without usable UIDs, with a reason file each

Durable means: written to a temporary file in the same folder, flushed with
fsync, renamed over the final name, and the folder fsynced -- after
:func:`write_durable` returns the file survives a crash or power loss
(:mod:`promptseg.io.atomic` gives atomicity but does not fsync).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
from pathlib import Path

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
TEMP_PREFIX = ".tmp-"


def safe_name(uid: str) -> str:
    """A file name for a DICOM UID: the UID itself when it is well-formed, else a hash of it."""
    uid = uid.strip()
    if _UID.match(uid) and len(uid) <= 64:
        return uid
    return "x" + hashlib.sha256(uid.encode("utf-8", "replace")).hexdigest()[:40]


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (temp + fsync + rename + folder fsync)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f"{TEMP_PREFIX}{secrets.token_hex(6)}-{path.name}"
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def copy_durable(source: Path, destination: Path) -> None:
    """Copy a file to ``destination`` atomically and durably."""
    write_durable(destination, Path(source).read_bytes())


def link_or_copy(source: Path, destination: Path) -> None:
    """Hard-link ``source`` as ``destination`` (a copy where links are impossible)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.unlink(missing_ok=True)
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


class Storage:
    """The folders of one node (created on first use)."""

    def __init__(self, root) -> None:
        self.root = Path(root)
        for folder in (self.instances, self.work, self.results, self.quarantine):
            folder.mkdir(parents=True, exist_ok=True)

    @property
    def journal(self) -> Path:
        return self.root / "journal.sqlite3"

    @property
    def instances(self) -> Path:
        return self.root / "instances"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    def instance_path(self, series_uid: str, sop_uid: str) -> Path:
        return self.instances / safe_name(series_uid) / f"{safe_name(sop_uid)}.dcm"

    def job_work(self, job_id: int) -> Path:
        return self.work / str(job_id)

    def result_path(self, job_id: int, fmt: str) -> Path:
        return self.results / str(job_id) / f"{fmt}.dcm"

    def remove_temporaries(self) -> int:
        """Delete half-written temporary files left by a crash; returns how many."""
        count = 0
        for path in list(self.instances.rglob(f"{TEMP_PREFIX}*")) + list(self.results.rglob(f"{TEMP_PREFIX}*")):
            path.unlink(missing_ok=True)
            count += 1
        return count

    def clear_work(self, job_id: int) -> None:
        shutil.rmtree(self.job_work(job_id), ignore_errors=True)
