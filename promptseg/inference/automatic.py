"""Prompt-free 2D segmentation: SAM's automatic mask generation on one slice.

>>> from promptseg.inference.automatic import automatic_masks
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
three-mask output -- the SAM backends and MobileSAM (SAM's decoder on a distilled
encoder). MedSAM was fine-tuned with box prompts and single-mask output only, so the grid of single points and the three-mask
tokens would use parts of the network its training never touched (and its
predicted-IoU head, which the filtering relies on, was not trained either):
MedSAM, LiteMedSAM and the SAM2 family are refused with :class:`ModelError`.

The label map: one label per kept mask, numbered by decreasing mask area (label 1
is the largest mask). Masks may overlap; each pixel gets the label of the smallest
mask that covers it, so an object inside a larger one stays visible. Masks left
with fewer than ``max(1, min_area)`` visible pixels are dropped and the labels are
renumbered without gaps; their pixels go to the kept mask beneath them, if any.

Command line: ``promptseg auto IMAGE -o LABELS --model sam-vit-b --checkpoint
sam_vit_b_01ec64.pth --slice Z [--summary masks.json] [--overlay masks.png]``
(:mod:`promptseg.cli.auto`); :func:`save_summary` writes the JSON summary.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import ModelError, PromptError
from ..models import Capability, backends_with, has
from ..volume import Volume


def automatic_model_names() -> list[str]:
    """Registry names of the backends that offer automatic mask generation (the SAM backends, MobileSAM)."""
    return backends_with(Capability.AUTOMATIC_MASKS)


def check_model(model) -> None:
    """Refuse a backend without automatic mode -- a registry name before anything is
    loaded, or a built segmenter -- by its declared capabilities.

    Raises:
        ModelError: one line: an unknown name (naming the models that have the
            automatic mode), or why a registered backend has none.
    """
    from ..models.registry import MODELS
    from ..models.sam import VARIANTS

    name = model if isinstance(model, str) else getattr(model, "name", type(model).__name__)
    if isinstance(model, str) and name not in MODELS:
        raise ModelError(f"unknown model {name!r}; automatic masks need {_models_text()}")
    if has(model, Capability.AUTOMATIC_MASKS):
        return
    if name in VARIANTS:  # SAM's architecture, weights fine-tuned for boxes (MedSAM)
        raise ModelError(_TRAINED_WITH_BOXES.format(name=name, models=_models_text()))
    raise ModelError(_NO_AUTOMATIC.format(name=name, models=_models_text()))


def _models_text() -> str:
    names = automatic_model_names()
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


_NO_AUTOMATIC = ("model {name} has no automatic mask generation: it needs a SAM model "
                 "(--model {models} with its --checkpoint)")
_TRAINED_WITH_BOXES = ("model {name} was trained with box prompts and single-mask output only, which automatic mask "
                       "generation (a grid of single points, three masks each) does not use; use {models}")


def _predictor(segmenter, on_step: Callable[[], None] | None = None):
    """A ``SamPredictor`` whose image encoding and mask up-sampling are the backend's own.

    ``on_step`` is called after each image encoding and each batch of points (progress).
    """
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
            if on_step is not None:
                on_step()

        @torch.no_grad()
        def predict_torch(self, point_coords, point_labels, boxes=None, mask_input=None,
                          multimask_output=True, return_logits=False):
            points = (point_coords, point_labels) if point_coords is not None else None
            low_res, iou = segmenter.decode_prompts(self.features, points, boxes, mask_input, multimask_output)
            masks = segmenter.postprocess(low_res, self.embedding)
            if not return_logits:
                masks = masks > self.model.mask_threshold
            if on_step is not None:
                on_step()
            return masks, iou, low_res

    return BackendPredictor()


def _whole(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_parameters(points_per_side: int = 32, pred_iou_thresh: float = 0.88, stability_score_thresh: float = 0.95,
                     min_area: int = 0, box_nms_thresh: float = 0.7, points_per_batch: int = 64) -> None:
    """Validate the generator's main parameters (before any model runs).

    Raises:
        PromptError: ``points_per_side`` or ``points_per_batch`` not a positive whole
            number, a threshold not a finite number, ``box_nms_thresh`` outside
            ``(0, 1]``, or a negative ``min_area``.
    """
    for name, value in (("points_per_side", points_per_side), ("points_per_batch", points_per_batch)):
        if not _whole(value) or value < 1:
            raise PromptError(f"{name} must be a whole number >= 1, got {value!r}")
    for name, value in (("pred_iou_thresh", pred_iou_thresh), ("stability_score_thresh", stability_score_thresh),
                        ("box_nms_thresh", box_nms_thresh)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not math.isfinite(float(value)):
            raise PromptError(f"{name} must be a finite number (usually 0..1), got {value!r}")
    if not 0 < box_nms_thresh <= 1:
        raise PromptError(f"box_nms_thresh must be in (0, 1] (1 keeps every mask), got {box_nms_thresh!r}")
    if not _whole(min_area) or min_area < 0:
        raise PromptError(f"min_area must be a whole number of pixels >= 0, got {min_area!r}")


def check_slice(volume: Volume, z) -> int:
    """``z`` as an int if it indexes a slice of ``volume``.

    Raises:
        PromptError: ``z`` is not a whole number or lies outside the volume.
    """
    depth = volume.num_slices
    if isinstance(z, bool) or not isinstance(z, (int, np.integer)) or not 0 <= int(z) < depth:
        raise PromptError(f"slice {z} is outside the volume (slices 0..{depth - 1})")
    return int(z)


def generate_masks(image: np.ndarray, segmenter, points_per_side: int = 32, pred_iou_thresh: float = 0.88,
                   stability_score_thresh: float = 0.95, progress: bool = False, **kwargs) -> list[dict]:
    """Run ``SamAutomaticMaskGenerator`` on one slice with the backend's encoding.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` uint8, intensity-normalised.
        segmenter: a SAM backend (:class:`~promptseg.models.sam.SamSegmenter`).
        points_per_side, pred_iou_thresh, stability_score_thresh, **kwargs: the
            generator's parameters (``points_per_batch``, ``box_nms_thresh``,
            ``crop_n_layers``, ``min_mask_region_area`` (needs OpenCV), ...).
        progress: show a progress bar (one step per image encoding and per batch
            of ``points_per_batch`` points).

    Returns:
        The generator's records (``segmentation`` ``(H, W)`` bool, ``area``, ``bbox``
        XYWH, ``predicted_iou``, ``stability_score``, ``point_coords``, ``crop_box``).

    Raises:
        ModelError: the backend has no automatic mode (see the module docstring).
        PromptError: bad ``points_per_side`` or thresholds.
    """
    check_model(segmenter)
    from segment_anything import SamAutomaticMaskGenerator
    from segment_anything.utils.amg import generate_crop_boxes
    from tqdm.auto import tqdm

    check_parameters(points_per_side, pred_iou_thresh, stability_score_thresh,
                     box_nms_thresh=kwargs.get("box_nms_thresh", 0.7), points_per_batch=kwargs.get("points_per_batch", 64))
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W) or (H, W, 3) uint8 slice, got {image.dtype} {image.shape}")
    if kwargs.get("output_mode", "binary_mask") != "binary_mask":
        raise ValueError("generate_masks returns binary masks; output_mode cannot be changed")
    kwargs.pop("output_mode", None)
    generator = SamAutomaticMaskGenerator(
        segmenter.net, points_per_side=int(points_per_side), pred_iou_thresh=float(pred_iou_thresh),
        stability_score_thresh=float(stability_score_thresh), output_mode="binary_mask", **kwargs,
    )
    _, layers = generate_crop_boxes(image.shape[:2], generator.crop_n_layers, generator.crop_overlap_ratio)
    steps = sum(1 + math.ceil(len(generator.point_grids[layer]) / generator.points_per_batch) for layer in layers)
    bar = tqdm(total=steps, unit="step", desc="automatic masks", disable=not progress, leave=False)
    try:
        generator.predictor = _predictor(segmenter, on_step=lambda: bar.update(1))
        return generator.generate(np.ascontiguousarray(image))
    finally:
        bar.close()


def label_map(records: list[dict], shape: tuple[int, int], min_area: int = 0) -> tuple[np.ndarray, list[dict]]:
    """Masks -> one non-overlapping ``(H, W)`` label map (see the module docstring) and a summary per label.

    Args:
        records: :func:`generate_masks` records (``segmentation``, ``area``, ``bbox``,
            ``predicted_iou``, ``stability_score``, ``point_coords``).
        shape: ``(H, W)`` of the slice.
        min_area: masks with fewer visible pixels are dropped (at least 1 is always needed);
            their pixels go to the kept mask beneath them, if any.

    Returns:
        ``(labels uint8 / uint16, [{"label", "area" (visible px), "mask_area" (px of the
        whole mask), "predicted_iou", "stability_score", "point" [x, y], "box"
        [x0, y0, x1, y1] (inclusive pixel indices of the whole mask)}, ...])``; label 1
        is the mask with the largest ``mask_area``.
    """
    shape = tuple(int(v) for v in shape)
    order = sorted(range(len(records)), key=lambda i: -int(records[i]["area"]))
    masks = [np.asarray(records[i]["segmentation"], dtype=bool) for i in order]
    for i, mask in zip(order, masks):
        if mask.shape != shape:
            raise ValueError(f"mask {i} has shape {mask.shape}, expected {shape}")

    def paint(ranks_to_paint):
        ranks = np.zeros(shape, dtype=np.int32)
        for rank in ranks_to_paint:  # larger first: smaller masks paint over them
            ranks[masks[rank - 1]] = rank
        return ranks, np.bincount(ranks.ravel(), minlength=len(order) + 1)

    ranks, visible = paint(range(1, len(order) + 1))
    kept = [rank for rank in range(1, len(order) + 1) if visible[rank] >= max(1, int(min_area))]
    if len(kept) < len(order):  # a dropped mask's pixels go to the kept mask beneath it, if any
        ranks, visible = paint(kept)  # (kept masks only gain pixels, so they all stay large enough)
    lookup = np.zeros(len(order) + 1, dtype=np.int64)
    lookup[kept] = np.arange(1, len(kept) + 1)
    labels = lookup[ranks].astype(np.uint8 if len(kept) <= 255 else np.uint16)
    summary = []
    for new, rank in enumerate(kept, start=1):
        rec = records[order[rank - 1]]
        x, y, w, h = rec["bbox"]
        summary.append({
            "label": new, "area": int(visible[rank]), "mask_area": int(rec["area"]),
            "predicted_iou": float(rec["predicted_iou"]), "stability_score": float(rec["stability_score"]),
            "point": [float(v) for v in rec["point_coords"][0]],
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
    modality: str | None = None,
    window=None,
    progress: bool = False,
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
        progress: show a progress bar.
        **kwargs: more ``SamAutomaticMaskGenerator`` parameters (``points_per_batch``,
            ``box_nms_thresh``, ``crop_n_layers``, ...).

    Returns:
        A label map :class:`~promptseg.volume.Volume` on the input grid (every other
        slice 0); ``metadata["masks"]`` describes each label (see :func:`label_map`),
        ``metadata["slice"]`` the slice, ``metadata["parameters"]`` the generator's
        parameters, ``metadata["model"]`` / ``["weights_sha256"]`` the backend.

    Raises:
        ModelError: the backend has no automatic mode (LiteMedSAM, MedSAM, SAM2 family).
        PromptError: ``slice`` outside the volume, or bad parameters.
    """
    from ..intensity import NormalizedSlices

    check_model(segmenter)
    check_parameters(points_per_side, pred_iou_thresh, stability_score_thresh, min_area,
                     box_nms_thresh=kwargs.get("box_nms_thresh", 0.7), points_per_batch=kwargs.get("points_per_batch", 64))
    z = check_slice(volume, slice)
    image = NormalizedSlices.of(volume, modality=modality, window=window)[z]
    records = generate_masks(image, segmenter, points_per_side=points_per_side, pred_iou_thresh=pred_iou_thresh,
                             stability_score_thresh=stability_score_thresh, progress=progress, **kwargs)
    plane, summary = label_map(records, volume.shape[1:], min_area=min_area)
    labels = np.zeros(volume.shape, dtype=plane.dtype)
    labels[z] = plane
    out = volume.with_array(labels, modality=None)
    parameters = {"points_per_side": int(points_per_side), "pred_iou_thresh": float(pred_iou_thresh),
                  "stability_score_thresh": float(stability_score_thresh), "min_area": int(min_area), **kwargs}
    out.metadata = {"source": volume.metadata.get("source"), "kind": "labels", "slice": z, "masks": summary,
                    "model": getattr(segmenter, "name", None),
                    "weights_sha256": getattr(segmenter, "weights_digest", None), "parameters": parameters}
    return out


