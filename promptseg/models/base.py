"""The :class:`Segmenter` interface every model family implements.

A promptable segmenter works in two steps, and promptseg never mixes them:

1. :meth:`Segmenter.embed` turns one 2D slice into an :class:`Embedding`
   (the expensive image-encoder pass, done at most once per slice and call);
2. :meth:`Segmenter.decode` turns an embedding plus a prompt (box and/or
   points) into a :class:`Prediction` (the cheap prompt-encoder + mask-decoder
   pass, done once per object and slice).

All coordinates a caller passes or receives are in the slice's own pixel grid:
``x`` = column, ``y`` = row, floats allowed, ``(0, 0)`` the centre of the
top-left pixel. A backend converts them to its model input grid itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np


@dataclass
class Embedding:
    """A slice after the image encoder.

    Attributes:
        features: backend-specific encoder output (e.g. a ``(1, 256, 64, 64)`` tensor).
        original_size: ``(H, W)`` of the slice that was embedded, pixels.
        input_size: ``(h, w)`` of the resized slice inside the model input
            (before padding), pixels.
    """

    features: Any
    original_size: tuple[int, int]
    input_size: tuple[int, int]


@dataclass
class Prediction:
    """One object's mask on one slice.

    Attributes:
        logits: ``(H, W)`` float32 mask logits at the slice's resolution
            (``> 0`` is inside).
        score: the model's own predicted IoU of the mask, in [0, 1] (roughly).
    """

    logits: np.ndarray
    score: float

    @property
    def mask(self) -> np.ndarray:
        """``(H, W)`` bool mask, ``logits > 0`` (probability > 0.5)."""
        return self.logits > 0


class Segmenter(ABC):
    """A promptable 2D segmenter (one SAM-family model with its weights).

    Subclasses set :attr:`name` and :attr:`input_size` and implement
    :meth:`embed`, :meth:`decode` and :meth:`box_from_mask`.
    """

    #: registry name, e.g. ``"litemedsam"``
    name: str = "segmenter"
    #: side of the square model input, pixels
    input_size: int = 0

    @abstractmethod
    def embed(self, image: np.ndarray) -> Embedding:
        """Encode one slice.

        Args:
            image: ``(H, W)`` or ``(H, W, 3)`` uint8, already intensity-normalised
                (see :func:`promptseg.intensity.normalize`).
        """

    @abstractmethod
    def decode(
        self,
        embedding: Embedding,
        box: Optional[Sequence[float]] = None,
        points: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
    ) -> Prediction:
        """Segment one object on an embedded slice.

        Args:
            embedding: from :meth:`embed`.
            box: ``(x0, y0, x1, y1)`` in slice pixels, or None.
            points: ``(N, 2)`` array of ``(x, y)`` in slice pixels, or None.
            point_labels: ``(N,)`` array, 1 = inside the object, 0 = outside.
        """

    @abstractmethod
    def box_from_mask(self, mask: np.ndarray) -> tuple[float, float, float, float]:
        """The box prompt a model of this family expects for the object in ``mask``.

        Used to chain a mask on one slice into a prompt on the next one; each
        family adds the margin it was trained with. ``mask`` is ``(H, W)`` bool
        and must not be empty. Returns ``(x0, y0, x1, y1)`` in slice pixels.
        """

    def describe(self) -> str:
        return f"{self.name} (input {self.input_size} px)"

    # -- fine-tuning hooks (promptseg.training) ------------------------------
    # A backend that can be fine-tuned also provides ``net`` (the torch module whose
    # parameters train, with ``image_encoder`` / ``prompt_encoder`` / ``mask_decoder``
    # children), ``prepare_slice``, ``prepare_mask`` and ``model_input`` (see
    # LiteMedSAM), and may override :meth:`train_forward`.

    def train_forward(self, net, batch: dict, device) -> tuple[Any, Any]:
        """Differentiable forward of a training batch.

        Args:
            net: the module being trained (``self.net`` or a LoRA-injected copy).
            batch: ``"image"`` ``(B, 3, S, S)`` model inputs or ``"embedding"``
                (cached encoder outputs), ``"box"`` ``(B, 4)`` in model-input pixels
                (NaN when there is no box), ``"points"`` ``(B, P, 2)`` and
                ``"point_labels"`` ``(B, P)``.

        Returns:
            ``(logits (B, 1, S, S) on the model-input grid, predicted IoU (B, 1))``.
        """
        return sam_style_train_forward(net, batch, device)


def batch_features(net, batch: dict, device):
    """Image features of a training batch: its cached ``"embedding"`` or ``net.image_encoder(batch["image"])``."""
    if "embedding" in batch:
        return batch["embedding"].to(device)
    return net.image_encoder(batch["image"].to(device))


def sam_style_train_forward(net, batch: dict, device) -> tuple[Any, Any]:
    """Training forward of a SAM-style network whose mask decoder takes one prompt per image
    and returns masks on the model-input grid (LiteMedSAM: 256 px in, 256 px masks out)."""
    import torch

    features = batch_features(net, batch, device)
    boxes = batch["box"].to(device)
    has_box = not torch.isnan(boxes).any()
    points = None
    if batch["points"].shape[1] > 0:
        points = (batch["points"].to(device), batch["point_labels"].to(device))
    sparse, dense = net.prompt_encoder(points=points, boxes=boxes[:, None, :] if has_box else None, masks=None)
    return net.mask_decoder(
        image_embeddings=features,
        image_pe=net.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=False,
    )
