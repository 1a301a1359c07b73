"""The bundled demo: segment the lung tumour of a real CT with the bundled LiteMedSAM.

The scan (``promptseg/data/lung1_image.nrrd``) and its expert mask come from
the pyradiomics test data (BSD-3-Clause). The demo prompts the model with the
tight box of the reference mask on the tumour's middle slice only -- no
z-range -- propagates through the volume, writes the mask and an overlay, and
reports the Dice against the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).parent / "data"
DEMO_IMAGE = DATA_DIR / "lung1_image.nrrd"
DEMO_LABEL = DATA_DIR / "lung1_label.nrrd"


@dataclass
class DemoResult:
    dice: float
    mask_path: Path
    overlay_path: Path
    slices: list[int]
    reference_slices: list[int]
    prompt_slice: int
    box: tuple[float, float, float, float]


def run_demo(output_dir: str | Path = "demo_output", segmenter=None, progress: bool = True) -> DemoResult:
    """Run the demo; returns the Dice and where the outputs went."""
    from .io import load_labels, load_volume
    from .reporting.overlay import save_overlay
    from .prompts import box_from_mask, make_object
    from .evaluation.metrics import dice
    from .inference import segment

    output_dir = Path(output_dir)
    volume = load_volume(DEMO_IMAGE)
    reference = load_labels(DEMO_LABEL, reference=volume).array > 0
    ref_slices = np.nonzero(reference.any(axis=(1, 2)))[0].tolist()
    z_mid = (ref_slices[0] + ref_slices[-1]) // 2
    box = box_from_mask(reference[z_mid])
    prompt = make_object(slice=z_mid, box=box, label=1, name="lung tumour")
    result = segment(volume, [prompt], segmenter, mode="3d", progress=progress)
    mask_path = result.save(output_dir / "lung1_tumour_mask.nii.gz")
    score = dice(result.mask(1), reference)
    overlay_path = save_overlay(
        output_dir / "lung1_tumour_overlay.png", result.image, result.labels.array, [prompt],
        reference=reference, title=f"lung1 CT, LiteMedSAM from one box on z={z_mid}: Dice {score:.3f} "
        "(colour = promptseg, dotted = expert)", direction=volume.direction,
    )
    return DemoResult(score, mask_path, overlay_path, result.objects[0].slices, ref_slices, z_mid, box)
