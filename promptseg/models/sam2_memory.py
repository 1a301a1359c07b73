"""SAM2 memory propagation through a volume held in memory: slices are video frames, no JPEG folder.

The upstream ``SAM2VideoPredictor`` reads a video from a folder of JPEG files
into an *inference state* and then tracks objects frame by frame with a memory
bank of earlier frames (masks encoded by the memory encoder, object pointers).
Here the inference state is built directly over the volume
(:func:`new_inference_state`); its frames are normalised on access exactly as
upstream's frame loader does (:func:`frame_tensor`: the slice as an RGB image,
resized to ``S x S`` with Pillow's bicubic filter, / 255, ImageNet mean / std),
so a volume costs memory for its uint8 slices only. Prompts are added and
frames tracked with the upstream model's own methods (``add_new_points_or_box``,
``add_new_mask``, ``propagate_in_video_preflight``, ``reset_state`` and the
per-frame ``_run_single_frame_inference`` that ``propagate_in_video`` calls), so
the masks equal ``SAM2VideoPredictor``'s for the same frames
(tests/test_sam2.py checks it against upstream's own JPEG-folder path).

The engine knows no promptseg prompt objects: it tracks :class:`Track` values (seeds
on conditioning slices, a reach, and the results it fills in);
:mod:`promptseg.inference.memory` turns object prompts into tracks and tracks into
object results.

The protocol (MedSAM2's 3D inference, ``medsam2_infer_3D_CT.py``):

1. each object's prompt is added on its slice (box and/or points, or a mask;
   key-slice objects get every key box as a conditioning slice);
2. propagation runs *up* (increasing z) from the prompted slice;
3. the state is reset, the prompts are added again and propagation runs *down*
   (``reverse=True``), so neither direction sees the other's slices in its memory.

Objects prompted on the same slice share one pass (each slice is encoded once
for all of them; objects are tracked independently, as upstream does since
sam2 1.1); objects prompted on different slices get passes of their own. The
key slices of a key-slice object are encoded a second time when their masks
enter the memory (upstream caches the features of one slice only).

Where an object ends: on every slice SAM2 predicts an *object score*; when its
logit is <= 0 upstream already replaces the mask by an empty one. A slice
"without the object" is one with object-score logit <= 0 or an empty mask.
Propagation stops in a direction after ``stop_after`` consecutive slices
without the object (default 1: at the first one), and in both directions when
the prompted slice itself shows no object. With ``stop_after=None`` it never
stops: the whole volume is tracked both ways, as upstream's
``propagate_in_video`` does. Objects with a z-range or key slices cover exactly
their range instead, whatever the score.
``largest_component=True`` then keeps each object's largest 3D connected
component (26-connectivity), as MedSAM2's inference does.

Scores in the results are the object-presence probability ``sigmoid(object
score logit)`` (SAM2's video path keeps no predicted IoU).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from ..stops import Stop, StopReason
from .base import half_logits

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: logit written where ``largest_component`` removes a voxel (upstream's no-object score)
NO_OBJECT_LOGIT = -1024.0


def frame_tensor(image: np.ndarray, image_size: int) -> torch.Tensor:
    """One slice as SAM2's video frame loader prepares a JPEG frame.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` uint8, intensity-normalised.
        image_size: the model's ``S``.

    Returns:
        ``(3, S, S)`` float32: RGB, bicubic-resized to ``S x S``, / 255, minus ImageNet
        mean, divided by ImageNet std.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"expected an (H, W) or (H, W, 3) uint8 slice, got {image.dtype} {image.shape}")
    rgb = Image.fromarray(image).convert("RGB").resize((image_size, image_size), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.asarray(rgb) / 255.0).permute(2, 0, 1).to(torch.float32)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    return (x - mean) / std


class VolumeFrames:
    """A volume's slices as the frames of SAM2's inference state: ``frames[z]`` -> ``(3, S, S)`` float32.

    Slices are normalised on access (upstream calls it once per encoder pass);
    ``loaded`` records the slices in the order they were requested.
    """

    def __init__(self, images, image_size: int, device: torch.device) -> None:
        self.images, self.image_size, self.device = images, int(image_size), device
        self.loaded: list[int] = []

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, z: int) -> torch.Tensor:
        z = int(z)
        if not 0 <= z < len(self):
            raise IndexError(z)
        self.loaded.append(z)
        return frame_tensor(np.asarray(self.images[z]), self.image_size).to(self.device)


def new_inference_state(frames: VolumeFrames, height: int, width: int, device: torch.device) -> dict:
    """The inference state ``SAM2VideoPredictor.init_state`` builds, over in-memory frames.

    Same entries as upstream's (sam2 >= 1.1), without the warm-up encoding of frame 0.
    ``height`` / ``width`` are the slice's size in pixels (outputs are resized to it).
    """
    return {
        "images": frames,
        "num_frames": len(frames),
        "offload_video_to_cpu": False,
        "offload_state_to_cpu": False,
        "video_height": int(height),
        "video_width": int(width),
        "device": device,
        "storage_device": device,
        "point_inputs_per_obj": {},
        "mask_inputs_per_obj": {},
        "cached_features": {},
        "constants": {},
        "obj_id_to_idx": OrderedDict(),
        "obj_idx_to_id": OrderedDict(),
        "obj_ids": [],
        "output_dict_per_obj": {},
        "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
    }


