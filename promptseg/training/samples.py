"""The training dataset: prepared samples + simulated prompts, deterministic per (seed, epoch, sample).

Every random choice (box jitter, points, flips) comes from
``numpy.random.default_rng([seed, epoch, sample])``, so an interrupted run
resumed from its last epoch sees exactly the prompts an uninterrupted run
would have seen.

Prompts (model-input pixels, see :class:`~promptseg.training.config.PromptSection`):

* ``box``: the mask's tight box, each side moved *outwards* by a random
  0..``jitter_px`` (MedSAM's training jitter; the box never cuts the object),
  clipped to the resized image;
* ``fixed-box``: ``fixed_box``, or the whole resized image;
* ``points``: the first point inside the object, then alternating outside /
  inside (outside points are drawn from the object's box grown by half its
  size, minus the object, so they are informative).

Flips (training only, and not when embeddings are cached -- a flipped image has
another embedding) mirror the resized image area left-right and/or up-down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .prepare import load_case


class TrainingSamples(torch.utils.data.Dataset):
    """Samples of some cases of a prepared folder.

    Args:
        prepared: the folder ``promptseg prepare`` wrote.
        rows: manifest rows of the samples to use.
        model_input: ``(padded uint8, (h, w)) -> (3, S, S) float32`` of the model family.
        prompts: :class:`~promptseg.training.config.PromptSection`.
        seed: base seed.
        train: simulate random prompts and flips (False: deterministic validation prompts).
        embeddings: an :class:`~promptseg.training.embedding_cache.EmbeddingCache`; when
            given, items carry ``"embedding"`` instead of ``"image"``.
    """

    def __init__(self, prepared: Path, rows: Sequence[dict], model_input, prompts, seed: int = 0,
                 train: bool = True, embeddings=None) -> None:
        self.prepared, self.model_input, self.prompts = Path(prepared), model_input, prompts
        self.seed, self.train, self.embeddings = seed, train, embeddings
        keep_empty = prompts.mode == "fixed-box"
        self.rows = [r for r in rows if keep_empty or r["label"] != 0]
        self.epoch = 0
        self._cases: dict[str, dict] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def _case(self, case: str) -> dict:
        if case not in self._cases:
            self._cases[case] = load_case(self.prepared / "cases" / f"{case}.npz")
        return self._cases[case]

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        arrays = self._case(row["case"])
        image = arrays["images"][row["image_index"]]
        h, w = (int(v) for v in arrays["sizes"][row["image_index"]])
        mask = arrays["masks"][row["mask_index"]].copy()
        rng = np.random.default_rng([self.seed, self.epoch if self.train else 0, row["sample"]])
        flip_x = flip_y = False
        if self.train and self.prompts.flips and self.embeddings is None:
            flip_x, flip_y = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
            image, mask = image.copy(), mask
            for flip, axis in ((flip_x, 1), (flip_y, 0)):
                if flip:
                    image[:h, :w] = np.flip(image[:h, :w], axis=axis)
                    mask[:h, :w] = np.flip(mask[:h, :w], axis=axis)
        box, points, labels = simulate_prompt(mask, (h, w), self.prompts, rng, self.train)
        item = {
            "mask": torch.from_numpy(mask[None].astype(np.float32)),
            "box": torch.tensor(box, dtype=torch.float32),
            "points": torch.from_numpy(points),
            "point_labels": torch.from_numpy(labels),
            "valid": torch.tensor([h, w]),
            "sample": row["sample"],
        }
        if self.embeddings is not None:
            item["embedding"] = torch.from_numpy(np.array(self.embeddings.get(row["case"], row["image_index"])))
        else:
            item["image"] = torch.from_numpy(self.model_input(image, (h, w)))
        return item


def simulate_prompt(mask: np.ndarray, valid: tuple[int, int], prompts, rng: np.random.Generator,
                    train: bool = True) -> tuple[list[float], np.ndarray, np.ndarray]:
    """``(box [x0, y0, x1, y1] or NaNs, points (P, 2) float32, labels (P,) int64)`` for one sample."""
    h, w = valid
    none = [float("nan")] * 4
    empty_pts = (np.zeros((0, 2), np.float32), np.zeros((0,), np.int64))
    if prompts.mode == "fixed-box":
        box = list(prompts.fixed_box) if prompts.fixed_box is not None else [0.0, 0.0, w - 1.0, h - 1.0]
        return box, *empty_pts
    rows, cols = np.nonzero(mask)
    x0, x1, y0, y1 = float(cols.min()), float(cols.max()), float(rows.min()), float(rows.max())
    if prompts.mode == "box":
        if train and prompts.jitter_px > 0:
            grow = rng.uniform(0, prompts.jitter_px, size=4)
            x0, y0, x1, y1 = x0 - grow[0], y0 - grow[1], x1 + grow[2], y1 + grow[3]
        return [max(0.0, x0), max(0.0, y0), min(w - 1.0, x1), min(h - 1.0, y1)], *empty_pts
    # points
    bw, bh = x1 - x0 + 1, y1 - y0 + 1
    around = np.zeros(mask.shape, dtype=bool)
    around[int(max(0, y0 - bh / 2)):int(min(h, y1 + bh / 2 + 1)), int(max(0, x0 - bw / 2)):int(min(w, x1 + bw / 2 + 1))] = True
    outside = np.argwhere(around & ~mask)
    inside = np.argwhere(mask)
    pts, labels = [], []
    for i in range(prompts.points):
        positive = i % 2 == 0 or len(outside) == 0
        pool = inside if positive else outside
        y, x = pool[rng.integers(len(pool))]
        pts.append((float(x), float(y)))
        labels.append(1 if positive else 0)
    return none, np.asarray(pts, np.float32), np.asarray(labels, np.int64)


def collate(items: list[dict]) -> dict:
    out = {}
    for key in items[0]:
        values = [it[key] for it in items]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else torch.tensor(values)
    return out
