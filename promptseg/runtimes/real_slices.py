"""Real slices shipped with promptseg: the accuracy gate of reduced precision and int8 calibration.

The three bundled scans (``promptseg/data``: the lung1 CT, the brain2 and
breast1 MR, each with an expert lesion mask) are normalised as
:func:`promptseg.segment` would (:func:`promptseg.intensity.normalize`, modality
detected). *Gate slices*: every slice holding the lesion (9 in all), prompted
with the tight box of the expert mask on that slice. *Calibration slices*:
slices of the same scans that hold no lesion, evenly spread, so int8
quantisation is never calibrated on the slices that judge it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent.parent / "data"
#: the bundled cases, in the order the gate lists them
CASES = ("lung1", "brain2", "breast1")


@dataclass(frozen=True)
class RealSlice:
    """One normalised slice: ``image`` ``(H, W)`` uint8, ``box`` ``(x0, y0, x1, y1)`` voxels (None: no lesion)."""

    case: str
    z: int
    image: np.ndarray
    box: tuple[float, float, float, float] | None


@functools.lru_cache(maxsize=None)
def _case(name: str) -> tuple[np.ndarray, np.ndarray]:
    from ..intensity import normalize
    from ..io import load_labels, load_volume

    volume = load_volume(DATA / f"{name}_image.nrrd")
    lesion = load_labels(DATA / f"{name}_label.nrrd", reference=volume).array > 0
    return normalize(volume), lesion


def gate_slices() -> list[RealSlice]:
    """The lesion slices of the bundled cases with the expert mask's box (9 slices)."""
    from ..prompts import box_from_mask

    out = []
    for name in CASES:
        images, lesion = _case(name)
        for z in np.nonzero(lesion.any(axis=(1, 2)))[0]:
            out.append(RealSlice(name, int(z), images[z], box_from_mask(lesion[z])))
    return out


def calibration_slices(count: int = 12) -> list[RealSlice]:
    """``count`` lesion-free slices, spread evenly over the bundled cases (round robin)."""
    per_case = []
    for name in CASES:
        images, lesion = _case(name)
        free = [z for z in range(images.shape[0]) if not lesion[z].any() and images[z].any()]
        per_case.append([RealSlice(name, z, images[z], None) for z in free])
    wanted = -(-count // len(CASES))
    spread = []
    for slices in per_case:
        picks = np.linspace(0, len(slices) - 1, num=min(wanted, len(slices))).round().astype(int)
        spread.append([slices[i] for i in picks])
    out = [s for group in zip(*spread) for s in group]
    return out[:count]