@dataclass
class Seed:
    """What an object is prompted with on one conditioning slice (slice pixels).

    Attributes:
        box: ``(4,)`` float32 ``(x0, y0, x1, y1)``, or None.
        points: ``(N, 2)`` float32 ``(x, y)``, or None.
        labels: ``(N,)`` int, 1 inside / 0 outside, or None.
        mask: ``(H, W)`` bool mask prompt (replaces box and points), or None.
    """

    box: np.ndarray | None = None
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    mask: np.ndarray | None = None


@dataclass
class Track:
    """One object to track through a volume: its seeds, its reach, and (filled in by
    :func:`track`) its results.

    Attributes:
        seeds: ``{z: Seed}``, the conditioning slices (several = key slices).
        low, high: the lowest / highest slice it may reach.
        bounded: cover ``low..high`` whatever the object score (a z-range or key slices).
        key_slices: key-slice object: one upward pass over its range, no stop reason
            at the range's ends.
        logits: ``{z: (H, W) float16}`` on slices with a non-empty mask.
        scores: ``{z: object-presence probability}`` on those slices.
        stops: why each direction (``"up"``, ``"down"``) ended.
    """

    seeds: dict[int, Seed]
    low: int
    high: int
    bounded: bool = False
    key_slices: bool = False
    logits: dict[int, np.ndarray] = field(default_factory=dict)
    scores: dict[int, float] = field(default_factory=dict)
    stops: dict[str, Stop] = field(default_factory=dict)

    @property
    def start(self) -> int:
        return min(self.seeds)

    @property
    def slices(self) -> list[int]:
        return sorted(self.logits)


@dataclass
class _Run:
    """A track during one call: its id in SAM2's state and its per-direction status."""

    obj_id: int
    track: Track
    active: dict[str, bool] = field(default_factory=lambda: {"up": True, "down": True})
    absent_run: int = 0

    def limit(self, direction: str) -> int:
        return self.track.high if direction == "up" else self.track.low


def _add_prompts(model, state: dict, run: _Run) -> None:
    for z, seed in sorted(run.track.seeds.items()):
        if seed.mask is not None:
            model.add_new_mask(state, frame_idx=z, obj_id=run.obj_id, mask=seed.mask)
            continue
        model.add_new_points_or_box(state, frame_idx=z, obj_id=run.obj_id, points=seed.points, labels=seed.labels,
                                    box=seed.box)


def _track_frame(model, state: dict, run: _Run, z: int, reverse: bool) -> tuple[torch.Tensor, float]:
    """Segment ``run``'s object on slice ``z``: ``(logits (H, W) float32, object-score logit)``."""
    idx = state["obj_id_to_idx"][run.obj_id]
    outputs = state["output_dict_per_obj"][idx]
    if z in outputs["cond_frame_outputs"]:
        out = outputs["cond_frame_outputs"][z]
        pred = out["pred_masks"]
    else:
        out, pred = model._run_single_frame_inference(
            inference_state=state, output_dict=outputs, frame_idx=z, batch_size=1, is_init_cond_frame=False,
            point_inputs=None, mask_inputs=None, reverse=reverse, run_mem_encoder=True,
        )
        outputs["non_cond_frame_outputs"][z] = out
    state["frames_tracked_per_obj"][idx][z] = {"reverse": reverse}
    size = (state["video_height"], state["video_width"])
    pred = pred.to(state["device"]).float()
    if tuple(pred.shape[-2:]) != size:
        pred = F.interpolate(pred, size=size, mode="bilinear", align_corners=False)
    return pred[0, 0], float(out["object_score_logits"].reshape(-1)[0])


def _record(track: Track, z: int, logits: torch.Tensor, score_logit: float) -> bool:
    """Store a non-empty mask; return whether the object is present on ``z``."""
    values = logits.cpu().numpy()
    present = score_logit > 0 and bool((values > 0).any())
    if present:
        track.logits[z] = half_logits(values)
        track.scores[z] = float(1.0 / (1.0 + np.exp(-score_logit)))
    return present


