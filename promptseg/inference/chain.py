"""Segment objects through a volume by chaining: 2D per slice, or 3D slice to slice.

Chaining: the object's mask on one slice gives the box prompt on the next one
(:meth:`Segmenter.box_from_mask`), going up and then down from the prompted
slice, until :mod:`promptseg.inference.stop_rule` says the object has ended, the
z-range ends, or the volume ends. Key-slice objects get interpolated boxes on
every slice between their first and last key slice instead.

All objects are processed together in one upward and one downward sweep, so
each slice is embedded at most once per call however many objects there are;
an embedding is kept only while a later step of the call can still need it
(unless the caller supplies its own embedding source, e.g. a session's cache).

:func:`iter_chain` is the engine: a generator that yields a :class:`ChainStep` as
each slice is decided (an interactive viewer shows masks as they come, and stops
the generator to cancel); :func:`propagate` runs it to the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Optional, Protocol, Sequence

import numpy as np

from ..models.base import Embedding, Prediction, Segmenter, half_logits, mask_prompt_refused, takes_mask_prompt
from ..prompts import ObjectPrompt, box_from_mask, interpolate_key_boxes
from ..stops import Stop, StopReason
from .results import ObjectResult
from .stop_rule import Appearance, StopRule, check_slice, object_radius_mm

if TYPE_CHECKING:
    from tqdm import tqdm

DIRECTIONS = ("up", "down")


@dataclass(frozen=True)
class ChainStep:
    """One decision of the chain, as it happens.

    Attributes:
        index: the object's position in the prompts.
        z: the slice.
        direction: ``"up"`` (the prompted slice and above, and key slices) or ``"down"``.
        result: the object's :class:`~promptseg.inference.results.ObjectResult` so far
            (``result.logits.get(z)`` is this slice's mask, if kept).
        stop: set when this step ended the direction (the slice was not kept).
    """

    index: int
    z: int
    direction: str
    result: ObjectResult
    stop: Optional[Stop] = None

    @property
    def kept(self) -> bool:
        """The slice's mask is in the result."""
        return self.z in self.result.logits


class EmbeddingSource(Protocol):
    """Where the chain gets slice embeddings: ``get(z)``, ``release(z)`` when the call no
    longer needs slice ``z``, and ``encoded``, the slices embedded during the call in order."""

    encoded: list[int]

    def get(self, z: int) -> Embedding: ...

    def release(self, z: int) -> None: ...


class SliceEmbeddings:
    """Embeds slices on demand and keeps each only while it may be needed again (the default
    :class:`EmbeddingSource`)."""

    def __init__(self, segmenter: Segmenter, images: np.ndarray, progress: Optional[tqdm] = None) -> None:
        self.segmenter, self.images, self.progress = segmenter, images, progress
        self._cache: dict[int, Embedding] = {}
        self.encoded: list[int] = []

    def get(self, z: int) -> Embedding:
        if z not in self._cache:
            self._cache[z] = self.segmenter.embed(self.images[z])
            self.encoded.append(z)
            if self.progress is not None:
                self.progress.update(1)
        return self._cache[z]

    def release(self, z: int) -> None:
        self._cache.pop(z, None)


class _Chain:
    """One object's state during the sweeps."""

    def __init__(self, prompt: ObjectPrompt, result: ObjectResult, mode: str, directions: Sequence[str]) -> None:
        self.prompt, self.result, self.mode = prompt, result, mode
        self.seed_z = prompt.start_slice
        self.key_boxes = interpolate_key_boxes({z: sp.box for z, sp in prompt.slices.items()}) if prompt.is_key_slices else None
        self.seed_box: Optional[tuple] = None
        self.appearance: Optional[Appearance] = None
        self.radius_mm = float("inf")
        self.masks: dict[int, np.ndarray] = {}
        #: low-res logits of the last slice decided per direction (the dense mask prompt)
        self.low_res: dict[int, np.ndarray] = {}
        self.active = {"up": "up" in directions,
                       "down": mode == "3d" and not prompt.is_key_slices and "down" in directions}

    def wants(self, z: int, direction: str) -> bool:
        """Does this object need slice ``z`` in this sweep?"""
        p = self.prompt
        if direction == "up":
            if self.key_boxes is not None:
                if self.mode == "2d":
                    return z in p.slices
                return z in self.key_boxes
            if z == self.seed_z:
                return True
            if self.mode == "2d" or z < self.seed_z or not self.active["up"]:
                return False
        else:
            if z >= self.seed_z or not self.active["down"]:
                return False
        if p.z_range is not None and not p.z_range[0] <= z <= p.z_range[1]:
            self.active[direction] = False
            self.result.stops.setdefault(direction, Stop(StopReason.END_OF_Z_RANGE))
            return False
        return True


def iter_chain(
    segmenter: Segmenter,
    images: np.ndarray,
    prompts: Sequence[ObjectPrompt],
    spacing_xy: tuple[float, float] = (1.0, 1.0),
    slice_thickness: float = 1.0,
    mode: str = "3d",
    stop_rule: Optional[StopRule] = None,
    results: Optional[Sequence[ObjectResult]] = None,
    embeddings: Optional[EmbeddingSource] = None,
    directions: Sequence[str] = DIRECTIONS,
    progress: bool = False,
    refine_prompt: bool = False,
    mask_prompt: bool = False,
) -> Iterator[ChainStep]:
    """Segment every object of ``prompts`` in ``images``, yielding each decision as it is made.

    Args:
        segmenter: the model.
        images: ``(Z, H, W)`` or ``(Z, H, W, 3)`` uint8, intensity-normalised: an
            array, or anything with ``.shape`` and ``images[z]`` such as
            :class:`~promptseg.intensity.NormalizedSlices`.
        prompts: validated object prompts.
        spacing_xy: in-plane pixel size ``(x, y)`` in mm (for the stop rule).
        slice_thickness: slice spacing in mm (for the stop rule).
        mode: ``"3d"`` (propagate / interpolate key slices) or ``"2d"`` (only
            the prompted slices).
        stop_rule: parameters of the automatic stop (default :class:`StopRule()`).
        results: the :class:`ObjectResult` to fill, one per prompt (default: new ones).
        embeddings: where slice embeddings come from (default: embedded on demand and
            released as soon as this call no longer needs them).
        directions: which ways to propagate from the prompted slice (``"up"``,
            ``"down"``); the prompted slice itself is always segmented.
        progress: show a progress bar of embedded slices.
        refine_prompt: decode each prompted slice twice -- from the prompt, then from the
            box the model's own mask gives (:meth:`Segmenter.box_from_mask`, the chaining
            box) together with the prompt's points -- and keep the second mask
            (:func:`refined_prediction`). Off by default: see docs/quality.md for where it
            helps (boxes a few pixels off, point prompts) and where it does not.
        mask_prompt: chaining: give each slice's decoder the previous slice's low-res mask
            logits as SAM's dense mask prompt (``mask_input``), besides the box of the
            previous mask (:meth:`Segmenter.decode_with_mask`; SAM-family backends). Off by
            default: see docs/quality.md for where it helps (under-segmented slices) and where
            it does not.

    Raises:
        OptionError: ``mask_prompt`` with a backend that takes no mask prompt (before any work).

    Yields:
        A :class:`ChainStep` per object and slice decided, in processing order: the
        upward sweep (increasing z), then the downward one. When the generator is
        closed early (cancelled), the directions still open are left without a stop.
    """
    if mode not in ("2d", "3d"):
        raise ValueError(f"mode must be '2d' or '3d', got {mode!r}")
    unknown = set(directions) - set(DIRECTIONS)
    if unknown:
        raise ValueError(f"directions must be 'up' and/or 'down', got {sorted(unknown)}")
    rule = stop_rule or StopRule()
    options = _Options(refine_prompt, mask_prompt)
    if mask_prompt and not takes_mask_prompt(segmenter):
        raise mask_prompt_refused(segmenter)
    results = list(results) if results is not None else [ObjectResult(p) for p in prompts]
    chains = [_Chain(p, r, mode, directions) for p, r in zip(prompts, results)]
    depth = images.shape[0]
    bar = _progress_bar(progress)
    own = embeddings is None
    if own:
        embeddings = SliceEmbeddings(segmenter, images, bar)
    # slices below the highest seed may be visited again by the downward sweep
    reuse_below = max((c.seed_z for c in chains if c.active["down"]), default=-1)
    try:
        for z in _upward(chains, depth):
            needed = [(i, c) for i, c in enumerate(chains) if c.wants(z, "up")]
            if needed:
                emb = embeddings.get(z)
                for i, chain in needed:
                    stop = _step(segmenter, chain, z, "up", emb, images, spacing_xy, slice_thickness, rule,
                                 options)
                    yield ChainStep(i, z, "up", chain.result, stop)
            if z >= reuse_below:
                embeddings.release(z)
        for z in range(reuse_below - 1, -1, -1):
            needed = [(i, c) for i, c in enumerate(chains) if c.wants(z, "down")]
            if not needed:
                if not any(c.active["down"] and c.seed_z > z for c in chains):
                    break
                embeddings.release(z)
                continue
            emb = embeddings.get(z)
            for i, chain in needed:
                stop = _step(segmenter, chain, z, "down", emb, images, spacing_xy, slice_thickness, rule,
                             options)
                yield ChainStep(i, z, "down", chain.result, stop)
            embeddings.release(z)
        for chain in chains:
            for direction, active in chain.active.items():
                if active and direction not in chain.result.stops and mode == "3d" and not chain.prompt.is_key_slices:
                    chain.result.stops[direction] = Stop(StopReason.END_OF_VOLUME)
    finally:
        if bar is not None:
            bar.close()


def _progress_bar(progress: bool) -> Optional[tqdm]:
    """A bar counting embedded slices, or None (tqdm is imported only when a bar is shown:
    it costs a run without one ~0.08 s of start-up)."""
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=None, unit="slice", desc="segmenting", leave=False)


