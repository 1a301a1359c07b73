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


#: formats the float32 probability maps can be written in
PROBABILITY_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


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
        provenance: input, model, runtime and precision, intensity rule and settings
            (filled by :func:`promptseg.segment`; the sidecar's base, see
            :mod:`promptseg.inference.provenance`).
    """

    labels: Volume
    objects: list[ObjectResult]
    image: NormalizedSlices
    encoded_slices: list[int]
    provenance: dict = field(default_factory=dict)

    def save(self, path: str | Path, provenance: bool = True, probabilities: str | Path | None = None,
             extra: dict | None = None) -> Path:
        """Write the label map (NIfTI / NRRD / MHA / NPZ / PNG by extension), atomically.

        Args:
            path: the label map.
            provenance: also write the JSON sidecar ``<name>.provenance.json`` next to it
                (:func:`~promptseg.inference.provenance.sidecar_path`).
            probabilities: also write the probability maps there (:meth:`save_probabilities`).
            extra: more fields for the sidecar (the command line, a prompt source, ...).
        """
        from ..io import save_mask

        written = save_mask(self.labels.array, path, reference=self.labels)
        maps = self.save_probabilities(probabilities) if probabilities is not None else []
        if provenance:
            self.write_provenance(written, probabilities=maps, extra=extra)
        return written

    def write_provenance(self, output: str | Path, probabilities: Sequence = (), extra: dict | None = None,
                         sidecar: str | Path | None = None) -> Path:
        """Write the provenance sidecar of the output ``output`` (default name: next to it)."""
        from .provenance import provenance_document, sidecar_path, write_provenance

        outputs = {"labels": str(output)}
        if probabilities:
            outputs["probabilities"] = [str(p) for p in probabilities]
        document = provenance_document(self, outputs=outputs, extra=extra)
        return write_provenance(sidecar if sidecar is not None else sidecar_path(output), document)

    def probabilities(self, label: int = 1) -> np.ndarray:
        """``(Z, H, W)`` float32 probability of one object: the sigmoid of the model's logits on the
        slices it segmented, 0 elsewhere."""
        obj = next((o for o in self.objects if o.prompt.label == label), None)
        if obj is None:
            raise KeyError(f"no object with label {label}")
        from scipy.special import expit  # the logistic function without overflow for large logits

        out = np.zeros(self.labels.shape, dtype=np.float32)
        for z, logits in obj.logits.items():
            out[z] = expit(logits.astype(np.float32))
        return out

    def probability_paths(self, path: str | Path) -> list[Path]:
        """Where :meth:`save_probabilities` writes: ``path`` for one object, else one file per label
        (``prob.nii.gz`` -> ``prob_label1.nii.gz``, ``prob_label2.nii.gz``, ...)."""
        from ..io.common import format_suffix

        path = Path(path)
        if len(self.objects) == 1:
            return [path]
        suffix = format_suffix(path) or path.suffix
        stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
        return [path.with_name(f"{stem}_label{o.prompt.label}{suffix}") for o in self.objects]

    def save_probabilities(self, path: str | Path) -> list[Path]:
        """Write each object's :meth:`probabilities` as float32 on the input grid (NIfTI/NRRD/MHA), atomically."""
        from ..io import save_volume

        written = []
        for obj, target in zip(self.objects, self.probability_paths(path)):
            grid = self.labels.with_array(self.probabilities(obj.prompt.label), kind="image")
            written.append(save_volume(grid, target))
        return written

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
