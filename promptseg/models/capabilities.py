"""What a backend can do beyond prompted 2D segmentation, declared, and checked in one place.

Every :class:`~promptseg.models.base.Segmenter` embeds a slice, decodes a box or points
and makes the next slice's box from a mask -- enough for 2D segmentation and for
chaining through a volume. The rest is optional, and a backend *declares* what it
offers: its :class:`~promptseg.models.spec.ModelSpec` lists its :class:`Capability`
values, and a built segmenter carries the same set as ``segmenter.capabilities``.
Each capability has an interface (a :class:`typing.Protocol`) naming the methods
that come with it; the registry tests check that every backend declaring a
capability has them.

:func:`promptseg.models.require` is the one check: given a registry name it
decides before any weights are loaded, given a built segmenter it reads the
segmenter's own set, and either way a missing capability is one
:class:`~promptseg.errors.ModelError` line.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Optional, Protocol, Sequence, runtime_checkable

import numpy as np



class Capability(str, Enum):
    """Optional abilities of a backend (the value is how messages name it)."""

    #: SAM2-style video propagation with a memory bank (:class:`MemoryPropagator`)
    MEMORY_PROPAGATION = "memory propagation"
    #: prompt-free masks from a grid of points, SAM's automatic mode (:class:`AutomaticMaskBackend`)
    AUTOMATIC_MASKS = "automatic mask generation"
    #: fine-tuning with promptseg's training loop (:class:`Trainable`)
    FINE_TUNING = "fine-tuning"
    #: training from cached image-encoder outputs when the encoder is frozen
    CACHED_EMBEDDINGS = "training from cached image embeddings"
    #: a copy of the backend at another model input size (:class:`ResizableInput`)
    RESIZABLE_INPUT = "another model input size"


@runtime_checkable
class MemoryPropagator(Protocol):
    """:attr:`Capability.MEMORY_PROPAGATION`: tracks objects through a volume with a memory bank.

    See :func:`promptseg.models.sam2_memory.track` for the options and
    :class:`promptseg.models.sam2_memory.Track` for the seeds and results; returns the
    slices encoded, in order.
    """

    def propagate_memory(self, images: Any, tracks: Sequence[Any], progress: bool = False, **options) -> list[int]: ...


@runtime_checkable
class AutomaticMaskBackend(Protocol):
    """:attr:`Capability.AUTOMATIC_MASKS`: what ``SamAutomaticMaskGenerator`` needs of a backend.

    ``net`` is an upstream ``segment_anything`` ``Sam``; ``transform_coords`` maps slice
    pixels to the model grid; ``decode_prompts`` runs prompt encoder + mask decoder on
    that grid; ``postprocess`` up-samples decoder logits to the slice.
    """

    net: Any

    def transform_coords(self, coords: np.ndarray, original_size: tuple[int, int]) -> np.ndarray: ...

    def decode_prompts(self, features, points=None, boxes=None, masks=None, multimask_output: bool = False): ...

    def postprocess(self, low_res, embedding): ...


@runtime_checkable
class Trainable(Protocol):
    """:attr:`Capability.FINE_TUNING`: what :mod:`promptseg.training` needs of a backend.

    ``net`` is the ``torch.nn.Module`` whose parameters train (children
    ``image_encoder`` / ``prompt_encoder`` / ``mask_decoder``); ``prepare_slice`` /
    ``prepare_mask`` / ``model_input`` bring a slice and its mask to the model grid;
    ``train_forward`` is the differentiable forward of a batch.
    """

    net: Any

    def prepare_slice(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]: ...

    def prepare_mask(self, mask: np.ndarray) -> np.ndarray: ...

    def model_input(self, prepared: np.ndarray, size: tuple[int, int]) -> np.ndarray: ...

    def train_forward(self, net, batch: dict, device) -> tuple[Any, Any]: ...


@runtime_checkable
class ResizableInput(Protocol):
    """:attr:`Capability.RESIZABLE_INPUT`: the same weights at another square input size."""

    def with_input_size(self, size: int) -> Any: ...


#: the interface that comes with each capability (None: a flag on top of another interface)
INTERFACES: dict[Capability, Optional[type]] = {
    Capability.MEMORY_PROPAGATION: MemoryPropagator,
    Capability.AUTOMATIC_MASKS: AutomaticMaskBackend,
    Capability.FINE_TUNING: Trainable,
    Capability.CACHED_EMBEDDINGS: None,
    Capability.RESIZABLE_INPUT: ResizableInput,
}
