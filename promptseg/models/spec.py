"""What the registry knows about a backend (kept apart so family modules can declare specs cheaply)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from .base import Segmenter
from .capabilities import Capability


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
        capabilities: what the backend offers beyond prompted 2D segmentation and
            chaining (see :mod:`promptseg.models.capabilities`); a built segmenter
            carries the same set.
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
    capabilities: frozenset[Capability] = field(default_factory=frozenset)
    precisions: tuple[str, ...] = field(default=("auto", "fp32"))
    preprocessing: Optional[Callable[[], object]] = None

    @property
    def propagation(self) -> tuple[str, ...]:
        """3D modes: ``"chain"`` always, ``"memory"`` with :attr:`Capability.MEMORY_PROPAGATION`."""
        return ("chain", "memory") if Capability.MEMORY_PROPAGATION in self.capabilities else ("chain",)
