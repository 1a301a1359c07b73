"""The server's open sessions and its shared models: create, look up, expire, close."""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import ModelError, PromptsegError
from ..io.common import printable
from ..session import EmbeddingCache, Session, SharedModel
from ..volume import Volume
from .settings import Settings

#: how many ids of expired sessions are remembered (to say "expired" rather than "unknown")
_EXPIRED_MEMORY = 1000


class SessionGone(PromptsegError):
    """No such session (HTTP 404)."""


class TooManySessions(PromptsegError):
    """The server holds its maximum number of sessions (HTTP 429)."""


@dataclass
class Entry:
    """A session and what the server keeps beside it."""

    id: str
    session: Session
    source: str
    model: str
    last_used: float = field(default_factory=time.monotonic)
    image_bytes: Optional[bytes] = None
    reference: Optional[Volume] = None
    reference_source: Optional[str] = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class SessionStore:
    """Sessions by id, one :class:`SharedModel` per model name, one embedding cache for all."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cache = EmbeddingCache(settings.cache_bytes, settings.cache_dir)
        self._sessions: dict[str, Entry] = {}
        self._expired: OrderedDict[str, str] = OrderedDict()
        self._models: dict[str, SharedModel] = {}
        self._lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._tmp = Path(tempfile.mkdtemp(prefix="promptseg-serve-"))
        self.upload_dir = self._tmp / "uploads"
        self.upload_dir.mkdir()
        self.output_dir = settings.output_dir or (self._tmp / "exports")
        self.output_dir.mkdir(parents=True, exist_ok=True)

    # -- models --------------------------------------------------------------
    def model(self, name: Optional[str]) -> SharedModel:
        """The shared model ``name`` (default: the first allowed), built on first use."""
        name = name or self.settings.models[0]
        if name not in self.settings.models:
            raise ModelError(f"model {name!r} is not served here; available: {', '.join(self.settings.models)}")
        with self._model_lock:
            if name not in self._models:
                factory = self.settings.segmenter_factory
                if factory is not None:
                    segmenter = factory(name)
                else:
                    from ..models import build_segmenter

                    segmenter = build_segmenter(name, checkpoint=self.settings.checkpoint, device=self.settings.device,
                                                runtime=self.settings.runtime)
                self._models[name] = SharedModel(segmenter)
            return self._models[name]

    def warm_up(self) -> None:
        """Build the default model and run it once (encoder and decoder runtimes are built on first use),
        so the first prompt costs one encoder pass only."""
        import numpy as np

        model = self.model(None)
        embedding = model.embed(np.zeros((64, 64), dtype=np.uint8))
        model.decode(embedding, box=(8, 8, 40, 40))
        model.decode(embedding, box=(8, 8, 40, 40), interactive=True)  # its precision gate runs once per machine

    # -- sessions ------------------------------------------------------------------
    def open(self, volume: Volume, source: str, model: Optional[str], **options) -> Entry:
        self.expire()
        with self._lock:
            if len(self._sessions) >= self.settings.max_sessions:
                raise TooManySessions(
                    f"the server already holds {self.settings.max_sessions} sessions: close one (DELETE) or wait "
                    f"until idle ones expire ({self.settings.idle_timeout:g} s)"
                )
        shared = self.model(model)
        session = Session(volume, shared, cache=self.cache, prefetch=self.settings.prefetch, **options)
        entry = Entry(id=secrets.token_urlsafe(12), session=session, source=source, model=shared.name)
        with self._lock:
            self._sessions[entry.id] = entry
        return entry

    def get(self, session_id: str) -> Entry:
        self.expire()
        with self._lock:
            entry = self._sessions.get(session_id)
            if entry is None:
                why = self._expired.get(session_id)
                if why is not None:
                    raise SessionGone(f"session {session_id} {why}: open the scan again")
                raise SessionGone(f"no session {printable(session_id, 64)} (it may have expired or the server restarted): "
                                  "open the scan again")
            entry.last_used = time.monotonic()
            return entry

    def close(self, session_id: str) -> None:
        with self._lock:
            entry = self._sessions.pop(session_id, None)
            if entry is None:
                raise SessionGone(f"no session {printable(session_id, 64)}")
            self._remember(session_id, "was closed")
        entry.session.close()

    def expire(self) -> list[str]:
        """Close the sessions idle longer than the timeout (a running propagation counts as activity)."""
        now = time.monotonic()
        gone = []
        with self._lock:
            for sid, entry in list(self._sessions.items()):
                if entry.session.is_propagating():
                    entry.last_used = now
                elif now - entry.last_used > self.settings.idle_timeout:
                    gone.append(self._sessions.pop(sid))
                    self._remember(sid, f"expired after {self.settings.idle_timeout:g} s without use")
        for entry in gone:
            entry.session.close()
        return [e.id for e in gone]

    def _remember(self, session_id: str, why: str) -> None:
        self._expired[session_id] = why
        while len(self._expired) > _EXPIRED_MEMORY:
            self._expired.popitem(last=False)

    def __len__(self) -> int:
        return len(self._sessions)

    def shutdown(self) -> None:
        with self._lock:
            entries = list(self._sessions.values())
            self._sessions.clear()
        for entry in entries:
            entry.session.close()
        shutil.rmtree(self._tmp, ignore_errors=True)
