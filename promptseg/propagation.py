"""Segment objects through a volume: 2D per slice, or 3D by chaining.

Chaining: the object's mask on one slice gives the box prompt on the next one
(:meth:`Segmenter.box_from_mask`), going up and then down from the prompted
slice, until :mod:`promptseg.stop_rule` says the object has ended, the z-range
ends, or the volume ends. Key-slice objects get interpolated boxes on every
slice between their first and last key slice instead.

All objects are processed together in one upward and one downward sweep, so
each slice is embedded at most once per call however many objects there are;
an embedding is kept only while a later step of the call can still need it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from .models.base import Embedding, Prediction, Segmenter
from .prompts import ObjectPrompt, box_from_mask, interpolate_key_boxes
from .stop_rule import Appearance, StopCheck, StopRule, check_slice, object_radius_mm


@dataclass
class ObjectResult:
    """What happened to one object.

    Attributes:
        logits: ``{z: (H, W) float16 logits}`` for slices where the mask is not empty.
        scores: ``{z: predicted IoU}`` for those slices.
        stops: why propagation ended, per direction (``"up"``, ``"down"``).
        checks: the stop rule's measurements per slice it examined.
    """

    prompt: ObjectPrompt
    logits: dict[int, np.ndarray] = field(default_factory=dict)
    scores: dict[int, float] = field(default_factory=dict)
    stops: dict[str, str] = field(default_factory=dict)
    checks: dict[int, StopCheck] = field(default_factory=dict)

    @property
    def slices(self) -> list[int]:
        return sorted(self.logits)


class _SliceEmbeddings:
    """Embeds slices on demand and keeps each only while it may be needed again."""

    def __init__(self, embed: Callable[[int], Embedding], progress: Optional[tqdm]) -> None:
        self.embed, self.progress = embed, progress
        self._cache: dict[int, Embedding] = {}
        self.encoded: list[int] = []

    def get(self, z: int) -> Embedding:
        if z not in self._cache:
            self._cache[z] = self.embed(z)
            self.encoded.append(z)
            if self.progress is not None:
                self.progress.update(1)
        return self._cache[z]

    def release(self, z: int) -> None:
        self._cache.pop(z, None)


class _Chain:
    """One object's state during the sweeps."""

    def __init__(
        self, prompt: ObjectPrompt, result: ObjectResult, mode: str, directions: Sequence[str] = ("up", "down")
    ) -> None:
        self.prompt, self.result, self.mode = prompt, result, mode
        self.seed_z = prompt.start_slice
        self.key_boxes = interpolate_key_boxes({z: sp.box for z, sp in prompt.slices.items()}) if prompt.is_key_slices else None
        self.seed_box: Optional[tuple] = None
        self.appearance: Optional[Appearance] = None
        self.radius_mm = float("inf")
        self.masks: dict[int, np.ndarray] = {}
        #: ``(z, prediction)`` of the slice recorded last, until reported to ``on_slice``
        self.last: Optional[tuple[int, Prediction]] = None
        single = mode == "3d" and not prompt.is_key_slices
        self.active = {"up": "up" in directions or not single, "down": single and "down" in directions}

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
            self.result.stops.setdefault(direction, "end of z-range")
            return False
        return True


def propagate(
    segmenter: Segmenter,
    images: np.ndarray,
    prompts: Sequence[ObjectPrompt],
    spacing_xy: tuple[float, float] = (1.0, 1.0),
    slice_thickness: float = 1.0,
    mode: str = "3d",
    stop_rule: Optional[StopRule] = None,
    progress: bool = False,
    *,
    embed: Optional[Callable[[int], Embedding]] = None,
    directions: Sequence[str] = ("up", "down"),
    on_slice: Optional[Callable[[int, int, Prediction], None]] = None,
) -> tuple[list[ObjectResult], list[int]]:
    """Segment every object of ``prompts`` in ``images``.

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
        progress: show a progress bar of embedded slices.
        embed: where slice ``z``'s embedding comes from (e.g. an interactive
            session's cache); default ``segmenter.embed(images[z])``.
        directions: which of ``"up"`` / ``"down"`` single-slice objects propagate
            to in 3D (the prompted slice is always segmented).
        on_slice: called as ``on_slice(object_index, z, prediction)`` each time a
            slice's mask is kept (the prompted slice always, then each slice the
            stop rule accepts), in the order they are computed. An exception it
            (or ``embed``) raises ends the call, e.g. to cancel it.

    Returns:
        One :class:`ObjectResult` per prompt (same order) and the list of slices
        that were embedded, in order (each appears once).
    """
    if mode not in ("2d", "3d"):
        raise ValueError(f"mode must be '2d' or '3d', got {mode!r}")
    if not directions or set(directions) - {"up", "down"}:
        raise ValueError(f"directions must be a non-empty subset of ('up', 'down'), got {directions!r}")
    rule = stop_rule or StopRule()
    results = [ObjectResult(p) for p in prompts]
    chains = [_Chain(p, r, mode, directions) for p, r in zip(prompts, results)]
    depth = images.shape[0]
    bar = tqdm(total=None, unit="slice", desc="segmenting", disable=not progress, leave=False)
    embeddings = _SliceEmbeddings(embed or (lambda z: segmenter.embed(images[z])), bar)
    # slices below the highest seed may be visited again by the downward sweep
    reuse_below = max((c.seed_z for c in chains if c.active["down"]), default=-1)
    try:
        for z in _upward(chains, depth):
            needed = [c for c in chains if c.wants(z, "up")]
            if needed:
                emb = embeddings.get(z)
                for chain in needed:
                    _step(segmenter, chain, z, "up", emb, images, spacing_xy, slice_thickness, rule)
                    _notify(on_slice, chains, chain, z)
            if z >= reuse_below:
                embeddings.release(z)
        for z in range(reuse_below - 1, -1, -1):
            needed = [c for c in chains if c.wants(z, "down")]
            if not needed:
                if not any(c.active["down"] and c.seed_z > z for c in chains):
                    break
                embeddings.release(z)
                continue
            emb = embeddings.get(z)
            for chain in needed:
                _step(segmenter, chain, z, "down", emb, images, spacing_xy, slice_thickness, rule)
                _notify(on_slice, chains, chain, z)
            embeddings.release(z)
    finally:
        bar.close()
    for chain in chains:
        for direction, active in chain.active.items():
            if active and direction not in chain.result.stops and mode == "3d" and not chain.prompt.is_key_slices:
                chain.result.stops[direction] = "end of volume"
    return results, embeddings.encoded


