"""The one-call API: a volume plus prompts in, a label map on the volume's grid out.

>>> import promptseg
>>> vol = promptseg.load_volume("ct.nii.gz")
>>> seg = promptseg.build_segmenter("litemedsam")
>>> obj = promptseg.make_object(slice=33, box=(206, 347, 229, 368), label=1, name="tumour")
>>> result = promptseg.segment(vol, [obj], seg)          # 3D: propagate from slice 33
>>> result.save("tumour.nii.gz")                           # same spacing/origin/direction
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Optional, Sequence

from ..errors import PromptError
from ..intensity import NormalizedSlices
from ..models import Segmenter, build_segmenter
from ..prompts import ObjectPrompt, check_unique_labels, fit_to_image, validate
from ..volume import Volume
from .chain import propagate
from .memory import propagate_with_memory
from .provenance import intensity_record, model_record, volume_record
from .results import SegmentationResult, compose_labels
from .stop_rule import StopRule

log = logging.getLogger(__name__)


def segment(
    volume: Volume,
    prompts: ObjectPrompt | Sequence[ObjectPrompt],
    segmenter: Optional[Segmenter] = None,
    *,
    mode: str = "auto",
    modality: Optional[str] = None,
    window: Optional[tuple[float, float] | str] = None,
    stop_rule: Optional[StopRule] = None,
    progress: bool = False,
    propagation: str = "chain",
    memory_options: Optional[dict] = None,
    refine_prompt: bool = False,
    mask_prompt: bool = False,
) -> SegmentationResult:
    """Segment the prompted objects of ``volume``.

    Args:
        volume: the image (see :func:`promptseg.io.load_volume`).
        prompts: one or several :class:`~promptseg.prompts.ObjectPrompt`.
        segmenter: a model from :func:`promptseg.models.build_segmenter`
            (default: the bundled LiteMedSAM on the CPU).
        mode: ``"3d"`` propagate through the volume, ``"2d"`` only the prompted
            slices, ``"auto"`` 3D for volumes with several slices, else 2D.
        modality, window: intensity normalisation (see
            :func:`promptseg.intensity.normalize`).
        stop_rule: parameters of the automatic 3D stop (objects with a z-range or
            key slices do not use it).
        progress: show a progress bar.
        propagation: ``"chain"`` (the previous slice's mask prompts the next slice; every
            backend) or ``"memory"`` (SAM2-family video propagation with a memory bank of
            earlier slices; backends that list it in ``promptseg models``).
        memory_options: options of the backend's memory propagation, e.g.
            ``{"stop_after": 2, "largest_component": True}`` for SAM2 (see
            :meth:`promptseg.models.sam2.SAM2Segmenter.propagate_memory`).
        refine_prompt: chaining: decode each prompted slice again from the box of the
            model's own mask (see :func:`promptseg.inference.chain.refined_prediction`).
        mask_prompt: chaining: the previous slice's low-res mask logits as SAM's dense mask
            prompt besides its box (see :func:`promptseg.inference.chain.iter_chain`).

    Raises:
        PromptError: a prompt does not fit the volume, or labels repeat. (A box reaching at most one
            voxel past the edge is clipped with a logged note: :func:`~promptseg.prompts.fit_to_image`.)
        ModelError: ``propagation="memory"`` with a backend that has no memory propagation.
    """
    if isinstance(prompts, ObjectPrompt):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise PromptError("no prompt given: add a box, points, a line or a prompt file")
    fitted = []
    for p in prompts:
        p, notes = fit_to_image(p, volume.shape)
        for note in notes:
            log.warning("%s", note)
        validate(p, volume.shape)
        fitted.append(p)
    prompts = fitted
    check_unique_labels(prompts)
    if mode == "auto":
        mode = "3d" if volume.num_slices > 1 else "2d"
    if mode not in ("2d", "3d"):
        raise ValueError(f"mode must be 'auto', '2d' or '3d', got {mode!r}")
    if propagation not in ("chain", "memory"):
        raise ValueError(f"propagation must be 'chain' or 'memory', got {propagation!r}")
    if memory_options and propagation != "memory":
        raise PromptError("--largest-component and --memory-stop-after (memory_options) apply to "
                          "--propagation memory only")
    started = time.perf_counter()
    segmenter = segmenter or build_segmenter("litemedsam")
    image = NormalizedSlices.of(volume, modality=modality, window=window)
    if propagation == "memory" and mode == "3d":
        results, encoded = propagate_with_memory(segmenter, image, prompts, progress=progress, **(memory_options or {}))
    else:
        results, encoded = propagate(
            segmenter,
            image,
            prompts,
            spacing_xy=(volume.spacing[0], volume.spacing[1]),
            slice_thickness=volume.spacing[2],
            mode=mode,
            stop_rule=stop_rule,
            progress=progress,
            refine_prompt=refine_prompt,
            mask_prompt=mask_prompt,
        )
    labels = compose_labels(results, volume.shape)
    label_volume = volume.with_array(labels, modality=None, kind="labels")
    label_volume.metadata = {"source": volume.metadata.get("source")}
    settings: dict = {"mode": mode, "propagation": propagation if mode == "3d" else None}
    if mode == "3d" and propagation == "chain":
        settings["stop_rule"] = dataclasses.asdict(stop_rule or StopRule())
    if memory_options:
        settings["memory_options"] = dict(memory_options)
    for name, on in (("refine_prompt", refine_prompt), ("mask_prompt", mask_prompt)):
        if on:
            settings[name] = True
    provenance = {
        "input": volume_record(volume),
        "model": model_record(segmenter),
        "intensity": intensity_record(volume, modality, window, image.mapping),
        "settings": settings,
        "encoded_slices": len(encoded),
        "seconds": round(time.perf_counter() - started, 3),
    }
    return SegmentationResult(labels=label_volume, objects=results, image=image, encoded_slices=encoded,
                              provenance=provenance)
