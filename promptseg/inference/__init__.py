"""Inference: from prompts to masks through a volume.

- :mod:`.segment` -- :func:`segment`, the one-call API (volume + prompts -> label map);
- :mod:`.chain` -- chaining slice to slice (:func:`iter_chain` yields each decision,
  :func:`propagate` runs it to the end);
- :mod:`.stop_rule` -- when chaining stops without ground truth;
- :mod:`.memory` -- the same through a backend's memory propagation (SAM2 family);
- :mod:`.results` -- per-object results and the label map they compose;
- :mod:`.automatic` -- prompt-free masks on one slice (SAM's automatic mode).

Why a direction ended is a :class:`promptseg.stops.Stop` in every engine.
"""

from .chain import ChainStep, iter_chain, propagate
from .results import ObjectResult, SegmentationResult, compose_labels
from .segment import segment
from .stop_rule import StopRule

__all__ = [
    "ChainStep",
    "ObjectResult",
    "SegmentationResult",
    "StopRule",
    "compose_labels",
    "iter_chain",
    "propagate",
    "segment",
]