def summary_document(labels: Volume, **extra) -> dict:
    """The JSON-ready summary of an :func:`automatic_masks` result.

    Adds to its metadata the grid (``shape`` z, y, x; ``spacing`` x, y, z mm) and,
    per mask, ``area_mm2`` (visible pixels times the in-plane pixel area); ``extra``
    entries (e.g. the paths written) are added at the top level.
    """
    meta = labels.metadata
    pixel_mm2 = float(labels.spacing[0]) * float(labels.spacing[1])
    masks = [{**m, "area_mm2": round(m["area"] * pixel_mm2, 6)} for m in meta.get("masks", [])]
    source = meta.get("source")
    doc = {
        "image": None if source is None else str(source),
        "slice": meta.get("slice"),
        "model": meta.get("model"),
        "weights_sha256": meta.get("weights_sha256"),
        "parameters": meta.get("parameters", {}),
        "shape": list(labels.shape),
        "spacing": [float(v) for v in labels.spacing],
        "num_masks": len(masks),
        **extra,
        "masks": masks,
    }
    from ..io.jsonfile import json_ready

    return json_ready(doc)


def save_summary(path: str | Path, labels: Volume, **extra) -> Path:
    """Write :func:`summary_document` as indented JSON, atomically; returns the path."""
    from ..io.jsonfile import write_json

    return write_json(path, summary_document(labels, **extra))
