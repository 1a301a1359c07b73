"""Prompt-free 2D segmentation: SAM's automatic mask generation on one slice.

>>> from promptseg.automatic import automatic_masks
>>> seg = promptseg.build_segmenter("sam-vit-b", checkpoint="sam_vit_b_01ec64.pth")
>>> labels = automatic_masks(volume, seg, slice=33)        # Volume: label map on the input grid
>>> labels.metadata["masks"][0]                            # label 1 = the largest mask
{'label': 1, 'area': 5123, 'predicted_iou': 0.97, 'stability_score': 0.98, 'point': [...], 'box': [...]}

How it works: ``segment_anything.SamAutomaticMaskGenerator`` prompts the model
with a regular grid of ``points_per_side`` x ``points_per_side`` single points,
keeps the three-mask proposals whose predicted IoU exceeds ``pred_iou_thresh``
and whose *stability score* (IoU of the mask thresholded at logit -1 and +1)
exceeds ``stability_score_thresh``, and removes duplicates by box non-maximum
suppression. promptseg runs that generator unchanged, except that the slice
is encoded and the masks are up-sampled by the backend itself
(:meth:`~promptseg.models.sam.SamSegmenter.embed` /
:meth:`~promptseg.models.sam.SamSegmenter.postprocess`), so the slice gets the
intensity normalisation of :func:`promptseg.intensity.normalize` and the same
encoder runtime as prompted segmentation. For the SAM backends the result
equals the upstream generator's on the same RGB slice.

Which backends: those whose weights were trained for point prompts with
three-mask output -- the SAM backends. MedSAM was fine-tuned with box prompts
and single-mask output only, so the grid of single points and the three-mask
tokens would use parts of the network its training never touched (and its
predicted-IoU head, which the filtering relies on, was not trained either):
MedSAM, LiteMedSAM and the SAM2 family are refused with :class:`ModelError`.

The label map: one label per kept mask, numbered by decreasing area (label 1 is
the largest). Masks may overlap; each pixel gets the label of the smallest mask
that covers it, so an object inside a larger one stays visible. Masks left with
fewer than ``max(1, min_area)`` visible pixels are dropped and the labels are
renumbered without gaps.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .errors import ModelError, PromptError
from .volume import Volume


def _check_backend(segmenter) -> None:
    name = getattr(segmenter, "name", type(segmenter).__name__)
    net = getattr(segmenter, "net", None)
    if net is None or not hasattr(segmenter, "postprocess") or type(net).__name__ != "Sam":
        raise ModelError(
            f"model {name} has no automatic mask generation: it needs a SAM model "
            "(--model sam-vit-b, sam-vit-l or sam-vit-h with its --checkpoint)"
        )
    if not getattr(segmenter, "supports_automatic", False):
        raise ModelError(
            f"model {name} was trained with box prompts and single-mask output only, which automatic mask "
            "generation (a grid of single points, three masks each) does not use; use sam-vit-b, sam-vit-l or sam-vit-h"
        )


def _predictor(segmenter):
    """A ``SamPredictor`` whose image encoding and mask up-sampling are the backend's own."""
    import torch
    from segment_anything import SamPredictor

    class _Coords:
        """The ``transform`` the generator calls: slice pixels -> 1024-grid pixels."""

        def apply_coords(self, coords: np.ndarray, original_size) -> np.ndarray:
            return segmenter.transform_coords(coords, tuple(original_size))

    class BackendPredictor(SamPredictor):
        def __init__(self) -> None:
            super().__init__(segmenter.net)
            self.transform = _Coords()
            self.embedding = None

        def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
            self.reset_image()
            self.embedding = segmenter.embed(np.ascontiguousarray(image))
            self.features = self.embedding.features
            self.original_size = self.embedding.original_size
            self.input_size = self.embedding.input_size
            self.is_image_set = True

        @torch.no_grad()
        def predict_torch(self, point_coords, point_labels, boxes=None, mask_input=None,
                          multimask_output=True, return_logits=False):
            points = (point_coords, point_labels) if point_coords is not None else None
            sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
            low_res, iou = self.model.mask_decoder(
                image_embeddings=self.features,
                image_pe=self.model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask_output,
            )
            masks = segmenter.postprocess(low_res, self.embedding)
            if not return_logits:
                masks = masks > self.model.mask_threshold
            return masks, iou, low_res

    return BackendPredictor()


