"""One volume's slice embeddings: each slice encoded at most once, on demand, ahead of the user where useful.

:meth:`SliceEmbedder.get` returns slice ``z``'s embedding from the shared
:class:`~promptseg.session.cache.EmbeddingCache`, or encodes it now (an
interactive model call). :meth:`SliceEmbedder.focus` tells a background thread
which slice the user looks at; it then encodes that slice's neighbours, nearest
first, whenever the model is idle -- so the next prompt a slice away costs only
the decoder. Opening a scan encodes nothing.
"""

from __future__ import annotations

import threading
from typing import Optional

from ..models.base import Embedding
from .cache import EmbeddingCache, EmbeddingKey
from .model import SharedModel


class SliceEmbedder:
    """Embeddings of the slices of one normalised volume.

    Args:
        model: the shared model.
        images: ``(Z, H, W[, 3])`` uint8 slices (e.g.
            :class:`~promptseg.intensity.NormalizedSlices`), ``images[z]`` indexable.
        cache: where embeddings are kept (shared between sessions).
        volume_key, intensity_key: what identifies the voxels and their mapping to uint8.
        prefetch: how many slices on each side of the focus to encode in the background (0: none).
    """

    def __init__(
        self,
        model: SharedModel,
        images,
        cache: EmbeddingCache,
        volume_key: str,
        intensity_key: str,
        prefetch: int = 2,
    ) -> None:
        self.model, self.images, self.cache = model, images, cache
        self.depth = int(images.shape[0])
        self._key = (volume_key, model.key, intensity_key)
        self.prefetch = int(prefetch)
        #: slices this embedder ran the encoder on, in order (each once while the cache keeps it)
        self.encoded: list[int] = []
        self._inflight: dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._focus: Optional[int] = None
        self._closed = False
        self._worker: Optional[threading.Thread] = None

    def key(self, z: int) -> EmbeddingKey:
        return EmbeddingKey(*self._key, z=int(z))

    def is_embedded(self, z: int) -> bool:
        return self.key(z) in self.cache

    def get(self, z: int) -> Embedding:
        """Slice ``z``'s embedding; encodes it now (taking the model before background work) if needed."""
        return self._obtain(int(z), background=False)

    def focus(self, z: int) -> None:
        """The user looks at slice ``z``: pre-encode its neighbours in the background."""
        if self.prefetch <= 0 or self._closed:
            return
        with self._lock:
            self._focus = int(z)
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="promptseg-prefetch", daemon=True)
                self._worker.start()
            self._wake.notify_all()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the background thread (after at most the encoder pass it is in)."""
        with self._lock:
            self._closed = True
            self._wake.notify_all()
            worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)

    # -- internals -----------------------------------------------------------
    def _obtain(self, z: int, background: bool) -> Embedding:
        key = self.key(z)
        while True:
            embedding = self.cache.get(key)
            if embedding is not None:
                return embedding
            with self._lock:
                pending = self._inflight.get(z)
                if pending is None:
                    pending = self._inflight[z] = threading.Event()
                    mine = True
                else:
                    mine = False
            if not mine:  # another thread is encoding this slice: wait for it, then read the cache
                pending.wait()
                continue
            try:
                embedding = self.model.embed(self.images[z], background=background)
                self.cache.put(key, embedding)
                with self._lock:
                    self.encoded.append(z)
                return embedding
            finally:
                with self._lock:
                    del self._inflight[z]
                pending.set()

    def _next_wanted(self) -> Optional[int]:
        focus = self._focus
        if focus is None:
            return None
        for distance in range(0, self.prefetch + 1):
            for z in (focus + distance, focus - distance):
                if 0 <= z < self.depth and z not in self._inflight and self.key(z) not in self.cache:
                    return z
        return None

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._closed and (z := self._next_wanted()) is None:
                    self._wake.wait()
                if self._closed:
                    return
            try:
                self._obtain(z, background=True)
            except Exception:  # the interactive call on this slice will report the error
                with self._lock:
                    self._focus = None
