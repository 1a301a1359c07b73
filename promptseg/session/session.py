"""An interactive segmentation session: one volume, one model, labels you prompt, propagate, correct and undo.

>>> import promptseg
>>> session = promptseg.Session(promptseg.load_volume("ct.nii.gz"))
>>> first = session.prompt(1, z=33, box=(206, 347, 229, 368))     # that slice's mask, now
>>> for event in session.propagate(1):                            # the other slices as they come
...     print(event)
>>> session.prompt(1, z=35, points=[(214, 360, 0)])                # a correction on a propagated slice
>>> list(session.propagate(1))                                     # re-propagates from slice 35 upwards
>>> session.undo()
>>> session.export("tumour.nii.gz")

Propagation is :func:`promptseg.inference.iter_chain` -- the chaining and stop
rule of :func:`promptseg.segment`, so a prompt gives the same masks here as
there -- fed by the session's embedding cache (each slice encoded at most once)
and reporting each slice as soon as it is computed.

Rules:

* :meth:`Session.prompt` on slice ``z`` segments that slice only. A new box
  replaces the slice's prompt; points add to it. Points on a slice that has a
  mask but no box refine that mask: the box is taken around it, as
  propagation does.
* :meth:`Session.propagate` starts from the label's last prompted slice. The
  first time (or from the first prompted slice again) it goes both ways;
  from another slice -- a correction -- it goes outward only, away from where
  the first propagation started, and leaves the other side as it was.
  Propagation replaces the masks it reaches and clears the slices beyond where
  it stops, except slices the user prompted or painted.
* Every change (prompt, propagation -- also a cancelled one --, painted slice,
  label removal) is one step of :meth:`Session.undo` / :meth:`Session.redo`.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np

from ..errors import PromptError, PromptsegError
from ..intensity import NormalizedSlices
from ..inference import ObjectResult, StopRule, compose_labels, iter_chain
from ..models.base import Embedding, Segmenter
from ..prompts import ObjectPrompt, Point, SlicePrompt, validate
from ..stops import Stop, StopReason
from ..volume import Volume
from .cache import EmbeddingCache, volume_digest
from .embedder import SliceEmbedder
from .labels import Label, default_color, edit_logits
from .model import SharedModel

#: how many steps undo keeps
HISTORY_LIMIT = 100


class SessionBusy(PromptsegError):
    """The label is being propagated; cancel that first."""


@dataclass
class SliceResult:
    """One slice of one label, just computed.

    Attributes:
        label, z: which label, which slice.
        mask: ``(H, W)`` bool, the label on that slice after overlaps with other
            labels are resolved.
        score: the model's predicted IoU (None for painted slices).
        source: ``"prompt"``, ``"propagation"`` or ``"edit"``.
    """

    label: int
    z: int
    mask: np.ndarray
    score: Optional[float]
    source: str


@dataclass
class PropagationDone:
    """The end of a propagation: which slices it set and why each direction stopped."""

    label: int
    start: int
    directions: tuple[str, ...]
    slices: list[int]
    stops: dict[str, Stop] = field(default_factory=dict)
    cancelled: bool = False


class _Cancelled(Exception):
    pass


class _SessionEmbeddings:
    """The session's slice embedder as the chain's embedding source: cached slices stay
    cached (``release`` keeps them), and a cancel is noticed before each encoder pass."""

    def __init__(self, embedder: SliceEmbedder, cancel: threading.Event) -> None:
        self.embedder, self.cancel = embedder, cancel
        self.encoded: list[int] = []

    def get(self, z: int) -> Embedding:
        if self.cancel.is_set():
            raise _Cancelled
        self.encoded.append(z)
        return self.embedder.get(z)

    def release(self, z: int) -> None:
        pass



PointLike = Union[Point, Sequence[float]]


class Session:
    """Interactive segmentation of one volume.

    Args:
        volume: the image.
        model: a :class:`SharedModel` (to share one model between sessions), a
            :class:`~promptseg.models.base.Segmenter`, or None for the bundled LiteMedSAM.
        modality, window: the model's intensity normalisation, as in :func:`promptseg.segment`.
        stop_rule: parameters of the automatic 3D stop.
        cache: embedding cache (share one between sessions; default: a private 1 GiB one).
        prefetch: slices on each side of the one in view to encode in the background.
    """

    def __init__(
        self,
        volume: Volume,
        model: Union[SharedModel, Segmenter, None] = None,
        *,
        modality: Optional[str] = None,
        window=None,
        stop_rule: Optional[StopRule] = None,
        cache: Optional[EmbeddingCache] = None,
        prefetch: int = 2,
    ) -> None:
        if model is None:
            from ..models import build_segmenter

            model = build_segmenter("litemedsam")
        self.model = model if isinstance(model, SharedModel) else SharedModel(model)
        self.volume = volume
        self.images = NormalizedSlices.of(volume, modality=modality, window=window)
        self.stop_rule = stop_rule or StopRule()
        self.cache = cache if cache is not None else EmbeddingCache()
        mapping = self.images.mapping
        self.embedder = SliceEmbedder(
            self.model,
            self.images,
            self.cache,
            volume_key=volume_digest(volume.array),
            intensity_key=f"{mapping.lower!r},{mapping.upper!r},{mapping.zero_nonpositive!r}",
            prefetch=prefetch,
        )
        self._labels: dict[int, Label] = {}
        self._undo: list[tuple[int, Optional[Label], Optional[Label]]] = []
        self._redo: list[tuple[int, Optional[Label], Optional[Label]]] = []
        self._lock = threading.RLock()
        self._running: dict[int, threading.Event] = {}

    # -- geometry ------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """``(Z, H, W)``."""
        return self.volume.shape

    @property
    def slice_shape(self) -> tuple[int, int]:
        return self.volume.shape[1:]

    # -- labels --------------------------------------------------------------
    @property
    def labels(self) -> list[Label]:
        with self._lock:
            return [self._labels[v] for v in sorted(self._labels)]

    def label(self, value: int) -> Label:
        with self._lock:
            if value not in self._labels:
                raise PromptError(f"no label {value} in this session (labels: {sorted(self._labels) or 'none'})")
            return self._labels[value]

    def set_label(
        self,
        value: int,
        name: Optional[str] = None,
        color: Optional[Sequence[int]] = None,
        visible: Optional[bool] = None,
    ) -> Label:
        """Create label ``value`` or change its name, colour or visibility (not an undo step)."""
        _check_label_value(value)
        with self._lock:
            label = self._labels.get(value) or self._new_label(value)
            if name is not None:
                label.name = str(name)
            if color is not None:
                rgb = tuple(int(c) for c in color)
                if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
                    raise PromptError(f"a colour is 3 numbers 0..255 (R, G, B), got {list(color)}")
                label.color = rgb
            if visible is not None:
                label.visible = bool(visible)
            return label

    def remove_label(self, value: int) -> None:
        """Delete a label and its masks (one undo step)."""
        with self._lock:
            self._ensure_idle(value)
            before = self.label(value).snapshot()
            del self._labels[value]
            self._push(value, before, None)

    def _new_label(self, value: int) -> Label:
        label = Label(value=value, name=f"label {value}", color=default_color(value))
        self._labels[value] = label
        return label

    # -- prompting -------------------------------------------------------------
    def focus(self, z: int) -> None:
        """The user looks at slice ``z``: encode it and its neighbours in the background."""
        if 0 <= z < self.shape[0]:
            self.embedder.focus(z)

    def prompt(
        self,
        label: int,
        z: int,
        box: Optional[Sequence[float]] = None,
        points: Sequence[PointLike] = (),
    ) -> SliceResult:
        """Segment label ``label`` on slice ``z`` from a box and/or points (IJK pixels).

        Args:
            label: label value (created when new).
            z: slice index.
            box: ``(x0, y0, x1, y1)``, corners inclusive; replaces the slice's prompt.
            points: ``(x, y)`` / ``(x, y, 1)`` inside, ``(x, y, 0)`` outside, or
                :class:`~promptseg.prompts.Point`; added to the slice's prompt.

        Returns:
            the slice's mask and score.

        Raises:
            PromptError: nothing given, or outside the image.
            SessionBusy: the label is being propagated.
        """
        _check_label_value(label)
        z = int(z)
        new_points = tuple(_point(p) for p in points)
        if box is None and not new_points:
            raise PromptError("a prompt needs a box or at least one point")
        with self._lock:
            self._ensure_idle(label)
            current = self._labels.get(label)
            previous = current.prompts.get(z) if current is not None else None
            if box is not None:
                prompt = SlicePrompt(box=tuple(float(v) for v in box), points=new_points)
            else:
                prompt = SlicePrompt(
                    box=previous.box if previous is not None else None,
                    points=(previous.points if previous is not None else ()) + new_points,
                )
            validate(ObjectPrompt(slices={z: prompt}, label=label), self.shape)
            if prompt.box is None and current is not None and z in current.logits:
                # refine the mask already there (e.g. a propagated slice) as propagation would prompt it
                prompt = SlicePrompt(box=self.model.segmenter.box_from_mask(current.logits[z] > 0), points=prompt.points)
        embedding = self.embedder.get(z)
        self.embedder.focus(z)  # propagation will want the neighbours next
        coords, point_labels = prompt.point_arrays()
        prediction = self.model.decode(embedding, box=prompt.box, points=coords, point_labels=point_labels,
                                       interactive=True)
        with self._lock:
            self._ensure_idle(label)
            target = self._labels.get(label)
            before = target.snapshot() if target is not None else None
            target = target or self._new_label(label)
            target.prompts[z] = prompt
            target.edited.discard(z)
            target.last_prompted = z
            target.set_slice(z, prediction.logits, prediction.score)
            self._push(label, before, target.snapshot())
            return SliceResult(label, z, self._composed_slice(z) == label, prediction.score, "prompt")

    def edit(self, label: int, masks: dict[int, np.ndarray]) -> list[SliceResult]:
        """Replace label ``label`` on some slices by painted masks (brush / eraser); one undo step.

        Args:
            masks: ``{z: (H, W) bool}``; an empty mask erases the label there.
        """
        _check_label_value(label)
        if not masks:
            raise PromptError("an edit needs at least one slice")
        checked = {}
        for z, mask in masks.items():
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != self.slice_shape:
                raise PromptError(f"an edited slice must be {self.slice_shape} (rows, columns), got {mask.shape}")
            if not 0 <= int(z) < self.shape[0]:
                raise PromptError(f"slice {z} is outside the image (slices 0..{self.shape[0] - 1})")
            checked[int(z)] = mask
        with self._lock:
            self._ensure_idle(label)
            target = self._labels.get(label)
            before = target.snapshot() if target is not None else None
            target = target or self._new_label(label)
            for z, mask in checked.items():
                target.set_slice(z, edit_logits(mask) if mask.any() else None)
                target.edited.add(z)
            self._push(label, before, target.snapshot())
            return [SliceResult(label, z, self._composed_slice(z) == label, None, "edit") for z in sorted(checked)]

    # -- propagation -------------------------------------------------------------
    def propagate(self, label: int, cancel: Optional[threading.Event] = None) -> Iterator[Union[SliceResult, PropagationDone]]:
        """Propagate ``label`` through the volume from its last prompted slice.

        Yields a :class:`SliceResult` per slice as soon as it is computed (the
        starting slice first), then one :class:`PropagationDone`. Setting
        ``cancel`` (or closing the generator) stops after the model call in
        progress; the slices already done are kept (one undo step).

        Raises (at once, before anything runs):
            PromptError: the label has no prompt.
            SessionBusy: the label is already being propagated.
        """
        with self._lock:
            target = self.label(label)
            start = target.last_prompted
            if start is None or start not in target.prompts:
                raise PromptError(f"label {label} has no prompt to propagate from: prompt a slice first")
            self._ensure_idle(label)
            if target.seed is None or target.seed == start:
                directions: tuple[str, ...] = ("up", "down")
            else:
                directions = ("up",) if start > target.seed else ("down",)
            cancel = cancel or threading.Event()
            self._running[label] = cancel
            before = target.snapshot()
            if target.seed is None:
                target.seed = start
            object_prompt = ObjectPrompt(slices={start: target.prompts[start]}, label=label, name=target.name)
            # slices this run may reach are cleared first (the user's own slices are kept)
            depth = self.shape[0]
            reach = [z for z in range(depth) if ("up" in directions and z > start) or ("down" in directions and z < start)]
            for z in reach:
                if z not in target.prompts and z not in target.edited:
                    target.set_slice(z, None)
            target.stops = {}
        events: "queue.Queue" = queue.Queue()
        done = PropagationDone(label, start, directions, [])
        worker = threading.Thread(
            target=self._propagate_worker,
            args=(target, object_prompt, directions, cancel, events, done, before),
            name=f"promptseg-propagate-{label}",
            daemon=True,
        )
        worker.start()
        return self._stream(events, cancel, worker)

    @staticmethod
    def _stream(events: "queue.Queue", cancel: threading.Event, worker: threading.Thread):
        try:
            while True:
                item = events.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, PropagationDone):
                    return
        finally:
            cancel.set()
            worker.join()

    def _propagate_worker(self, target: Label, object_prompt, directions, cancel, events, done, before) -> None:
        start = object_prompt.start_slice
        source = _SessionEmbeddings(self.embedder, cancel)
        try:
            chain = iter_chain(
                self.model.view(),
                self.images,
                [object_prompt],
                spacing_xy=(self.volume.spacing[0], self.volume.spacing[1]),
                slice_thickness=self.volume.spacing[2],
                mode="3d" if self.shape[0] > 1 else "2d",
                stop_rule=self.stop_rule,
                embeddings=source,
                directions=directions,
            )
            result = None
            for step in chain:
                result = step.result
                if cancel.is_set():  # nothing computed after the cancel is applied
                    raise _Cancelled
                if not step.kept and step.z != start:
                    continue
                z = step.z
                with self._lock:
                    if z == start or (z not in target.prompts and z not in target.edited):
                        target.set_slice(z, step.result.logits.get(z), step.result.scores.get(z))
                    done.slices.append(z)
                    events.put(SliceResult(target.value, z, self._composed_slice(z) == target.value,
                                           step.result.scores.get(z), "prompt" if z == start else "propagation"))
            done.stops = dict(result.stops) if result is not None else {}
        except _Cancelled:
            done.cancelled = True
            done.stops = {d: Stop(StopReason.CANCELLED) for d in directions}
        except BaseException as error:  # reported to the caller, state kept as far as it got
            events.put(error)
        finally:
            with self._lock:
                target.stops = dict(done.stops)
                self._running.pop(target.value, None)
                self._push(target.value, before, target.snapshot())
        events.put(done)

    def cancel(self, label: Optional[int] = None) -> None:
        """Cancel the propagation of ``label`` (None: of every label)."""
        with self._lock:
            for value, event in self._running.items():
                if label is None or value == label:
                    event.set()

    def is_propagating(self, label: Optional[int] = None) -> bool:
        with self._lock:
            return bool(self._running) if label is None else label in self._running

    def _ensure_idle(self, label: int) -> None:
        if label in self._running:
            raise SessionBusy(f"label {label} is being propagated: cancel it or wait until it ends")

    # -- undo / redo -------------------------------------------------------------
    def _push(self, value: int, before: Optional[Label], after: Optional[Label]) -> None:
        self._undo.append((value, before, after))
        del self._undo[:-HISTORY_LIMIT]
        self._redo.clear()

    def _restore(self, value: int, state: Optional[Label]) -> None:
        self._ensure_idle(value)
        if state is None:
            self._labels.pop(value, None)
        else:
            restored = state.snapshot()
            current = self._labels.get(value)
            if current is not None:  # name/colour/visibility are not undo steps
                restored.name, restored.color, restored.visible = current.name, current.color, current.visible
            self._labels[value] = restored

    def undo(self) -> Optional[int]:
        """Undo the last change; returns the label it touched (None when there is nothing to undo)."""
        with self._lock:
            if not self._undo:
                return None
            value, before, after = self._undo[-1]
            self._restore(value, before)
            self._redo.append(self._undo.pop())
            return value

    def redo(self) -> Optional[int]:
        """Redo the last undone change; returns the label it touched (None when there is nothing to redo)."""
        with self._lock:
            if not self._redo:
                return None
            value, before, after = self._redo[-1]
            self._restore(value, after)
            self._undo.append(self._redo.pop())
            return value

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    # -- results -------------------------------------------------------------------
    def _results(self) -> list[ObjectResult]:
        """Labels in value order as :class:`ObjectResult` (equal logits go to the lower value)."""
        return [
            ObjectResult(ObjectPrompt(slices={}, label=value), logits=self._labels[value].logits)
            for value in sorted(self._labels)
        ]

    def _composed_slice(self, z: int) -> np.ndarray:
        """``(H, W)`` label values on slice ``z``, overlaps resolved as :func:`compose_labels` does."""
        results = [r for r in self._results() if z in r.logits]
        if not results:
            return np.zeros(self.slice_shape, dtype=np.uint16)
        one = [ObjectResult(r.prompt, logits={0: r.logits[z]}) for r in results]
        return compose_labels(one, (1,) + tuple(self.slice_shape))[0]

    def label_slice(self, z: int) -> np.ndarray:
        """``(H, W)`` label map of slice ``z``."""
        with self._lock:
            return self._composed_slice(int(z))

    def label_map(self) -> Volume:
        """The label map on the volume's grid (uint8, or uint16 for labels > 255)."""
        with self._lock:
            array = compose_labels(self._results(), self.shape)
        labels = self.volume.with_array(array, modality=None)
        labels.metadata = {"source": self.volume.metadata.get("source"), "kind": "labels"}
        return labels

    def mask(self, label: int) -> np.ndarray:
        """``(Z, H, W)`` bool mask of one label in the label map."""
        return self.label_map().array == label

    def export(self, path: Union[str, Path]) -> Path:
        """Write the label map (NIfTI / NRRD / MHA / NPZ by extension), atomically, on the volume's grid."""
        from ..io import save_mask

        return save_mask(self.label_map().array, path, reference=self.volume)

    def close(self) -> None:
        """Cancel propagations and stop background encoding."""
        self.cancel()
        self.embedder.close()


def _check_label_value(value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= int(value) <= 65535:
        raise PromptError(f"a label is a whole number 1..65535, got {value!r}")


def _point(value: PointLike) -> Point:
    if isinstance(value, Point):
        return value
    values = [float(v) for v in value]
    if len(values) not in (2, 3) or (len(values) == 3 and values[2] not in (0.0, 1.0)):
        raise PromptError(f"a point is (x, y) or (x, y, 1|0), got {list(value)}")
    return Point(values[0], values[1], positive=len(values) == 2 or values[2] == 1.0)