def generate_masks(image: np.ndarray, segmenter, points_per_side: int = 32, pred_iou_thresh: float = 0.88,
                   stability_score_thresh: float = 0.95, **kwargs) -> list[dict]:
    """Run ``SamAutomaticMaskGenerator`` on one slice with the backend's encoding.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` uint8, intensity-normalised.
        segmenter: a SAM backend (:class:`~promptseg.models.sam.SamSegmenter`).
        points_per_side, pred_iou_thresh, stability_score_thresh, **kwargs: the
            generator's parameters (``points_per_batch``, ``box_nms_thresh``,
            ``crop_n_layers``, ``min_mask_region_area`` (needs OpenCV), ...).

    Returns:
        The generator's records (``segmentation`` ``(H, W)`` bool, ``area``, ``bbox``
        XYWH, ``predicted_iou``, ``stability_score``, ``point_coords``, ``crop_box``).

    Raises:
        ModelError: the backend has no automatic mode (see the module docstring).
    """
    _check_backend(segmenter)
    from segment_anything import SamAutomaticMaskGenerator

    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if kwargs.get("output_mode", "binary_mask") != "binary_mask":
        raise ValueError("generate_masks returns binary masks; output_mode cannot be changed")
    kwargs.pop("output_mode", None)
    if points_per_side is not None and int(points_per_side) < 1:
        raise PromptError(f"points_per_side must be >= 1, got {points_per_side}")
    generator = SamAutomaticMaskGenerator(
        segmenter.net, points_per_side=points_per_side, pred_iou_thresh=pred_iou_thresh,
        stability_score_thresh=stability_score_thresh, output_mode="binary_mask", **kwargs,
    )
    generator.predictor = _predictor(segmenter)
    return generator.generate(np.ascontiguousarray(image))


def label_map(records: list[dict], shape: tuple[int, int], min_area: int = 0) -> tuple[np.ndarray, list[dict]]:
    """Masks -> one non-overlapping ``(H, W)`` label map (see the module docstring) and a summary per label.

    Returns:
        ``(labels uint8 / uint16, [{"label", "area" (visible px), "predicted_iou",
        "stability_score", "point" [x, y], "box" [x0, y0, x1, y1]}, ...])``.
    """
    order = sorted(range(len(records)), key=lambda i: -int(records[i]["area"]))
    ranks = np.zeros(shape, dtype=np.int32)
    for rank, i in enumerate(order, start=1):  # larger first: smaller masks paint over them
        ranks[np.asarray(records[i]["segmentation"], dtype=bool)] = rank
    visible = np.bincount(ranks.ravel(), minlength=len(order) + 1)
    kept = [rank for rank in range(1, len(order) + 1) if visible[rank] >= max(1, int(min_area))]
    lookup = np.zeros(len(order) + 1, dtype=np.int64)
    lookup[kept] = np.arange(1, len(kept) + 1)
    labels = lookup[ranks].astype(np.uint8 if len(kept) <= 255 else np.uint16)
    summary = []
    for new, rank in enumerate(kept, start=1):
        rec = records[order[rank - 1]]
        x, y, w, h = rec["bbox"]
        summary.append({
            "label": new, "area": int(visible[rank]), "predicted_iou": float(rec["predicted_iou"]),
            "stability_score": float(rec["stability_score"]), "point": [float(v) for v in rec["point_coords"][0]],
            "box": [float(x), float(y), float(x + w), float(y + h)],
        })
    return labels, summary


def automatic_masks(
    volume: Volume,
    segmenter,
    slice: int = 0,
    points_per_side: int = 32,
    pred_iou_thresh: float = 0.88,
    stability_score_thresh: float = 0.95,
    min_area: int = 0,
    modality: Optional[str] = None,
    window=None,
    **kwargs,
) -> Volume:
    """Segment everything SAM finds on one slice, without prompts.

    Args:
        volume: the image (2D images have one slice).
        segmenter: a SAM backend, e.g. ``build_segmenter("sam-vit-b", checkpoint=...)``.
        slice: index of the slice (``z``).
        points_per_side: the point grid is ``points_per_side`` squared points.
        pred_iou_thresh: keep masks whose predicted IoU exceeds this (0-1).
        stability_score_thresh: keep masks at least this stable (0-1).
        min_area: drop masks with fewer visible pixels than this.
        modality, window: intensity normalisation (:func:`promptseg.intensity.normalize`).
        **kwargs: more ``SamAutomaticMaskGenerator`` parameters (``points_per_batch``,
            ``box_nms_thresh``, ``crop_n_layers``, ...).

    Returns:
        A label map :class:`~promptseg.volume.Volume` on the input grid (every other
        slice 0); ``metadata["masks"]`` describes each label (area in pixels,
        predicted IoU, stability score, the grid point (x, y) that produced it, its box
        ``(x0, y0, x1, y1)``), ``metadata["slice"]`` the slice.

    Raises:
        ModelError: the backend has no automatic mode (LiteMedSAM, MedSAM, SAM2 family).
        PromptError: ``slice`` outside the volume.
    """
    from .intensity import NormalizedSlices

    _check_backend(segmenter)
    depth = volume.num_slices
    if not isinstance(slice, (int, np.integer)) or not 0 <= int(slice) < depth:
        raise PromptError(f"slice {slice} is outside the volume (slices 0..{depth - 1})")
    z = int(slice)
    image = NormalizedSlices.of(volume, modality=modality, window=window)[z]
    records = generate_masks(image, segmenter, points_per_side=points_per_side, pred_iou_thresh=pred_iou_thresh,
                             stability_score_thresh=stability_score_thresh, **kwargs)
    plane, summary = label_map(records, volume.shape[1:], min_area=min_area)
    labels = np.zeros(volume.shape, dtype=plane.dtype)
    labels[z] = plane
    out = volume.with_array(labels, modality=None)
    out.metadata = {"source": volume.metadata.get("source"), "kind": "labels", "slice": z, "masks": summary,
                    "model": getattr(segmenter, "name", None)}
    return out
