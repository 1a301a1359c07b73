"""``promptseg prepare``: volumes + label maps -> 2D training samples at the model's input size.

MedSAM's conventions by default:

* intensities normalised as for inference (:mod:`promptseg.intensity`);
* per label, 3D connected components smaller than ``min_object_voxels`` (1000)
  are dropped, then 2D components smaller than ``min_object_pixels`` (100)
  on each slice;
* a *sample* is one object (label) on one slice; slices without any label
  are kept only as a share ``empty_fraction`` of the labelled slices (seeded),
  as samples with label 0 and an empty mask (they teach a fixed-box prompt to
  answer "nothing here");
* slices and masks are resized to the model's input grid (image: the model's own
  resampling; mask: nearest neighbour) and stored as uint8.

Output folder::

    PREPARED/
      prepare.json      settings, model, input size, label names, counts
      manifest.csv      one row per sample: sample, case, z, label, label_name, area_px, image_index, mask_index
      cases/<case>.npz  images (n, S, S[, 3]) uint8, sizes (n, 2) resized (h, w), slice_z (n,),
                        masks (m, S, S) bool (bit-packed on disk), mask_image (m,), mask_label (m,)
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from ..errors import PromptsegError
from ..io import load_volume
from ..io.atomic import atomic_path
from ..io.guard import check_output_folder
from ..io.jsonfile import write_json
from ..intensity import NormalizedSlices

MANIFEST_FIELDS = ["sample", "case", "z", "label", "label_name", "area_px", "image_index", "mask_index"]


@dataclass
class PrepareSettings:
    """How ``prepare`` turns cases into samples (see the module docstring)."""

    labels: Optional[list[int]] = None
    rename: dict[int, int] = field(default_factory=dict)
    min_object_voxels: int = 1000
    min_object_pixels: int = 100
    empty_fraction: float = 0.0
    modality: Optional[str] = None
    window: Optional[tuple[float, float]] = None
    seed: int = 0


def remove_small_objects(mask: np.ndarray, min_size: int) -> np.ndarray:
    """Drop connected components (full connectivity) of a bool mask smaller than ``min_size`` voxels."""
    if min_size <= 1 or not mask.any():
        return mask
    structure = np.ones((3,) * mask.ndim, dtype=bool)
    components, count = ndimage.label(mask, structure=structure)
    sizes = np.bincount(components.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return keep[components]


def select_labels(labels: np.ndarray, keep: Optional[Sequence[int]], rename: dict[int, int]) -> np.ndarray:
    """Keep only ``keep`` (all when None), then map values through ``rename`` (old -> new)."""
    out = labels.astype(np.int64, copy=True)
    if keep is not None:
        out[~np.isin(out, list(keep))] = 0
    if rename:
        renamed = out.copy()
        for old, new in rename.items():
            renamed[out == old] = new
        out = renamed
    return out


def clean_labels(labels: np.ndarray, min_voxels: int, min_pixels: int) -> np.ndarray:
    """MedSAM's clean-up, per label: drop small 3D components, then small 2D components per slice."""
    out = np.zeros_like(labels)
    for value in np.unique(labels):
        if value == 0:
            continue
        mask = remove_small_objects(labels == value, min_voxels)
        for z in np.nonzero(mask.any(axis=(1, 2)))[0]:
            mask[z] = remove_small_objects(mask[z], min_pixels)
        out[mask] = value
    return out


def prepare_case(case, segmenter, settings: PrepareSettings, rng: np.random.Generator) -> dict:
    """Samples of one case as arrays (see the module docstring for the keys)."""
    volume = load_volume(case.image)
    labels = case.reference_labels(volume)
    labels = select_labels(labels, settings.labels, settings.rename)
    labels = clean_labels(labels, settings.min_object_voxels, settings.min_object_pixels)
    slices = NormalizedSlices.of(volume, modality=settings.modality, window=settings.window)
    labelled = [int(z) for z in np.nonzero(labels.reshape(labels.shape[0], -1).any(axis=1))[0]]
    empty_pool = [z for z in range(labels.shape[0]) if z not in set(labelled)]
    n_empty = min(len(empty_pool), int(round(settings.empty_fraction * len(labelled))))
    empty = sorted(int(z) for z in rng.choice(empty_pool, size=n_empty, replace=False)) if n_empty else []
    images, sizes, zs, masks, mask_image, mask_label = [], [], [], [], [], []
    for z in sorted(labelled + empty):
        padded, size = segmenter.prepare_slice(slices[z])
        image_index = len(images)
        images.append(padded)
        sizes.append(size)
        zs.append(z)
        values = [int(v) for v in np.unique(labels[z]) if v != 0]
        for value in values:
            masks.append(segmenter.prepare_mask(labels[z] == value))
            mask_image.append(image_index)
            mask_label.append(value)
        if not values:
            masks.append(np.zeros(padded.shape[:2], dtype=bool))
            mask_image.append(image_index)
            mask_label.append(0)
    size = segmenter.input_size
    return {
        "images": np.asarray(images, dtype=np.uint8) if images else np.zeros((0, size, size), np.uint8),
        "sizes": np.asarray(sizes, dtype=np.int32).reshape(-1, 2),
        "slice_z": np.asarray(zs, dtype=np.int32),
        "masks": np.asarray(masks, dtype=bool).reshape(-1, size, size),
        "mask_image": np.asarray(mask_image, dtype=np.int32),
        "mask_label": np.asarray(mask_label, dtype=np.int32),
    }


