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
        features: backend-specific encoder output (LiteMedSAM: ``(1, 256, 64, 64)`` float32,
            a numpy array on CPU and a tensor on other devices; SAM2: a dict of tensors).
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
        low_res: ``(s, s)`` float32 logits on the decoder's own grid (SAM family: 256 x 256,
            padding included), which :meth:`Segmenter.decode_with_mask` takes back as a
            dense mask prompt; None when the decode path does not give them.
    """

    logits: np.ndarray
    score: float
    low_res: Optional[np.ndarray] = None

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
    #: what the backend offers beyond 2D segmentation and chaining (memory propagation,
    #: automatic masks, fine-tuning, ...; see :mod:`promptseg.models.capabilities`);
    #: family classes carry their registry spec's set
    capabilities: frozenset = frozenset()

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

    def decode_interactive(
        self,
        embedding: Embedding,
        box: Optional[Sequence[float]] = None,
        points: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
    ) -> Prediction:
        """:meth:`decode` for one slice a person is looking at (the viewer's prompt).

        A backend may answer it with a faster decoder whose masks were judged to agree
        with :meth:`decode`'s on single real slices (LiteMedSAM: bf16 where the CPU has
        it and the gate passes); 3D propagation always calls :meth:`decode`, whose
        small per-slice differences would compound along a chain. Default: :meth:`decode`.
        """
        return self.decode(embedding, box=box, points=points, point_labels=point_labels)

    def decode_with_mask(
        self,
        embedding: Embedding,
        mask_logits: Optional[np.ndarray],
        box: Optional[Sequence[float]] = None,
        points: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
    ) -> Prediction:
        """:meth:`decode` with a dense mask prompt, returning :attr:`Prediction.low_res`.

        Args:
            mask_logits: ``(s, s)`` low-resolution logits of an earlier prediction
                (:attr:`Prediction.low_res`, e.g. the neighbouring slice's), or None for no
                mask prompt (the prediction still carries its ``low_res``).
            box, points, point_labels: as :meth:`decode`.

        Raises:
            OptionError: the backend takes no mask prompt (default).
        """
        raise mask_prompt_refused(self)

    @abstractmethod
    def box_from_mask(self, mask: np.ndarray) -> tuple[float, float, float, float]:
        """The box prompt a model of this family expects for the object in ``mask``.

        Used to chain a mask on one slice into a prompt on the next one; each
        family adds the margin it was trained with. ``mask`` is ``(H, W)`` bool
        and must not be empty. Returns ``(x0, y0, x1, y1)`` in slice pixels.
        """

    def describe(self) -> str:
        return f"{self.name} (input {self.input_size} px)"


def takes_mask_prompt(segmenter: Segmenter) -> bool:
    """Does the backend implement :meth:`Segmenter.decode_with_mask`?"""
    return type(segmenter).decode_with_mask is not Segmenter.decode_with_mask


def mask_prompt_refused(segmenter: Segmenter):
    """The :class:`~promptseg.errors.OptionError` for a mask prompt to a backend without one."""
    from ..errors import OptionError

    return OptionError(f"model {segmenter.name} does not take a mask prompt (--mask-prompt needs a SAM-family model)")


def half_logits(logits: np.ndarray) -> np.ndarray:
    """Mask logits as float16 for storage, keeping the mask: ``half_logits(x) > 0 == x > 0``.

    Plain rounding sends positive logits below float16's smallest subnormal (about
    6e-8) to 0, which would drop a pixel from the mask; those become the smallest
    positive float16 instead. Everything else is ``logits.astype(np.float16)``.
    """
    logits = np.asarray(logits)
    half = logits.astype(np.float16)
    lost = (logits > 0) & ~(half > 0)
    if lost.any():
        half[lost] = np.float16(2.0**-24)
    return half
