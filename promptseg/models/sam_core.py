"""The SAM-family core: what LiteMedSAM, SAM / MedSAM and SAM2 share.

All three run the same two-step recipe on one slice -- an image encoder, then a
prompt encoder + mask decoder -- and differ only in their network, their
pre-processing, their input size and the margin their boxes were trained with.
This module holds the shared part, written once:

* :class:`GridPreprocessing` -- a reference mask on the model grid (nearest
  neighbour into the resized area, zero padding), given the family's
  ``input_size`` and :meth:`~GridPreprocessing.resized_size`;
* :class:`SamFamilySegmenter` -- :meth:`~SamFamilySegmenter.decode` (prompt checks,
  the single-point multimask rule, the best-of-three choice, up-sampling to the
  slice) and :meth:`~SamFamilySegmenter.box_from_mask` (tight box + the family's
  margin), on top of hooks a family fills in or overrides: ``to_model_coords``,
  ``model_box``, ``prompt_tensors``, ``decode_prompts`` and ``postprocess``;
* the training forward of SAM-style networks (:func:`sam_style_train_forward`,
  :func:`batch_prompts`, :func:`batch_features`).

The module imports torch only inside functions, so family modules that build on it
stay cheap to import (``promptseg models`` reads every family's specs).
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import PromptError
from .base import Embedding, Prediction, Segmenter

log = logging.getLogger(__name__)


def single_point(box, points) -> bool:
    """True for a prompt of exactly one point and no box.

    A single point is ambiguous (part / whole / larger structure), so SAM-family
    decoders then propose three masks and the one with the best predicted IoU is
    kept; every other prompt decodes one mask.
    """
    return box is None and points is not None and len(np.asarray(points).reshape(-1, 2)) == 1


class GridPreprocessing:
    """How a reference mask reaches the model grid (``prepare_mask``), for any SAM-family family.

    A family sets :attr:`input_size` and implements :meth:`resized_size`.
    """

    #: side of the square model input, pixels
    input_size: int = 0

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` of a ``(height, width)`` slice inside the model input (before padding)."""
        raise NotImplementedError

    def prepare_mask(self, mask: np.ndarray) -> np.ndarray:
        """A reference mask ``(H, W)`` on the model grid: nearest-neighbour resize into the
        resized area, zero padding bottom/right -> ``(S, S)`` bool."""
        from PIL import Image

        mask = np.asarray(mask)
        new_h, new_w = self.resized_size(*mask.shape[:2])
        small = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize((new_w, new_h), Image.NEAREST)) > 0
        out = np.zeros((self.input_size, self.input_size), dtype=bool)
        out[:new_h, :new_w] = small
        return out