def propagate(
    segmenter: Segmenter,
    images: np.ndarray,
    prompts: Sequence[ObjectPrompt],
    progress: bool = False,
    **options,
) -> tuple[list[ObjectResult], list[int]]:
    """Segment every object of ``prompts`` in ``images``: :func:`iter_chain` run to the end.

    Args:
        segmenter, images, prompts, progress: as :func:`iter_chain`.
        **options: ``spacing_xy``, ``slice_thickness``, ``mode``, ``stop_rule``, ``directions``,
            ``refine_prompt``, ``mask_prompt`` of :func:`iter_chain`.

    Returns:
        One :class:`ObjectResult` per prompt (same order) and the list of slices
        that were embedded, in order (each appears once).
    """
    results = [ObjectResult(p) for p in prompts]
    bar = _progress_bar(progress)
    embeddings = SliceEmbeddings(segmenter, images, bar)
    try:
        for _ in iter_chain(segmenter, images, prompts, results=results, embeddings=embeddings, **options):
            pass
    finally:
        if bar is not None:
            bar.close()
    return results, embeddings.encoded


def _upward(chains: list[_Chain], depth: int) -> Iterator[int]:
    z = min(min(c.prompt.slices) for c in chains)
    while z < depth:
        yield z
        pending = any(
            c.seed_z > z
            or (c.key_boxes is not None and max(c.prompt.slices) > z)
            or (c.active["up"] and c.mode == "3d" and c.key_boxes is None)
            for c in chains
        )
        if not pending:
            return
        z += 1