def _sweep(model, state: dict, runs: list[_Run], start: int, direction: str, depth: int,
           stop_after: int | None, bar) -> None:
    """One direction of one pass: prompts are already added to ``state``."""
    reverse = direction == "down"
    step = -1 if reverse else 1
    for run in runs:  # the run of slices without the object is counted per direction
        run.absent_run = 0
    model.propagate_in_video_preflight(state)
    if direction == "up":
        for run in runs:
            logits, score = _track_frame(model, state, run, start, reverse)
            if not _record(run.track, start, logits, score) and not run.track.bounded and stop_after is not None:
                stop = Stop(StopReason.NOTHING_ON_PROMPTED_SLICE)
                run.active = {"up": False, "down": False}
                run.track.stops = {"up": stop, "down": stop}
        bar.update(1)
    z = start + step
    while True:
        live = [r for r in runs if r.active[direction]]
        for r in live:
            if (z > r.limit(direction)) if direction == "up" else (z < r.limit(direction)):
                r.active[direction] = False
                if not r.track.key_slices:
                    at_edge = z < 0 or z >= depth
                    r.track.stops[direction] = Stop(StopReason.END_OF_VOLUME if at_edge else StopReason.END_OF_Z_RANGE)
        live = [r for r in live if r.active[direction]]
        if not live:
            return
        for run in live:
            logits, score = _track_frame(model, state, run, z, reverse)
            present = _record(run.track, z, logits, score)
            if run.track.bounded:
                continue
            run.absent_run = 0 if present else run.absent_run + 1
            if stop_after is not None and run.absent_run >= stop_after:
                run.active[direction] = False
                run.track.stops[direction] = Stop(StopReason.NO_OBJECT_SCORE, z,
                                                  f"no object (SAM2 object score logit {score:+.2f})")
        bar.update(1)
        z += step


def keep_largest_component(track: Track) -> None:
    """Keep only the track's largest 3D connected component (26-connectivity), as MedSAM2 does."""
    from scipy import ndimage

    if not track.logits:
        return
    zs = sorted(track.logits)
    first = zs[0]
    shape = track.logits[first].shape
    volume = np.zeros((zs[-1] - first + 1, *shape), dtype=bool)
    for z in zs:
        volume[z - first] = track.logits[z] > 0
    components, count = ndimage.label(volume, structure=np.ones((3, 3, 3), dtype=bool))
    if count <= 1:
        return
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    keep = components == int(np.argmax(sizes))
    for z in zs:
        inside = keep[z - first]
        if not inside.any():
            del track.logits[z]
            track.scores.pop(z, None)
            continue
        logits = track.logits[z].copy()
        logits[~inside & (logits > 0)] = NO_OBJECT_LOGIT
        track.logits[z] = logits


def track(
    model,
    images,
    tracks: Sequence[Track],
    *,
    device: torch.device | str = "cpu",
    progress: bool = False,
    largest_component: bool = False,
    stop_after: int | None = 1,
) -> list[int]:
    """Track every object of ``tracks`` through ``images`` with SAM2's memory propagation.

    Args:
        model: an upstream ``SAM2VideoPredictor`` with its weights (``SAM2Segmenter.model``).
        images: ``(Z, H, W)`` or ``(Z, H, W, 3)`` uint8, intensity-normalised: an array
            or anything with ``.shape`` and ``images[z]``
            (:class:`~promptseg.intensity.NormalizedSlices`).
        tracks: the objects (seeds and reach); their results are filled in place
            (``logits``, ``scores`` = object-presence probability, ``stops``).
        device: where the model runs.
        progress: show a progress bar of tracked slices.
        largest_component: keep each object's largest 3D connected component.
        stop_after: consecutive slices without the object that end a direction
            (``None``: track to the end of the volume, even from a prompted slice
            without the object); see the module docstring.

    Returns:
        Every slice the image encoder processed, in order (a slice repeats when objects
        seeded on different slices visit it, and key slices repeat once; see the module
        docstring).
    """
    if stop_after is not None and stop_after < 1:
        raise ValueError(f"stop_after must be >= 1 or None, got {stop_after}")
    device = torch.device(device)
    depth, height, width = (int(v) for v in images.shape[:3])
    runs = [_Run(obj_id=i, track=t) for i, t in enumerate(tracks)]
    frames = VolumeFrames(images, int(model.image_size), device)
    groups: dict[int, list[_Run]] = {}
    for run in runs:
        groups.setdefault(run.track.start, []).append(run)
    bar = tqdm(total=None, unit="slice", desc="SAM2 memory propagation", disable=not progress, leave=False)
    try:
        with torch.inference_mode():
            for start, members in sorted(groups.items()):
                state = new_inference_state(frames, height, width, device)
                for run in members:
                    _add_prompts(model, state, run)
                start_features = state["cached_features"].get(start)
                _sweep(model, state, members, start, "up", depth, stop_after, bar)
                down = [r for r in members if r.active["down"] and not r.track.key_slices]
                for r in members:
                    if r.track.key_slices:
                        r.active["down"] = False
                if not down:
                    continue
                model.reset_state(state)
                if start_features is not None:  # the prompted slice's features: no second encoder pass
                    state["cached_features"] = {start: start_features}
                for run in down:
                    _add_prompts(model, state, run)
                _sweep(model, state, down, start, "down", depth, stop_after, bar)
    finally:
        bar.close()
    if largest_component:
        for t in tracks:
            keep_largest_component(t)
    return list(frames.loaded)
