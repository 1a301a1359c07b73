"""3D segmentation by a backend's memory propagation (SAM2 family): prompts in, object results out.

The model layer (:mod:`promptseg.models.sam2_memory`) tracks :class:`Track` objects --
seeds and a reach -- and knows nothing of promptseg's prompt objects. This module
turns :class:`~promptseg.prompts.ObjectPrompt` values (and optional mask prompts)
into tracks, checks the backend declares
:attr:`~promptseg.models.capabilities.Capability.MEMORY_PROPAGATION`, runs it, and
returns the same :class:`~promptseg.inference.results.ObjectResult` values chaining
returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from ..errors import PromptError
from ..models import Capability, require
from ..prompts import ObjectPrompt
from .results import ObjectResult

if TYPE_CHECKING:  # the SAM2 model layer imports torch: loaded when memory propagation runs
    from ..models.sam2_memory import Track


def tracks_from_prompts(
    prompts: Sequence[ObjectPrompt],
    shape: tuple[int, int, int],
    masks: Optional[dict[int, dict[int, np.ndarray]]] = None,
) -> list[Track]:
    """One :class:`~promptseg.models.sam2_memory.Track` per prompt (same order).

    Args:
        prompts: validated object prompts (boxes, points, key-slice boxes, z-ranges).
        shape: ``(Z, H, W)`` of the volume.
        masks: mask prompts ``{object label: {z: (H, W) bool}}`` replacing that
            object's box / points on slice ``z``.

    Raises:
        PromptError: a mask prompt for a label no object has, on a slice the object is
            not prompted on, or of the wrong shape.
    """
    from ..models.sam2_memory import Seed, Track

    depth, height, width = shape
    masks = masks or {}
    unknown = sorted(set(masks) - {p.label for p in prompts})
    if unknown:
        raise PromptError(f"mask prompts for labels {unknown} that no object has")
    tracks = []
    for prompt in prompts:
        own = {int(z): np.asarray(m, dtype=bool) for z, m in masks.get(prompt.label, {}).items()}
        for z, m in own.items():
            if z not in prompt.slices:
                raise PromptError(f"{prompt.display_name}: mask prompt on slice {z}, which has no prompt of the object")
            if m.shape != (height, width):
                raise PromptError(f"{prompt.display_name}: mask prompt of shape {m.shape} on a {(height, width)} slice")
        seeds = {}
        for z, sp in prompt.slices.items():
            if z in own:
                seeds[z] = Seed(mask=own[z])
                continue
            coords, labels = sp.point_arrays()
            box = None if sp.box is None else np.asarray(sp.box, dtype=np.float32)
            seeds[z] = Seed(box=box, points=coords, labels=labels)
        keys = sorted(prompt.slices)
        low, high = (keys[0], keys[-1]) if prompt.is_key_slices else (0, depth - 1)
        if prompt.z_range is not None:
            low, high = max(low, prompt.z_range[0]), min(high, prompt.z_range[1])
        tracks.append(Track(seeds=seeds, low=low, high=high, key_slices=prompt.is_key_slices,
                            bounded=prompt.is_key_slices or prompt.z_range is not None))
    return tracks


def results_from_tracks(prompts: Sequence[ObjectPrompt], tracks: Sequence[Track]) -> list[ObjectResult]:
    """The tracks' outcomes as :class:`ObjectResult` values (same order as ``prompts``)."""
    return [ObjectResult(p, logits=t.logits, scores=t.scores, stops=t.stops) for p, t in zip(prompts, tracks)]


def propagate_with_memory(
    segmenter,
    images,
    prompts: Sequence[ObjectPrompt],
    masks: Optional[dict[int, dict[int, np.ndarray]]] = None,
    progress: bool = False,
    **options,
) -> tuple[list[ObjectResult], list[int]]:
    """Segment every object through ``images`` with the backend's memory propagation.

    Args:
        segmenter: a backend with :attr:`Capability.MEMORY_PROPAGATION` (SAM2 family).
        images: ``(Z, H, W[, 3])`` uint8 slices (array or :class:`~promptseg.intensity.NormalizedSlices`).
        prompts: validated object prompts.
        masks: mask prompts, see :func:`tracks_from_prompts`.
        progress: show a progress bar.
        **options: the backend's options, e.g. ``stop_after=2`` (0 or None: never stop,
            track to the end of the volume), ``largest_component=True``
            (:meth:`~promptseg.models.sam2.SAM2Segmenter.propagate_memory`).

    Returns:
        One :class:`ObjectResult` per prompt and the slices the encoder processed, in order.

    Raises:
        ModelError: the backend has no memory propagation.
        PromptError: bad mask prompts.
    """
    require(segmenter, Capability.MEMORY_PROPAGATION,
            "use propagation='chain' (CLI: --propagation chain) or a SAM2-family model")
    if "stop_after" in options:
        stop_after = options["stop_after"]
        if stop_after is not None and (isinstance(stop_after, bool) or not isinstance(stop_after, (int, np.integer))
                                       or stop_after < 0):
            raise PromptError(f"--memory-stop-after (stop_after) must be a whole number >= 0, got {stop_after!r}")
        options["stop_after"] = (int(stop_after) or None) if stop_after is not None else None
    tracks = tracks_from_prompts(prompts, tuple(int(v) for v in images.shape[:3]), masks)
    encoded = segmenter.propagate_memory(images, tracks, progress=progress, **options)
    return results_from_tracks(prompts, tracks), encoded
