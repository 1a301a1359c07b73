"""The node's journal: every association, instance, job state and delivery, in SQLite (WAL, synchronous=FULL).

A job is one version of one series. Its states::

    receiving -> queued -> processing -> sending -> done
                                     \\-> quarantined          (cannot be processed; reason file)
                                                 \\-> failed   (a destination refused every attempt)
    receiving -> kept                                          (an RTSTRUCT: context for prompts, nothing to do)

Every change is one committed transaction, so after a crash the journal says
exactly what was received, what is pending and what was delivered where. Instances
arriving for a series whose job already left ``receiving`` start a new job (the
next *version* of the series), which processes all instances of the series
received so far; earlier results are never changed.

Thread safety: one connection guarded by a lock; every public method is atomic.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

RECEIVING, QUEUED, PROCESSING, SENDING, DONE = "receiving", "queued", "processing", "sending", "done"
QUARANTINED, FAILED, KEPT = "quarantined", "failed", "kept"
FINAL_STATES = (DONE, QUARANTINED, FAILED, KEPT)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS associations(
    id INTEGER PRIMARY KEY, calling_ae TEXT, address TEXT, opened_at REAL, closed_at REAL,
    outcome TEXT, reason TEXT, instances INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0, refused_instances INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS jobs(
    id INTEGER PRIMARY KEY, series_uid TEXT NOT NULL, study_uid TEXT, version INTEGER NOT NULL,
    state TEXT NOT NULL, modality TEXT, series_description TEXT, body_part TEXT, calling_ae TEXT,
    created_at REAL NOT NULL, last_instance_at REAL NOT NULL, updated_at REAL NOT NULL,
    rule TEXT, reason TEXT, result_path TEXT, UNIQUE(series_uid, version));
CREATE TABLE IF NOT EXISTS instances(
    sop_uid TEXT PRIMARY KEY, series_uid TEXT NOT NULL, study_uid TEXT, modality TEXT,
    sop_class_uid TEXT, job_id INTEGER NOT NULL REFERENCES jobs(id), path TEXT NOT NULL,
    size INTEGER NOT NULL, received_at REAL NOT NULL, association_id INTEGER);
CREATE TABLE IF NOT EXISTS transitions(
    job_id INTEGER NOT NULL REFERENCES jobs(id), at REAL NOT NULL, state TEXT NOT NULL, detail TEXT);
CREATE TABLE IF NOT EXISTS deliveries(
    job_id INTEGER NOT NULL REFERENCES jobs(id), destination TEXT NOT NULL, state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL, last_error TEXT, sent_at REAL,
    PRIMARY KEY(job_id, destination));
CREATE INDEX IF NOT EXISTS instances_series ON instances(series_uid);
CREATE INDEX IF NOT EXISTS instances_study ON instances(study_uid, modality);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
"""


@dataclass(frozen=True)
class InstanceInfo:
    """What the journal keeps of a received instance (no patient data)."""

    sop_uid: str
    series_uid: str
    study_uid: Optional[str]
    modality: Optional[str]
    sop_class_uid: Optional[str]
    series_description: Optional[str] = None
    body_part: Optional[str] = None


@dataclass(frozen=True)
class Job:
    id: int
    series_uid: str
    study_uid: Optional[str]
    version: int
    state: str
    modality: Optional[str]
    series_description: Optional[str]
    body_part: Optional[str]
    calling_ae: Optional[str]
    last_instance_at: float
    rule: Optional[str]
    reason: Optional[str]
    result_path: Optional[str]


@dataclass(frozen=True)
class Delivery:
    job_id: int
    destination: str
    state: str
    attempts: int
    next_attempt_at: float
    last_error: Optional[str]


@dataclass(frozen=True)
class Added:
    """Outcome of :meth:`Journal.add_instance`: the job it joined, whether that job is new, and whether the
    series had an earlier job that had already left ``receiving`` (a late instance)."""

    job_id: int
    new_job: bool
    late: bool


