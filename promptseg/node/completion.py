"""When is a series complete? DICOM has no "end of series" message, so (as Orthanc's stable age and
mercure's series trigger do) the node waits: a series is complete when every association that sent
instances of it has ended (released or aborted) **and** no new instance arrived for ``quiet_seconds``.

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
        """The jobs among ``receiving`` whose series is complete at time ``now`` (seconds since the epoch)."""
        busy = self.busy_series()
        return [job for job in receiving
                if job.series_uid not in busy and now - job.last_instance_at >= self.quiet_seconds]
