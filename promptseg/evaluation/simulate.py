"""Prompts simulated from a reference mask, the way benchmarks of SAM-family models do it. Seeded.

Every function takes one object's reference mask ``ref`` -- a ``(Z, H, W)`` bool
array (a single 2D image is ``(1, H, W)``) -- and a :class:`numpy.random.Generator`,
and returns an :class:`~promptseg.prompts.ObjectPrompt` built with
:func:`~promptseg.prompts.make_object`, so :func:`~promptseg.prompts.prompt_to_dict`
records exactly what the model was given. Coordinates are voxel indices
(x = column, y = row, z = slice), as everywhere in promptseg.

* :func:`box_middle_slice` -- the tight box on the object's middle slice
  (3D propagation from there; ``box-mid``), or the same box with the object's
  true z-range (``box-mid-z``: chaining over the reference slices, no automatic
  stop -- the reference the automatic stop is measured against);
* :func:`boxes_every_slice` -- the tight box on every slice the object is on
  (each slice segmented on its own; ``box-2d``);
* :func:`box3d` -- the LiteMedSAM challenge's 3D box ``x0,y0,z0,x1,y1,z1``
  (``box3d``);
* :func:`points` -- ``n`` clicks on the middle slice, positive inside the
  object and negative just outside it (``points``; ``ceil(n / 2)`` positive
  unless the number of negatives is given).

Box jitter: each of ``x0, y0, x1, y1`` moves by an integer offset drawn
uniformly from ``-floor(jitter)..floor(jitter)`` pixels, independently; the
result is clipped to the image and kept ordered (``x0 < x1``, ``y0 < y1``: if
the jitter crosses the two sides, they are swapped; if they coincide the box
is widened by one pixel inside the image). The same rule makes the one-pixel
"box" of a one-pixel-wide object a valid box, so with jitter 0 the box is
exactly the tight box of every object at least two pixels wide and tall.

Points: ``ceil(n / 2)`` positive clicks drawn uniformly (without replacement
while there are enough pixels) from the object's pixels on the middle slice,
and ``floor(n / 2)`` negative clicks from the band of background pixels
``NEGATIVE_BAND_PX`` = (2, 12] px (Euclidean distance) around the object on
that slice -- "near the object", where a user would click to cut off a leak.
If the band is empty (the object fills the slice), negatives come from any
background pixel; with no background at all there are no negatives. micro-sam's
prompt generator (used in its evaluations) likewise samples positives
uniformly inside the object and negatives from a ring around it (the box
enlarged by a margin, minus the dilated object), but takes the two counts as
separate parameters; promptseg fixes the split so that one number (1, 5, 10,
20) describes a prompt.

:func:`prompt_rng` derives an independent generator for every (seed, case,
label, prompt mode) so a prompt never depends on which other cases or labels
were simulated before it (a resumed benchmark gets the same prompts).
"""

from __future__ import annotations

import hashlib
import math
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

from ..errors import PromptError
from ..prompts import Box, ObjectPrompt, Point, box_from_mask, make_object

#: the prompt forms :func:`simulate_prompts` knows, and the segmentation mode each needs
PROMPT_MODES = {"box-mid": "3d", "box-mid-z": "3d", "box-2d": "2d", "box3d": "3d", "points": "3d"}
#: negative clicks lie at a distance in (near, far] pixels from the object
NEGATIVE_BAND_PX = (2.0, 12.0)


def prompt_rng(seed: int, case_id: str, label: int, mode: str) -> np.random.Generator:
    """The generator for one object's prompt: a function of (seed, case, label, mode) only.

    Args:
        seed: the run's seed (>= 0).
        case_id: the case's id.
        label: the object's label value.
        mode: the prompt mode (``"box-mid"``, ...).
    """
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    digest = hashlib.sha256(f"{case_id}\x00{int(label)}\x00{mode}".encode()).digest()
    return np.random.default_rng(np.random.SeedSequence([int(seed), int.from_bytes(digest[:8], "little")]))


def _as_mask(ref: np.ndarray) -> np.ndarray:
    ref = np.asarray(ref)
    if ref.ndim == 2:
        ref = ref[np.newaxis]
    if ref.ndim != 3:
        raise ValueError(f"a reference mask is (Z, H, W) or (H, W), got shape {ref.shape}")
    ref = ref.astype(bool, copy=False)
    if not ref.any():
        raise PromptError("cannot simulate a prompt for an empty reference mask")
    return ref


def object_slices(ref: np.ndarray) -> np.ndarray:
    """Sorted indices of the slices where the ``(Z, H, W)`` mask is not empty."""
    return np.nonzero(_as_mask(ref).any(axis=(1, 2)))[0]