def save_case(arrays: dict, path: Path) -> None:
    """Write one case's samples (masks bit-packed), atomically."""
    packed = dict(arrays)
    packed["masks"] = np.packbits(arrays["masks"], axis=-1)
    packed["mask_shape"] = np.asarray(arrays["masks"].shape, dtype=np.int64)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **packed)


def load_case(path: Path) -> dict:
    """Read what :func:`save_case` wrote."""
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    shape = tuple(int(v) for v in arrays.pop("mask_shape"))
    arrays["masks"] = np.unpackbits(arrays["masks"], axis=-1, count=shape[-1]).astype(bool).reshape(shape)
    return arrays


#: what :func:`prepare` writes into its folder
PREPARED_FILES = ("cases", "manifest.csv", "prepare.json")


def prepare(dataset_path, out_dir, model: str = "litemedsam", settings: Optional[PrepareSettings] = None,
            progress: bool = True, segmenter=None) -> Path:
    """Prepare a labelled dataset for training.

    Args:
        dataset_path: any layout :func:`promptseg.datasets.layouts.load_dataset` reads.
        out_dir: output folder (created; an existing prepared folder is overwritten case by case).
        model: backend whose input size and resampling the samples follow.
        settings: see :class:`PrepareSettings`.
        segmenter: an already-built segmenter (default: the backend's pre-processing,
            :func:`promptseg.models.registry.build_preprocessing`; no weights needed).

    Returns:
        ``out_dir``.
    """
    from ..datasets.layouts import load_dataset
    from ..models.registry import build_preprocessing

    settings = settings or PrepareSettings()
    if not 0 <= settings.empty_fraction <= 10:
        raise PromptsegError("empty_fraction must be between 0 and 10 (share of the labelled slices)")
    dataset = load_dataset(dataset_path)
    out_dir = check_output_folder(out_dir, inputs=[dataset_path, *dataset.files()], writes=PREPARED_FILES)
    segmenter = segmenter or build_preprocessing(model)
    (out_dir / "cases").mkdir(parents=True, exist_ok=True)
    names = {**{int(k): v for k, v in dataset.label_names.items()}}
    for old, new in settings.rename.items():
        if old in names and new not in names:
            names[new] = names[old]
    rows, counts = [], {"cases": 0, "slices": 0, "samples": 0, "empty_samples": 0}
    for i, case in enumerate(tqdm(dataset.cases, desc="preparing", unit="case", disable=not progress)):
        rng = np.random.default_rng([settings.seed, i])
        arrays = prepare_case(case, segmenter, settings, rng)
        save_case(arrays, out_dir / "cases" / f"{case.case_id}.npz")
        counts["cases"] += 1
        counts["slices"] += len(arrays["images"])
        for m, (image_index, label) in enumerate(zip(arrays["mask_image"], arrays["mask_label"])):
            rows.append({
                "sample": len(rows), "case": case.case_id, "z": int(arrays["slice_z"][image_index]),
                "label": int(label), "label_name": names.get(int(label), "" if label == 0 else f"label {label}"),
                "area_px": int(arrays["masks"][m].sum()), "image_index": int(image_index), "mask_index": m,
            })
            counts["samples"] += 1
            counts["empty_samples"] += int(label == 0)
    with atomic_path(out_dir / "manifest.csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=MANIFEST_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
    info = {
        "model": segmenter.name,
        "input_size": segmenter.input_size,
        "dataset": str(dataset_path),
        "label_names": {str(k): v for k, v in sorted(names.items())},
        "settings": {**settings.__dict__, "rename": {str(k): v for k, v in settings.rename.items()}},
        "counts": counts,
        "cases": [c.case_id for c in dataset.cases],
        "created": dt.datetime.now().isoformat(timespec="seconds"),
    }
    write_json(out_dir / "prepare.json", info)
    return out_dir


def read_manifest(prepared: Path) -> tuple[dict, list[dict]]:
    """``(prepare.json, manifest rows)`` of a prepared folder."""
    prepared = Path(prepared)
    try:
        info = json.loads((prepared / "prepare.json").read_text(encoding="utf-8"))
        with open(prepared / "manifest.csv", newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError as exc:
        raise PromptsegError(f"{prepared} is not a prepared folder (missing {Path(exc.filename).name}); run 'promptseg prepare'") from None
    for row in rows:
        for key in ("sample", "z", "label", "area_px", "image_index", "mask_index"):
            row[key] = int(row[key])
    return info, rows
