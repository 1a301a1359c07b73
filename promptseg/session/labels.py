"""A session's labels: name, colour, visibility, prompts and per-slice masks.

Masks are kept as float16 logits per slice, like
:class:`promptseg.inference.ObjectResult`, so overlapping labels are
resolved the way :func:`promptseg.inference.compose_labels` does (the more
confident model output wins). A slice painted by hand gets logits of
``+EDIT_LOGIT`` inside and ``-EDIT_LOGIT`` outside.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np

from ..models.base import half_logits
from ..prompts import SlicePrompt
from ..stops import Stop

#: logit magnitude of hand-edited voxels (larger than a model's usual |logit|, so edits win overlaps)
EDIT_LOGIT = 50.0

#: label colours (RGB), ITK-SNAP's default label table order for labels 1..12, then cycled
PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255),
    (255, 239, 213), (0, 0, 205), (205, 133, 63), (210, 180, 140), (102, 205, 170), (0, 0, 128),
)


def default_color(value: int) -> tuple[int, int, int]:
    return PALETTE[(value - 1) % len(PALETTE)]


@dataclass
class Label:
    """One label of a session (the value it gets in the label map and everything about it).

    Attributes:
        value: label value, 1..65535.
        name, color, visible: how it is shown (colour RGB 0..255).
        prompts: the user's prompts, ``{z: SlicePrompt}``.
        edited: slices painted by hand.
        logits: ``{z: (H, W) float16}`` for slices where the label is not empty.
        scores: the model's predicted IoU per slice it segmented.
        seed: the slice the first propagation started from (None before any).
        last_prompted: the slice prompted last (where :meth:`Session.propagate` starts).
        stops: why the last propagation ended, per direction.
    """

    value: int
    name: str
    color: tuple[int, int, int]
    visible: bool = True
    prompts: dict[int, SlicePrompt] = field(default_factory=dict)
    edited: set[int] = field(default_factory=set)
    logits: dict[int, np.ndarray] = field(default_factory=dict)
    scores: dict[int, float] = field(default_factory=dict)
    seed: Optional[int] = None
    last_prompted: Optional[int] = None
    stops: dict[str, Stop] = field(default_factory=dict)

    def snapshot(self) -> "Label":
        """A copy sharing the (never mutated) arrays: what undo restores."""
        return replace(
            self,
            prompts=dict(self.prompts),
            edited=set(self.edited),
            logits=dict(self.logits),
            scores=dict(self.scores),
            stops=dict(self.stops),
        )

    def mask(self, z: int, shape: tuple[int, int]) -> np.ndarray:
        """``(H, W)`` bool mask on slice ``z`` (before overlaps with other labels are resolved)."""
        logits = self.logits.get(z)
        return np.zeros(shape, dtype=bool) if logits is None else logits > 0

    def set_slice(self, z: int, logits: Optional[np.ndarray], score: Optional[float] = None) -> None:
        """Store slice ``z``'s logits (dropped when empty or None)."""
        if logits is None or not (logits > 0).any():
            self.logits.pop(z, None)
            self.scores.pop(z, None)
            return
        self.logits[z] = half_logits(logits)
        if score is None:
            self.scores.pop(z, None)
        else:
            self.scores[z] = float(score)

    @property
    def slices(self) -> list[int]:
        return sorted(self.logits)

    def describe(self) -> dict:
        """JSON-ready summary."""
        return {
            "value": self.value,
            "name": self.name,
            "color": list(self.color),
            "visible": self.visible,
            "slices": self.slices,
            "prompted_slices": sorted(self.prompts),
            "edited_slices": sorted(self.edited),
            "seed": self.seed,
            "stops": {d: str(stop) for d, stop in self.stops.items()},
        }


def edit_logits(mask: np.ndarray) -> np.ndarray:
    """Logits of a hand-painted mask."""
    return np.where(mask, EDIT_LOGIT, -EDIT_LOGIT).astype(np.float16)