def middle_slice(ref: np.ndarray) -> int:
    """The object's middle slice ``(zmin + zmax) // 2``.

    If that slice holds none of the object (an object in separate pieces along
    z), the nearest slice that does (the lower one on a tie).
    """
    zs = object_slices(ref)
    z = int((zs[0] + zs[-1]) // 2)
    return int(zs[np.argmin(np.abs(zs - z))])


def _ordered(lo: int, hi: int, size: int) -> tuple[int, int]:
    """Two coordinates as ``lo < hi`` inside ``0..size-1`` (swap if crossed, widen by 1 if equal)."""
    lo, hi = min(lo, hi), max(lo, hi)
    if lo == hi:
        if hi < size - 1:
            hi += 1
        elif lo > 0:
            lo -= 1
    return lo, hi


def jitter_box(box: Sequence[float], jitter_px: float, rng: Optional[np.random.Generator], shape: tuple[int, int]) -> Box:
    """Move each coordinate of ``(x0, y0, x1, y1)`` by a uniform integer offset in ``[-j, +j]``, ``j = floor(jitter_px)``.

    Args:
        box: integer pixel box (e.g. from :func:`promptseg.prompts.box_from_mask`).
        jitter_px: maximum shift of each coordinate, pixels (>= 0; 0 draws nothing).
        rng: the generator (may be None when ``jitter_px < 1``).
        shape: ``(H, W)`` of the slice, to clip to.

    Returns:
        The box, clipped to the slice, with ``x0 < x1`` and ``y0 < y1`` (floats).
    """
    if jitter_px < 0 or not math.isfinite(jitter_px):
        raise ValueError(f"jitter must be a finite number of pixels >= 0, got {jitter_px}")
    height, width = shape
    coords = np.array([int(round(v)) for v in box], dtype=np.int64)
    j = int(math.floor(jitter_px))
    if j > 0:
        if rng is None:
            raise ValueError("a jittered box needs a random generator (rng)")
        coords = coords + rng.integers(-j, j, size=4, endpoint=True)
    x0, x1 = (int(np.clip(v, 0, width - 1)) for v in (coords[0], coords[2]))
    y0, y1 = (int(np.clip(v, 0, height - 1)) for v in (coords[1], coords[3]))
    x0, x1 = _ordered(x0, x1, width)
    y0, y1 = _ordered(y0, y1, height)
    return (float(x0), float(y0), float(x1), float(y1))


def box_middle_slice(
    ref: np.ndarray, jitter_px: float = 0.0, rng: Optional[np.random.Generator] = None, *,
    label: int = 1, name: Optional[str] = None, with_z_range: bool = False,
) -> ObjectPrompt:
    """The tight box on the object's middle slice (see :func:`middle_slice`), jittered.

    Segment it with ``mode="3d"``: propagation with the automatic stop, or -- with
    ``with_z_range`` -- over the object's first to last slice (``box-mid-z``).
    """
    ref = _as_mask(ref)
    z = middle_slice(ref)
    box = jitter_box(box_from_mask(ref[z]), jitter_px, rng, ref.shape[1:])
    zs = object_slices(ref)
    z_range = (int(zs[0]), int(zs[-1])) if with_z_range else None
    return make_object(slice=z, box=box, label=label, name=name, z_range=z_range)


def boxes_every_slice(
    ref: np.ndarray, jitter_px: float = 0.0, rng: Optional[np.random.Generator] = None, *,
    label: int = 1, name: Optional[str] = None,
) -> ObjectPrompt:
    """The tight box on every slice the object is on, each jittered independently (in z order).

    Returns a key-slice prompt (one box per slice; a single-slice prompt for an
    object on one slice). Segment it with ``mode="2d"``: then exactly these
    slices are segmented, each from its own box.
    """
    ref = _as_mask(ref)
    boxes = {int(z): jitter_box(box_from_mask(ref[z]), jitter_px, rng, ref.shape[1:]) for z in object_slices(ref)}
    if len(boxes) == 1:
        (z, box), = boxes.items()
        return make_object(slice=z, box=box, label=label, name=name)
    return make_object(key_boxes=boxes, label=label, name=name)


def box3d(
    ref: np.ndarray, jitter_px: float = 0.0, rng: Optional[np.random.Generator] = None, *,
    label: int = 1, name: Optional[str] = None,
) -> ObjectPrompt:
    """The challenge's 3D box ``(x0, y0, z0, x1, y1, z1)``: the tight in-plane box over all slices + the slice range.

    Only ``x`` and ``y`` are jittered (in pixels); ``z0, z1`` are the object's
    first and last slice. As in the LiteMedSAM challenge, the box is prompted
    on slice ``z0 + (z1 - z0) // 2`` and propagation covers ``z0..z1``
    (``mode="3d"``).
    """
    ref = _as_mask(ref)
    zs = object_slices(ref)
    x0, y0, x1, y1 = jitter_box(box_from_mask(ref.any(axis=0)), jitter_px, rng, ref.shape[1:])
    return make_object(box3d=(x0, y0, int(zs[0]), x1, y1, int(zs[-1])), label=label, name=name)


def points(
    ref: np.ndarray, n: int, rng: np.random.Generator, *, label: int = 1, name: Optional[str] = None,
    negatives: Optional[int] = None,
) -> ObjectPrompt:
    """``n`` clicks on the middle slice: ``n - negatives`` inside the object, ``negatives`` just outside
    (default ``floor(n/2)``, so ``ceil(n/2)`` inside).

    Positives come first, then negatives, in the order drawn. See the module
    docstring for where negatives are drawn. Segment with ``mode="3d"``.
    """
    if int(n) != n or n < 1:
        raise ValueError(f"the number of points must be an integer >= 1, got {n}")
    if negatives is not None and (int(negatives) != negatives or not 0 <= negatives < n):
        raise ValueError(f"negatives must be an integer in 0..{int(n) - 1} (at least one positive click), got {negatives}")
    ref = _as_mask(ref)
    z = middle_slice(ref)
    mask = ref[z]
    n_neg = int(n) // 2 if negatives is None else int(negatives)
    n_pos = int(n) - n_neg
    rows, cols = np.nonzero(mask)
    pick = rng.choice(rows.size, size=n_pos, replace=n_pos > rows.size)
    clicks = [Point(float(cols[i]), float(rows[i]), True) for i in pick]
    if n_neg:
        distance = ndimage.distance_transform_edt(~mask)
        near, far = NEGATIVE_BAND_PX
        band = (distance > near) & (distance <= far)
        if not band.any():
            band = ~mask
        rows, cols = np.nonzero(band)
        if rows.size:
            pick = rng.choice(rows.size, size=n_neg, replace=n_neg > rows.size)
            clicks += [Point(float(cols[i]), float(rows[i]), False) for i in pick]
    return make_object(slice=z, points=tuple(clicks), label=label, name=name)


def simulate_prompts(
    labels: np.ndarray,
    mode: str,
    *,
    seed: int = 0,
    case_id: str = "case",
    values: Optional[Sequence[int]] = None,
    names: Optional[dict[int, str]] = None,
    jitter_px: float = 0.0,
    n_points: int = 1,
    negatives: Optional[int] = None,
) -> list[ObjectPrompt]:
    """One simulated prompt per label of a ``(Z, H, W)`` integer label map.

    Args:
        labels: reference label map (0 = background).
        mode: a key of :data:`PROMPT_MODES`.
        seed, case_id: with the label and mode, they seed each object's generator (:func:`prompt_rng`).
        values: the labels to prompt (default: every label present); absent ones are skipped.
        names: ``{label: name}`` for the objects' names.
        jitter_px: box jitter (box modes).
        n_points: clicks per object (``points`` mode).
        negatives: how many of them are negative (default ``floor(n_points / 2)``).

    Returns:
        Object prompts with ``label`` = the label value, in increasing label order.
    """
    if mode not in PROMPT_MODES:
        raise ValueError(f"unknown prompt mode {mode!r}; choose from {', '.join(PROMPT_MODES)}")
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = labels[np.newaxis]
    present = [int(v) for v in np.unique(labels) if v != 0]
    if values is not None:
        present = [v for v in present if v in set(int(x) for x in values)]
    names = names or {}
    out = []
    for value in present:
        # box-mid-z draws the same box as box-mid: the two differ only by the z-range
        rng = prompt_rng(seed, case_id, value, "box-mid" if mode == "box-mid-z" else mode)
        ref = labels == value
        name = names.get(value)
        if mode in ("box-mid", "box-mid-z"):
            out.append(box_middle_slice(ref, jitter_px, rng, label=value, name=name, with_z_range=mode == "box-mid-z"))
        elif mode == "box-2d":
            out.append(boxes_every_slice(ref, jitter_px, rng, label=value, name=name))
        elif mode == "box3d":
            out.append(box3d(ref, jitter_px, rng, label=value, name=name))
        else:
            out.append(points(ref, n_points, rng, label=value, name=name, negatives=negatives))
    return out