class Journal:
    """The SQLite journal at ``path`` (created if missing)."""

    def __init__(self, path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- plumbing ----------------------------------------------------------
    def _tx(self):
        return _Transaction(self._db, self._lock)

    def _rows(self, sql: str, args: Iterable = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    # -- associations ------------------------------------------------------
    def open_association(self, calling_ae: str, address: str, now: Optional[float] = None) -> int:
        with self._tx() as db:
            cur = db.execute("INSERT INTO associations(calling_ae, address, opened_at, outcome) VALUES (?, ?, ?, 'open')",
                             (calling_ae, address, now or time.time()))
            return int(cur.lastrowid)

    def refuse_association(self, calling_ae: str, address: str, reason: str) -> int:
        now = time.time()
        with self._tx() as db:
            cur = db.execute("INSERT INTO associations(calling_ae, address, opened_at, closed_at, outcome, reason) "
                             "VALUES (?, ?, ?, ?, 'refused', ?)", (calling_ae, address, now, now, reason))
            return int(cur.lastrowid)

    def close_association(self, assoc_id: int, outcome: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE associations SET closed_at=?, outcome=? WHERE id=? AND outcome='open'",
                       (time.time(), outcome, assoc_id))

    def count_association(self, assoc_id: int, field: str, size: int = 0) -> None:
        """Add one to ``instances``, ``duplicates`` or ``refused_instances`` (and ``size`` bytes received)."""
        if field not in ("instances", "duplicates", "refused_instances"):
            raise ValueError(field)
        with self._tx() as db:
            db.execute(f"UPDATE associations SET {field}={field}+1, bytes=bytes+? WHERE id=?", (size, assoc_id))

    def associations(self) -> list[sqlite3.Row]:
        return self._rows("SELECT * FROM associations ORDER BY id")

    def close_open_associations(self) -> int:
        """Mark associations left open by a crash as ``lost`` (at start-up); returns how many."""
        with self._tx() as db:
            return db.execute("UPDATE associations SET outcome='lost', closed_at=? WHERE outcome='open'",
                              (time.time(),)).rowcount

    # -- instances ---------------------------------------------------------
    def has_instance(self, sop_uid: str) -> bool:
        return bool(self._rows("SELECT 1 FROM instances WHERE sop_uid=?", (sop_uid,)))

    def add_instance(self, info: InstanceInfo, path: Path, size: int, calling_ae: Optional[str],
                     association_id: Optional[int], now: Optional[float] = None) -> Optional[Added]:
        """Record a received instance (already durable at ``path``) and attach it to its series' open job;
        count it for its association.

        Returns None if the SOP Instance UID was already recorded (a duplicate: only the association's
        duplicate count changes).
        """
        now = now or time.time()
        with self._tx() as db:
            if db.execute("SELECT 1 FROM instances WHERE sop_uid=?", (info.sop_uid,)).fetchone():
                db.execute("UPDATE associations SET duplicates=duplicates+1, bytes=bytes+? WHERE id=?", (size, association_id))
                return None
            latest = db.execute("SELECT id, state, version FROM jobs WHERE series_uid=? ORDER BY version DESC LIMIT 1",
                                (info.series_uid,)).fetchone()
            if latest is not None and latest["state"] == RECEIVING:
                job_id, new_job = int(latest["id"]), False
                db.execute("UPDATE jobs SET last_instance_at=?, updated_at=? WHERE id=?", (now, now, job_id))
            else:
                version = 1 if latest is None else int(latest["version"]) + 1
                cur = db.execute(
                    "INSERT INTO jobs(series_uid, study_uid, version, state, modality, series_description, body_part, "
                    "calling_ae, created_at, last_instance_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (info.series_uid, info.study_uid, version, RECEIVING, info.modality, info.series_description,
                     info.body_part, calling_ae, now, now, now))
                job_id, new_job = int(cur.lastrowid), True
                detail = f"version {version}" + (f" (series had job {latest['id']}, {latest['state']})" if latest else "")
                db.execute("INSERT INTO transitions(job_id, at, state, detail) VALUES (?,?,?,?)",
                           (job_id, now, RECEIVING, detail))
            db.execute("INSERT INTO instances(sop_uid, series_uid, study_uid, modality, sop_class_uid, job_id, path, size, "
                       "received_at, association_id) VALUES (?,?,?,?,?,?,?,?,?,?)",
                       (info.sop_uid, info.series_uid, info.study_uid, info.modality, info.sop_class_uid, job_id,
                        str(path), size, now, association_id))
            db.execute("UPDATE associations SET instances=instances+1, bytes=bytes+? WHERE id=?", (size, association_id))
            return Added(job_id=job_id, new_job=new_job, late=latest is not None and latest["state"] != RECEIVING)

    def known_paths(self) -> set[str]:
        return {row["path"] for row in self._rows("SELECT path FROM instances")}

    def job_instances(self, job: Job) -> list[Path]:
        """Files of every instance of ``job``'s series received up to this job (all earlier versions included)."""
        rows = self._rows("SELECT path FROM instances WHERE series_uid=? AND job_id<=? ORDER BY received_at, sop_uid",
                          (job.series_uid, job.id))
        return [Path(row["path"]) for row in rows]

    def study_instances(self, study_uid: Optional[str], modality: str) -> list[Path]:
        """Files of the instances of one modality (e.g. RTSTRUCT) received for a study."""
        if study_uid is None:
            return []
        rows = self._rows("SELECT path FROM instances WHERE study_uid=? AND modality=? ORDER BY received_at",
                          (study_uid, modality))
        return [Path(row["path"]) for row in rows]

    # -- jobs --------------------------------------------------------------
    def job(self, job_id: int) -> Job:
        (row,) = self._rows("SELECT * FROM jobs WHERE id=?", (job_id,))
        return _job(row)

    def jobs(self, state: Optional[str] = None) -> list[Job]:
        if state is None:
            return [_job(r) for r in self._rows("SELECT * FROM jobs ORDER BY id")]
        return [_job(r) for r in self._rows("SELECT * FROM jobs WHERE state=? ORDER BY id", (state,))]

    def transition(self, job_id: int, state: str, detail: Optional[str] = None, *,
                   expect: Optional[str] = None, quiet_since: Optional[float] = None, **fields) -> bool:
        """Move a job to ``state`` (only from ``expect`` if given, and only if its last instance arrived
        at or before ``quiet_since`` if given), setting ``fields`` (rule, reason, result_path).

        Returns False (and changes nothing) when a condition does not hold.
        """
        allowed = {"rule", "reason", "result_path"}
        if set(fields) - allowed:
            raise ValueError(f"unknown job fields {set(fields) - allowed}")
        now = time.time()
        sets = ", ".join([f"{key}=?" for key in fields] + ["state=?", "updated_at=?"])
        where, args = "id=?", [job_id]
        if expect is not None:
            where += " AND state=?"
            args.append(expect)
        if quiet_since is not None:
            where += " AND last_instance_at<=?"
            args.append(quiet_since)
        with self._tx() as db:
            changed = db.execute(f"UPDATE jobs SET {sets} WHERE {where}", [*fields.values(), state, now, *args]).rowcount
            if changed:
                db.execute("INSERT INTO transitions(job_id, at, state, detail) VALUES (?,?,?,?)", (job_id, now, state, detail))
            return bool(changed)

    def transitions(self, job_id: int) -> list[tuple[str, Optional[str]]]:
        return [(r["state"], r["detail"]) for r in self._rows("SELECT * FROM transitions WHERE job_id=? ORDER BY rowid", (job_id,))]

    def next_queued(self) -> Optional[Job]:
        """Take the oldest queued job: it moves to ``processing`` in the same transaction."""
        with self._tx() as db:
            row = db.execute("SELECT * FROM jobs WHERE state=? ORDER BY id LIMIT 1", (QUEUED,)).fetchone()
            if row is None:
                return None
            now = time.time()
            db.execute("UPDATE jobs SET state=?, updated_at=? WHERE id=?", (PROCESSING, now, row["id"]))
            db.execute("INSERT INTO transitions(job_id, at, state, detail) VALUES (?,?,?,?)", (row["id"], now, PROCESSING, None))
        return self.job(int(row["id"]))

    def requeue_interrupted(self) -> list[int]:
        """Jobs left in ``processing`` by a crash go back to ``queued`` (at start-up); returns their ids."""
        ids = [job.id for job in self.jobs(PROCESSING)]
        for job_id in ids:
            self.transition(job_id, QUEUED, "processing interrupted (node restarted)", expect=PROCESSING)
        return ids

    # -- deliveries --------------------------------------------------------
    def start_sending(self, job_id: int, result_path: Path, destinations: list[str], rule: str) -> None:
        """Record the job's result file and one pending delivery per destination, in one transaction."""
        now = time.time()
        with self._tx() as db:
            db.execute("UPDATE jobs SET state=?, result_path=?, rule=?, updated_at=? WHERE id=?",
                       (SENDING, str(result_path), rule, now, job_id))
            db.execute("INSERT INTO transitions(job_id, at, state, detail) VALUES (?,?,?,?)",
                       (job_id, now, SENDING, ", ".join(destinations)))
            for name in destinations:
                db.execute("INSERT OR IGNORE INTO deliveries(job_id, destination, state, next_attempt_at) VALUES (?,?,?,?)",
                           (job_id, name, "pending", now))

    def due_deliveries(self, now: Optional[float] = None) -> list[Delivery]:
        rows = self._rows("SELECT * FROM deliveries WHERE state='pending' AND next_attempt_at<=? ORDER BY next_attempt_at, job_id",
                          (now or time.time(),))
        return [_delivery(r) for r in rows]

    def deliveries(self, job_id: Optional[int] = None) -> list[Delivery]:
        if job_id is None:
            return [_delivery(r) for r in self._rows("SELECT * FROM deliveries ORDER BY job_id, destination")]
        return [_delivery(r) for r in self._rows("SELECT * FROM deliveries WHERE job_id=? ORDER BY destination", (job_id,))]

    def delivery_sent(self, job_id: int, destination: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE deliveries SET state='sent', attempts=attempts+1, sent_at=?, last_error=NULL "
                       "WHERE job_id=? AND destination=?", (time.time(), job_id, destination))

    def delivery_failed(self, job_id: int, destination: str, error: str, retry_at: Optional[float]) -> None:
        """Count a failed attempt; ``retry_at`` None gives up on this destination."""
        with self._tx() as db:
            if retry_at is None:
                db.execute("UPDATE deliveries SET state='failed', attempts=attempts+1, last_error=? WHERE job_id=? AND destination=?",
                           (error, job_id, destination))
            else:
                db.execute("UPDATE deliveries SET attempts=attempts+1, last_error=?, next_attempt_at=? "
                           "WHERE job_id=? AND destination=?", (error, retry_at, job_id, destination))

    def settle(self, job_id: int) -> Optional[str]:
        """A ``sending`` job whose deliveries are over becomes ``done`` (all sent) or ``failed`` (one gave up).

        Returns the new state, or None while a delivery is pending.
        """
        with self._tx() as db:
            states = [r["state"] for r in db.execute("SELECT state FROM deliveries WHERE job_id=?", (job_id,))]
            if "pending" in states:
                return None
            state = FAILED if "failed" in states else DONE
            now = time.time()
            changed = db.execute("UPDATE jobs SET state=?, updated_at=? WHERE id=? AND state=?",
                                 (state, now, job_id, SENDING)).rowcount
            if not changed:
                return None
            db.execute("INSERT INTO transitions(job_id, at, state, detail) VALUES (?,?,?,?)", (job_id, now, state, None))
            return state


class _Transaction:
    """``with`` block: BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error), under the journal's lock."""

    def __init__(self, db: sqlite3.Connection, lock: threading.RLock) -> None:
        self._db, self._lock = db, lock

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise
        return self._db

    def __exit__(self, kind, value, traceback) -> None:
        try:
            self._db.execute("ROLLBACK" if kind else "COMMIT")
        finally:
            self._lock.release()


def _job(row: sqlite3.Row) -> Job:
    return Job(id=int(row["id"]), series_uid=row["series_uid"], study_uid=row["study_uid"], version=int(row["version"]),
               state=row["state"], modality=row["modality"], series_description=row["series_description"],
               body_part=row["body_part"], calling_ae=row["calling_ae"], last_instance_at=float(row["last_instance_at"]),
               rule=row["rule"], reason=row["reason"], result_path=row["result_path"])


def _delivery(row: sqlite3.Row) -> Delivery:
    return Delivery(job_id=int(row["job_id"]), destination=row["destination"], state=row["state"],
                    attempts=int(row["attempts"]), next_attempt_at=float(row["next_attempt_at"]),
                    last_error=row["last_error"])
