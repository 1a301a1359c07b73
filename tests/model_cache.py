"""One real LiteMedSAM (bundled weights) shared by every test module."""

import functools
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
CASES = {
    "lung1": ROOT / "promptseg" / "data",
    "brain2": DATA / "radiomics",
    "breast1": DATA / "radiomics",
}


@functools.lru_cache(maxsize=None)
def litemedsam():
    from promptseg.models.registry import build_segmenter

    return build_segmenter("litemedsam")


@functools.lru_cache(maxsize=None)
def case(name):
    """(image Volume, reference bool mask (z, y, x)) of a bundled real case."""
    from promptseg.io import load_labels, load_volume

    folder = CASES[name]
    volume = load_volume(folder / f"{name}_image.nrrd")
    reference = load_labels(folder / f"{name}_label.nrrd", reference=volume).array > 0
    return volume, reference


def middle_slice_box(reference):
    from promptseg.prompts import box_from_mask

    zs = np.nonzero(reference.any(axis=(1, 2)))[0]
    z = int((zs[0] + zs[-1]) // 2)
    return z, box_from_mask(reference[z])