class SamFamilySegmenter(GridPreprocessing, Segmenter):
    """A SAM-family model: encoder, then prompt encoder + mask decoder on the model grid.

    A family sets ``net`` (or its own network attribute), ``device``, :attr:`box_margin`
    and :attr:`box_trained`, implements :meth:`embed` and :meth:`to_model_coords`, and
    overrides the hooks whose upstream code differs from SAM's.
    """

    #: margin, in model-grid pixels per side, that :meth:`box_from_mask` adds to the tight box
    box_margin: float = 0.0
    #: the weights were trained with box prompts only: warn once when points come alone
    box_trained: bool = False
    device: Any = None
    net: Any = None
    _warned_points = False

    # -- hooks -----------------------------------------------------------------
    def to_model_coords(self, xy: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """Slice pixels ``(N, 2)`` of ``(x, y)`` -> model-grid pixels ``(N, 2)`` (float)."""
        raise NotImplementedError

    def model_box(self, box: Sequence[float], original_size: tuple[int, int]) -> np.ndarray:
        """A box ``(x0, y0, x1, y1)`` in slice pixels -> ``(4,)`` on the model grid (its two corners mapped)."""
        corners = self.to_model_coords(np.asarray(box, dtype=np.float64).reshape(2, 2), original_size)
        return np.asarray(corners, dtype=np.float64).reshape(4)

    def prompt_tensors(self, box, points, point_labels, original_size):
        """The prompt encoder's ``(points, boxes)`` arguments on the model grid.

        Default (SAM, LiteMedSAM): ``boxes`` ``(1, 1, 4)`` float, ``points`` a pair
        ``(coords (1, N, 2) float, labels (1, N) int)``; either may be None.
        """
        import torch

        boxes_t = None
        if box is not None:
            boxes_t = torch.as_tensor(self.model_box(box, original_size).reshape(1, 1, 4), dtype=torch.float32,
                                      device=self.device)
        points_t = None
        if points is not None:
            pts = self.to_model_coords(np.asarray(points, dtype=np.float64).reshape(-1, 2), original_size)
            labels = np.ones(len(pts)) if point_labels is None else np.asarray(point_labels).reshape(-1)
            points_t = (
                torch.as_tensor(np.asarray(pts), dtype=torch.float32, device=self.device)[None],
                torch.as_tensor(labels, dtype=torch.int32, device=self.device)[None],
            )
        return points_t, boxes_t

    def decode_prompts(self, features, points=None, boxes=None, masks=None, multimask_output: bool = False):
        """Prompt encoder + mask decoder on the model grid (``SamPredictor.predict_torch``'s core).

        Args:
            features: the embedding's features.
            points: ``(coords (B, N, 2), labels (B, N))`` tensors on the model grid, or None.
            boxes: ``(B, 1, 4)`` (or ``(B, 4)``) tensor on the model grid, or None.
            masks: ``(B, 1, s, s)`` mask-logit prompts, or None.

        Returns:
            ``(low-res logits (B, C, s, s), predicted IoU (B, C))``; C = 3 with
            ``multimask_output``, else 1.
        """
        sparse, dense = self.net.prompt_encoder(points=points, boxes=boxes, masks=masks)
        return self.net.mask_decoder(
            image_embeddings=features,
            image_pe=self.net.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )

    def postprocess(self, low_res, embedding: Embedding):
        """Decoder logits ``(B, C, s, s)`` -> ``(B, C, H, W)`` logits on the slice."""
        raise NotImplementedError

    # -- the shared recipe ---------------------------------------------------------
    def decode(
        self,
        embedding: Embedding,
        box: Optional[Sequence[float]] = None,
        points: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
    ) -> Prediction:
        """Segment one object: ``logits`` ``(H, W)`` at the slice's resolution, ``score`` = predicted IoU.

        A single point alone asks for three masks and keeps the one with the best
        predicted IoU (:func:`single_point`); every other prompt decodes one mask.
        """
        return self._decode_eager(embedding, box, points, point_labels)

    def decode_with_mask(
        self,
        embedding: Embedding,
        mask_logits: Optional[np.ndarray],
        box: Optional[Sequence[float]] = None,
        points: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
    ) -> Prediction:
        """:meth:`decode` with SAM's dense mask prompt (``mask_input``: the ``(s, s)`` low-res
        logits of an earlier prediction, s = 4 x the embedding's side, 256 for every family
        here); always the eager network, and the prediction carries its own ``low_res``."""
        if mask_logits is not None:
            mask_logits = np.asarray(mask_logits, dtype=np.float32)
            if mask_logits.ndim != 2 or mask_logits.shape[0] != mask_logits.shape[1]:
                raise ValueError(f"mask_logits must be (s, s) low-res logits, got shape {mask_logits.shape}")
        return self._decode_eager(embedding, box, points, point_labels, mask_logits)

    def _decode_eager(self, embedding, box, points, point_labels, mask_logits=None) -> Prediction:
        import torch

        if box is None and points is None:
            raise PromptError("a prompt needs a box or at least one point")
        if box is None and self.box_trained and not self._warned_points:
            self._warned_points = True
            log.warning("%s was trained with box prompts only; a prompt of points alone rarely gives a useful mask "
                        "with it -- prefer a box or a line (points work as refinements of a box)", self.name)
        multimask = single_point(box, points)
        with torch.inference_mode():
            points_t, boxes_t = self.prompt_tensors(box, points, point_labels, embedding.original_size)
            masks_t = None
            if mask_logits is not None:
                masks_t = torch.as_tensor(mask_logits, device=self.device)[None, None]
            low_res, iou = self.decode_prompts(embedding.features, points_t, boxes_t, masks=masks_t,
                                               multimask_output=multimask)
            best = int(torch.argmax(iou[0])) if multimask else 0
            logits = self.postprocess(low_res[:, best : best + 1], embedding)
        return Prediction(logits=logits[0, 0].float().cpu().numpy(), score=float(iou[0, best]),
                          low_res=low_res[0, best].float().cpu().numpy())

    def box_from_mask(self, mask: np.ndarray) -> tuple[float, float, float, float]:
        """The tight box of ``mask`` grown by :attr:`box_margin` model-grid pixels per side,
        clipped to the slice; ``(x0, y0, x1, y1)`` in slice pixels."""
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            raise ValueError("box_from_mask needs a non-empty mask")
        height, width = mask.shape
        rows, cols = np.nonzero(mask)
        x0, x1, y0, y1 = float(cols.min()), float(cols.max()), float(rows.min()), float(rows.max())
        if self.box_margin:
            new_h, new_w = self.resized_size(height, width)
            mx, my = self.box_margin * width / new_w, self.box_margin * height / new_h
            x0, y0 = max(0.0, x0 - mx), max(0.0, y0 - my)
            x1, y1 = min(width - 1.0, x1 + mx), min(height - 1.0, y1 + my)
        return (x0, y0, x1, y1)

    # -- fine-tuning -----------------------------------------------------------------
    def train_forward(self, net, batch: dict, device) -> tuple[Any, Any]:
        """Differentiable forward of a training batch (default: :func:`sam_style_train_forward`)."""
        return sam_style_train_forward(net, batch, device)


# ---------------------------------------------------------------------------
# training forward
def batch_features(net, batch: dict, device):
    """Image features of a training batch: its cached ``"embedding"`` or ``net.image_encoder(batch["image"])``."""
    if "embedding" in batch:
        return batch["embedding"].to(device)
    return net.image_encoder(batch["image"].to(device))


def batch_prompts(batch: dict, device):
    """``(points, boxes)`` of a training batch on ``device``.

    ``points`` is ``(coords (B, P, 2), labels (B, P))`` or None when the batch has no
    points; ``boxes`` is ``(B, 4)`` in model-input pixels, or None when the batch's
    boxes are NaN (no box).
    """
    import torch

    boxes = batch["box"].to(device)
    boxes = None if torch.isnan(boxes).any() else boxes
    points = None
    if batch["points"].shape[1] > 0:
        points = (batch["points"].to(device), batch["point_labels"].to(device))
    return points, boxes


def sam_style_train_forward(net, batch: dict, device) -> tuple[Any, Any]:
    """Training forward of a SAM-style network whose mask decoder takes one prompt per image
    and returns masks on the model-input grid (LiteMedSAM: 256 px in, 256 px masks out).

    Args:
        net: the module being trained (``image_encoder`` / ``prompt_encoder`` / ``mask_decoder``).
        batch: ``"image"`` ``(B, 3, S, S)`` model inputs or ``"embedding"`` (cached encoder
            outputs), ``"box"`` ``(B, 4)`` in model-input pixels (NaN when there is no box),
            ``"points"`` ``(B, P, 2)`` and ``"point_labels"`` ``(B, P)``.

    Returns:
        ``(logits (B, 1, s, s), predicted IoU (B, 1))``.
    """
    features = batch_features(net, batch, device)
    points, boxes = batch_prompts(batch, device)
    sparse, dense = net.prompt_encoder(points=points, boxes=None if boxes is None else boxes[:, None, :], masks=None)
    return net.mask_decoder(
        image_embeddings=features,
        image_pe=net.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=False,
    )