@dataclass(frozen=True)
class _Options:
    """How the chain prompts each slice (keyword options of :func:`iter_chain`)."""

    refine_prompt: bool = False
    mask_prompt: bool = False


def _decode(segmenter: Segmenter, emb: Embedding, options: _Options, mask_logits: Optional[np.ndarray],
            box=None, points=None, labels=None) -> Prediction:
    """One decoder call: with the dense mask prompt when ``options.mask_prompt`` (the prediction
    then carries its ``low_res`` for the next slice)."""
    if options.mask_prompt:
        return segmenter.decode_with_mask(emb, mask_logits, box=box, points=points, point_labels=labels)
    return segmenter.decode(emb, box=box, points=points, point_labels=labels)


def _step(
    segmenter: Segmenter,
    chain: _Chain,
    z: int,
    direction: str,
    emb: Embedding,
    images: np.ndarray,
    spacing_xy: tuple[float, float],
    thickness: float,
    rule: StopRule,
    options: _Options = _Options(),
) -> Optional[Stop]:
    """Decide slice ``z`` for one object; return the :class:`Stop` when this ended a direction."""
    prompt, result = chain.prompt, chain.result
    if chain.key_boxes is not None:
        _record(chain, z, segmenter.decode(emb, box=chain.key_boxes[z]))
        return None
    if z == chain.seed_z:
        sp = prompt.slices[z]
        coords, labels = sp.point_arrays()
        pred = _decode(segmenter, emb, options, None, sp.box, coords, labels)
        if options.refine_prompt and pred.mask.any():  # refined_prediction, through _decode
            again = _decode(segmenter, emb, options, None, segmenter.box_from_mask(pred.mask), coords, labels)
            pred = again if again.mask.any() else pred
        mask = _record(chain, z, pred)
        chain.seed_box = sp.box if sp.box is not None else (box_from_mask(mask) if mask.any() else None)
        if not mask.any():
            if prompt.z_range is None:
                stop = Stop(StopReason.NOTHING_ON_PROMPTED_SLICE)
                chain.active = {"up": False, "down": False}
                result.stops = {"up": stop, "down": stop}
                return stop
            return None
        chain.appearance = Appearance.learn(images[z], mask, chain.seed_box)
        chain.radius_mm = object_radius_mm(chain.seed_box, spacing_xy)
        return None
    step = 1 if direction == "up" else -1
    previous = chain.masks.get(z - step)
    mask_logits = None
    if previous is not None and previous.any():
        box = segmenter.box_from_mask(previous)
        # the seed's logits serve both directions; every other slice's only the next one
        mask_logits = chain.low_res.get(z - step) if z - step == chain.seed_z else chain.low_res.pop(z - step, None)
    elif prompt.z_range is not None and chain.seed_box is not None:
        # inside a given z-range an empty slice does not end the object: re-use the
        # prompted box, as LiteMedSAM's challenge inference does
        box = chain.seed_box
    else:
        chain.active[direction] = False
        result.stops[direction] = Stop(StopReason.PREVIOUS_SLICE_EMPTY)
        return result.stops[direction]
    pred = _decode(segmenter, emb, options, mask_logits, box)
    mask = pred.mask
    if prompt.z_range is None:
        distance = abs(z - chain.seed_z) * thickness - thickness / 2
        check = check_slice(rule, images[z], mask, previous, chain.appearance, distance, chain.radius_mm)
        result.checks[z] = check
        if not check.keep:
            chain.active[direction] = False
            result.stops[direction] = Stop(check.reason, z, check.text)
            return result.stops[direction]
    _record(chain, z, pred)
    return None


