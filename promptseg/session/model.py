"""One segmenter shared by several sessions and threads.

Model calls are serialised (a torch module is not meant to run two forward
passes at once from different threads, and on a CPU two concurrent passes only
slow each other down). Interactive calls -- a prompt, a propagation -- go
first; background pre-embedding runs only when nobody is waiting, one encoder
pass at a time, so it delays an interactive call by at most one pass.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

import numpy as np

from ..models.base import Embedding, Prediction, Segmenter


class SharedModel:
    """A :class:`~promptseg.models.base.Segmenter` behind a priority lock.

    Args:
        segmenter: the model (e.g. ``build_segmenter("litemedsam")``).
    """

    def __init__(self, segmenter: Segmenter) -> None:
        self.segmenter = segmenter
        self._cond = threading.Condition()
        self._busy = False
        self._waiting = 0

    @property
    def name(self) -> str:
        return self.segmenter.name

    @property
    def key(self) -> str:
        """What identifies the model's embeddings: name, weights digest and encoder runtime."""
        seg = self.segmenter
        digest = getattr(seg, "weights_digest", None) or seg.describe()
        return f"{seg.name}:{digest}:{getattr(seg, 'runtime_kind', '')}"

    @contextmanager
    def turn(self, background: bool = False) -> Iterator[Segmenter]:
        """Hold the model for one call; ``background`` calls wait until no interactive call is waiting."""
        with self._cond:
            if background:
                while self._busy or self._waiting:
                    self._cond.wait()
            else:
                self._waiting += 1
                try:
                    while self._busy:
                        self._cond.wait()
                finally:
                    self._waiting -= 1
            self._busy = True
        try:
            yield self.segmenter
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def embed(self, image: np.ndarray, background: bool = False) -> Embedding:
        with self.turn(background) as seg:
            return seg.embed(image)

    def decode(self, embedding: Embedding, box=None, points=None, point_labels=None,
               interactive: bool = False) -> Prediction:
        """One slice; ``interactive``: a person's prompt (:meth:`Segmenter.decode_interactive`)."""
        with self.turn() as seg:
            call = seg.decode_interactive if interactive else seg.decode
            return call(embedding, box=box, points=points, point_labels=point_labels)

    def view(self) -> Segmenter:
        """A :class:`Segmenter` whose calls take their turn here (for :func:`promptseg.inference.iter_chain`)."""
        return _LockedSegmenter(self)


class _LockedSegmenter(Segmenter):
    def __init__(self, shared: SharedModel) -> None:
        self._shared = shared
        self.name = shared.segmenter.name
        self.input_size = shared.segmenter.input_size

    def embed(self, image: np.ndarray) -> Embedding:
        return self._shared.embed(image)

    def decode(
        self,
        embedding: Embedding,
        box: Optional[Sequence[float]] = None,
        points: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
    ) -> Prediction:
        return self._shared.decode(embedding, box=box, points=points, point_labels=point_labels)

    def box_from_mask(self, mask: np.ndarray) -> tuple[float, float, float, float]:
        return self._shared.segmenter.box_from_mask(mask)

    def describe(self) -> str:
        return self._shared.segmenter.describe()