def _notify(on_slice, chains: list[_Chain], chain: _Chain, z: int) -> None:
    """Tell ``on_slice`` about slice ``z`` of ``chain`` if its mask was kept there."""
    if on_slice is not None and chain.last is not None and chain.last[0] == z:
        on_slice(chains.index(chain), z, chain.last[1])
        chain.last = None


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
) -> None:
    prompt, result = chain.prompt, chain.result
    if chain.key_boxes is not None:
        _record(chain, z, segmenter.decode(emb, box=chain.key_boxes[z]))
        return
    if z == chain.seed_z:
        sp = prompt.slices[z]
        coords, labels = sp.point_arrays()
        pred = segmenter.decode(emb, box=sp.box, points=coords, point_labels=labels)
        mask = _record(chain, z, pred)
        chain.seed_box = sp.box if sp.box is not None else (box_from_mask(mask) if mask.any() else None)
        if not mask.any():
            if prompt.z_range is None:
                chain.active = {"up": False, "down": False}
                result.stops = {"up": "no object found on the prompted slice", "down": "no object found on the prompted slice"}
            return
        chain.appearance = Appearance.learn(images[z], mask, chain.seed_box)
        chain.radius_mm = object_radius_mm(chain.seed_box, spacing_xy)
        return
    step = 1 if direction == "up" else -1
    previous = chain.masks.get(z - step)
    if previous is not None and previous.any():
        box = segmenter.box_from_mask(previous)
    elif prompt.z_range is not None and chain.seed_box is not None:
        # inside a given z-range an empty slice does not end the object: re-use the
        # prompted box, as LiteMedSAM's challenge inference does
        box = chain.seed_box
    else:
        chain.active[direction] = False
        result.stops[direction] = "previous slice empty"
        return
    pred = segmenter.decode(emb, box=box)
    mask = pred.mask
    if prompt.z_range is None:
        distance = abs(z - chain.seed_z) * thickness - thickness / 2
        check = check_slice(rule, images[z], mask, previous, chain.appearance, distance, chain.radius_mm)
        result.checks[z] = check
        if not check.keep:
            chain.active[direction] = False
            result.stops[direction] = f"slice {z}: {check.reason}"
            return
    _record(chain, z, pred)


def _record(chain: _Chain, z: int, pred) -> np.ndarray:
    mask = pred.mask
    chain.masks[z] = mask
    chain.last = (z, pred)
    if mask.any():
        chain.result.logits[z] = pred.logits.astype(np.float16)
        chain.result.scores[z] = pred.score
    return mask


def compose_labels(results: Sequence[ObjectResult], shape: tuple[int, int, int]) -> np.ndarray:
    """One label map ``(Z, H, W)`` from per-object logits.

    Where objects overlap, the voxel goes to the object with the highest logit
    (the model's most confident object). dtype uint8, or uint16 for labels > 255.
    """
    max_label = max((r.prompt.label for r in results), default=0)
    labels = np.zeros(shape, dtype=np.uint8 if max_label <= 255 else np.uint16)
    slices = sorted({z for r in results for z in r.logits})
    for z in slices:
        best = np.zeros(shape[1:], dtype=np.float32)
        for r in results:
            logits = r.logits.get(z)
            if logits is None:
                continue
            logits = logits.astype(np.float32)
            win = (logits > 0) & ((labels[z] == 0) | (logits > best))
            labels[z][win] = r.prompt.label
            best[win] = logits[win]
    return labels
