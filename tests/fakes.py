"""A deterministic stand-in for a SAM model, to test propagation logic exactly and fast.

``ThresholdSegmenter`` "segments" the voxels brighter than 128 inside the box
(or within 3 px of the positive points). Its logits are the intensity minus
128, so brighter objects win overlaps.
"""

from __future__ import annotations

import numpy as np

from promptseg.models.base import Embedding, Prediction, Segmenter


class ThresholdSegmenter(Segmenter):
    name = "threshold"
    input_size = 0

    def __init__(self) -> None:
        self.embedded = 0

    def embed(self, image):
        self.embedded += 1
        return Embedding(features=np.asarray(image, dtype=np.float32), original_size=image.shape[:2], input_size=image.shape[:2])

    def decode(self, embedding, box=None, points=None, point_labels=None):
        img = embedding.features
        region = np.zeros(img.shape, dtype=bool)
        if box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            region[max(0, y0) : y1 + 1, max(0, x0) : x1 + 1] = True
        if points is not None:
            yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
            for (x, y), lab in zip(points, point_labels):
                if lab == 1:
                    region |= (xx - x) ** 2 + (yy - y) ** 2 <= 9
        logits = np.where(region, img - 128.0, -100.0).astype(np.float32)
        return Prediction(logits=logits, score=0.9)

    def box_from_mask(self, mask):
        rows, cols = np.nonzero(mask)
        h, w = mask.shape
        return (max(0, cols.min() - 1), max(0, rows.min() - 1), min(w - 1, cols.max() + 1), min(h - 1, rows.max() + 1))


def ball(shape, centre, radius, spacing=(1.0, 1.0, 1.0)):
    """Boolean ball of ``radius`` mm around ``centre`` (z, y, x voxels); spacing (z, y, x) mm."""
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip((zz, yy, xx), centre, spacing))
    return d2 <= radius**2
