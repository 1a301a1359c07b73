"""When is a series complete? DICOM has no "end of series" message, so (as Orthanc's stable age and
mercure's series trigger do) the node waits: a series is complete when every association that sent
instances of it has ended (released or aborted) **and** no new instance arrived for ``quiet_seconds``
-- and the same holds for the other series of its study still arriving (so that an RTSTRUCT sent with
the images is there for ROI prompts).

:class:`Completion` keeps, in memory, which open association sent which series (after a restart no
association is open, so only the quiet period counts). The journal keeps the time of each series' last
instance.
"""

from __future__ import annotations

import threading
from typing import Hashable, Iterable

from .journal import Job


class Completion:
    """Tracks the series each open association is sending."""

    def __init__(self, quiet_seconds: float) -> None:
        self.quiet_seconds = float(quiet_seconds)
        self._lock = threading.Lock()
        self._open: dict[Hashable, set[str]] = {}

    def opened(self, association: Hashable) -> None:
        with self._lock:
            self._open.setdefault(association, set())

    def sending(self, association: Hashable, series_uid: str) -> None:
        """Note that ``association`` sends an instance of ``series_uid`` (call before journaling it)."""
        with self._lock:
            self._open.setdefault(association, set()).add(series_uid)

    def ended(self, association: Hashable) -> None:
        """The association was released, aborted or its connection closed."""
        with self._lock:
            self._open.pop(association, None)

    def busy_series(self) -> set[str]:
        with self._lock:
            return set().union(*self._open.values()) if self._open else set()

    def due(self, receiving: Iterable[Job], now: float) -> list[Job]:
        """The jobs among ``receiving`` (every job in that state) whose series is complete at ``now`` (seconds
        since the epoch): the series is quiet and so is every other series of its study that is still
        receiving -- an RTSTRUCT sent with the study is there when its image series is processed."""
        busy = self.busy_series()
        receiving = list(receiving)
        quiet = {job.id: job.series_uid not in busy and now - job.last_instance_at >= self.quiet_seconds
                 for job in receiving}
        unsettled = {job.study_uid for job in receiving if not quiet[job.id] and job.study_uid}
        return [job for job in receiving if quiet[job.id] and job.study_uid not in unsettled]