def refined_prediction(segmenter: Segmenter, emb: Embedding, pred: Prediction,
                       points: Optional[np.ndarray] = None, labels: Optional[np.ndarray] = None) -> Prediction:
    """Decode a slice again from the box of the model's own mask (+ the prompt's points).

    The box is the one chaining would give the next slice (:meth:`Segmenter.box_from_mask`,
    the family's margin), so the prompted slice is segmented from the kind of box the rest
    of the chain uses: a user's box a few pixels too wide or too narrow becomes the box of
    what the model found, and a prompt of points alone gets the box a box-trained model
    needs (points -> mask -> box, as STARDUST's point mode). An empty first mask, or an
    empty second one, keeps ``pred``.

    Args:
        pred: the prediction from the prompt itself, ``(H, W)`` logits.
        points, labels: the prompt's ``(N, 2)`` clicks and ``(N,)`` labels, or None.
    """
    mask = pred.mask
    if not mask.any():
        return pred
    again = segmenter.decode(emb, box=segmenter.box_from_mask(mask), points=points, point_labels=labels)
    return again if again.mask.any() else pred


def _record(chain: _Chain, z: int, pred: Prediction) -> np.ndarray:
    mask = pred.mask
    chain.masks[z] = mask
    if pred.low_res is not None:
        chain.low_res[z] = pred.low_res
    if mask.any():
        chain.result.logits[z] = half_logits(pred.logits)
        chain.result.scores[z] = pred.score
    return mask
