"""What the registry knows about a backend (kept apart so family modules can declare specs cheaply)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from .base import Segmenter


@dataclass(frozen=True)
class ModelSpec:
    """What ``promptseg models`` prints about a backend, and how to build it.

    Attributes:
        name: registry name (``--model``).
        description: one line.
        input_size: side of the square model input, pixels.
        normalisation: how a slice becomes the model input.
        checkpoint: the expected checkpoint file and where to get it.
        build: ``build(checkpoint, device, **kwargs) -> Segmenter``.
        needs_checkpoint: True when no weights are bundled (the user supplies a file).
        propagation: 3D modes the backend supports (``"chain"``, ``"memory"``).
        precisions: the ``precision=`` values ``build`` accepts (see docs/speed.md);
            backends without a real-slice accuracy check run fp32 (``"auto"``).
        preprocessing: ``preprocessing() -> object`` with ``name``, ``input_size``,
            ``prepare_slice``, ``prepare_mask`` and ``model_input`` of the backend, built
            without weights (what ``promptseg prepare`` needs); None: build the backend itself.
    """

    name: str
    description: str
    input_size: int
    normalisation: str
    checkpoint: str
    build: Callable[..., Segmenter]
    needs_checkpoint: bool = True
    propagation: tuple[str, ...] = field(default=("chain",))
    precisions: tuple[str, ...] = field(default=("auto", "fp32"))
    preprocessing: Optional[Callable[[], object]] = None
