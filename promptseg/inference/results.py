"""What segmentation returns: per-object results and the label map they compose."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..intensity import NormalizedSlices
from ..prompts import ObjectPrompt
from ..stops import Stop
from ..volume import Volume
from .stop_rule import StopCheck


@dataclass
class ObjectResult:
    """What happened to one object.

    Attributes:
        prompt: the object's prompt.
        logits: ``{z: (H, W) float16 logits}`` for slices where the mask is not empty
            (``> 0`` is inside; see :func:`~promptseg.models.base.half_logits`).
        scores: ``{z: score}`` for those slices (predicted IoU when chaining, object-presence
            probability with SAM2 memory propagation).
        stops: why propagation ended, per direction (``"up"``, ``"down"``).
        checks: the stop rule's measurements per slice it examined (chaining).
    """

    prompt: ObjectPrompt
    logits: dict[int, np.ndarray] = field(default_factory=dict)
    scores: dict[int, float] = field(default_factory=dict)
    stops: dict[str, Stop] = field(default_factory=dict)
    checks: dict[int, StopCheck] = field(default_factory=dict)

    @property
    def slices(self) -> list[int]:
        return sorted(self.logits)


@dataclass
class SegmentationResult:
    """Output of :func:`promptseg.segment`.

    Attributes:
        labels: integer label map on the input volume's grid (same shape,
            spacing, origin, direction; ``labels.kind == "labels"``).
        objects: per-object details (slices, scores, why propagation stopped).
        image: the intensity-normalised uint8 slices the model saw
            (``image[z]`` is ``(H, W)`` or ``(H, W, 3)``; normalised on access,
            ``np.asarray(image)`` gives the whole volume), for overlays.
        encoded_slices: slices embedded by the image encoder, in order.
    """

    labels: Volume
    objects: list[ObjectResult]
    image: NormalizedSlices
    encoded_slices: list[int]

    def save(self, path: str | Path) -> Path:
        """Write the label map (NIfTI / NRRD / MHA / NPZ / PNG by extension), atomically."""
        from ..io import save_mask

        return save_mask(self.labels.array, path, reference=self.labels)

    def mask(self, label: int = 1) -> np.ndarray:
        """``(Z, H, W)`` bool mask of one label."""
        return self.labels.array == label

    def summary_lines(self) -> list[str]:
        """One line per object: label, name, slices, voxels, volume in ml (from the voxel
        spacing) and why propagation stopped each way -- what ``promptseg segment`` prints."""
        lines = []
        for obj in self.objects:
            p = obj.prompt
            n = int(np.count_nonzero(self.mask(p.label)))
            zs = obj.slices
            where = f"slices {zs[0]}-{zs[-1]}" if zs else "nothing found"
            line = f"label {p.label} ({p.display_name}): {where}, {n} voxels, {n * self.labels.voxel_volume_ml:.2f} ml"
            if obj.stops:
                line += "; stopped " + "; ".join(f"{d}: {s}" for d, s in obj.stops.items())
            lines.append(line)
        return lines


def compose_labels(results: Sequence[ObjectResult], shape: tuple[int, int, int]) -> np.ndarray:
    """One label map ``(Z, H, W)`` from per-object logits.

    Where objects overlap, the voxel goes to the object with the highest logit
    (the model's most confident object). dtype uint8, or uint16 for labels > 255.
    """
    max_label = max((r.prompt.label for r in results), default=0)
    labels = np.zeros(shape, dtype=np.uint8 if max_label <= 255 else np.uint16)
    slices = sorted({z for r in results for z in r.logits})
    for z in slices:
        best = np.zeros(shape[1:], dtype=np.float32)
        for r in results:
            logits = r.logits.get(z)
            if logits is None:
                continue
            logits = logits.astype(np.float32)
            win = (logits > 0) & ((labels[z] == 0) | (logits > best))
            labels[z][win] = r.prompt.label
            best[win] = logits[win]
    return labels
