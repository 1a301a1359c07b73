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

from ..errors import PromptError
from ..prompts import ObjectPrompt
from ..propagation import ObjectResult

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
class _Track:
    """One object during propagation."""

    obj_id: int
    prompt: ObjectPrompt
    result: ObjectResult
    masks: dict[int, np.ndarray]
    start: int
    low: int  # lowest slice it may reach
    high: int  # highest slice it may reach
    bounded: bool  # z-range or key slices: cover the range, no object-score stop
    active: dict[str, bool] = field(default_factory=lambda: {"up": True, "down": True})
    absent_run: int = 0

    def limit(self, direction: str) -> int:
        return self.high if direction == "up" else self.low


def _tracks(prompts: Sequence[ObjectPrompt], masks: dict | None, depth: int, shape: tuple[int, int]) -> list[_Track]:
    masks = masks or {}
    labels = {p.label for p in prompts}
    unknown = sorted(set(masks) - labels)
    if unknown:
        raise PromptError(f"mask prompts for labels {unknown} that no object has")
    tracks = []
    for i, prompt in enumerate(prompts):
        own = {int(z): np.asarray(m, dtype=bool) for z, m in masks.get(prompt.label, {}).items()}
        for z, m in own.items():
            if z not in prompt.slices:
                raise PromptError(f"{prompt.display_name}: mask prompt on slice {z}, which has no prompt of the object")
            if m.shape != shape:
                raise PromptError(f"{prompt.display_name}: mask prompt of shape {m.shape} on a {shape} slice")
        keys = sorted(prompt.slices)
        low, high = (keys[0], keys[-1]) if prompt.is_key_slices else (0, depth - 1)
        if prompt.z_range is not None:
            low, high = max(low, prompt.z_range[0]), min(high, prompt.z_range[1])
        tracks.append(_Track(obj_id=i, prompt=prompt, result=ObjectResult(prompt), masks=own, start=keys[0],
                             low=low, high=high, bounded=prompt.is_key_slices or prompt.z_range is not None))
    return tracks


def _add_prompts(model, state: dict, track: _Track) -> None:
    for z in sorted(track.prompt.slices):
        if z in track.masks:
            model.add_new_mask(state, frame_idx=z, obj_id=track.obj_id, mask=track.masks[z])
            continue
        sp = track.prompt.slices[z]
        coords, labels = sp.point_arrays()
        box = None if sp.box is None else np.asarray(sp.box, dtype=np.float32)
        model.add_new_points_or_box(state, frame_idx=z, obj_id=track.obj_id, points=coords, labels=labels, box=box)


def _track_frame(model, state: dict, track: _Track, z: int, reverse: bool) -> tuple[torch.Tensor, float]:
    """Segment ``track``'s object on slice ``z``: ``(logits (H, W) float32, object-score logit)``."""
    idx = state["obj_id_to_idx"][track.obj_id]
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


def _record(track: _Track, z: int, logits: torch.Tensor, score_logit: float) -> bool:
    """Store a non-empty mask; return whether the object is present on ``z``."""
    values = logits.cpu().numpy()
    present = score_logit > 0 and bool((values > 0).any())
    if present:
        track.result.logits[z] = values.astype(np.float16)
        track.result.scores[z] = float(1.0 / (1.0 + np.exp(-score_logit)))
    return present


def _sweep(model, state: dict, tracks: list[_Track], start: int, direction: str, depth: int,
           stop_after: int | None, bar) -> None:
    """One direction of one pass: prompts are already added to ``state``."""
    reverse = direction == "down"
    step = -1 if reverse else 1
    for track in tracks:  # the run of slices without the object is counted per direction
        track.absent_run = 0
    model.propagate_in_video_preflight(state)
    if direction == "up":
        for track in tracks:
            logits, score = _track_frame(model, state, track, start, reverse)
            if not _record(track, start, logits, score) and not track.bounded and stop_after is not None:
                reason = "no object found on the prompted slice"
                track.active = {"up": False, "down": False}
                track.result.stops = {"up": reason, "down": reason}
        bar.update(1)
    z = start + step
    while True:
        live = [t for t in tracks if t.active[direction]]
        for t in live:
            if (z > t.limit(direction)) if direction == "up" else (z < t.limit(direction)):
                t.active[direction] = False
                if not t.prompt.is_key_slices:
                    at_edge = z < 0 or z >= depth
                    t.result.stops[direction] = "end of volume" if at_edge else "end of z-range"
        live = [t for t in live if t.active[direction]]
        if not live:
            return
        for track in live:
            logits, score = _track_frame(model, state, track, z, reverse)
            present = _record(track, z, logits, score)
            if track.bounded:
                continue
            track.absent_run = 0 if present else track.absent_run + 1
            if stop_after is not None and track.absent_run >= stop_after:
                track.active[direction] = False
                track.result.stops[direction] = f"slice {z}: no object (SAM2 object score logit {score:+.2f})"
        bar.update(1)
        z += step


def _keep_largest_component(result: ObjectResult) -> None:
    from scipy import ndimage

    if not result.logits:
        return
    zs = sorted(result.logits)
    first = zs[0]
    shape = result.logits[first].shape
    volume = np.zeros((zs[-1] - first + 1, *shape), dtype=bool)
    for z in zs:
        volume[z - first] = result.logits[z] > 0
    components, count = ndimage.label(volume, structure=np.ones((3, 3, 3), dtype=bool))
    if count <= 1:
        return
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    keep = components == int(np.argmax(sizes))
    for z in zs:
        inside = keep[z - first]
        if not inside.any():
            del result.logits[z]
            result.scores.pop(z, None)
            continue
        logits = result.logits[z].copy()
        logits[~inside & (logits > 0)] = NO_OBJECT_LOGIT
        result.logits[z] = logits


@torch.inference_mode()
def propagate_memory(
    model,
    images,
    prompts: Sequence[ObjectPrompt],
    *,
    device: torch.device | str = "cpu",
    progress: bool = False,
    largest_component: bool = False,
    stop_after: int | None = 1,
    masks: dict[int, dict[int, np.ndarray]] | None = None,
) -> tuple[list[ObjectResult], list[int]]:
    """Segment every object of ``prompts`` through ``images`` with SAM2's memory propagation.

    Args:
        model: an upstream ``SAM2VideoPredictor`` with its weights (``SAM2Segmenter.model``).
        images: ``(Z, H, W)`` or ``(Z, H, W, 3)`` uint8, intensity-normalised: an array
            or anything with ``.shape`` and ``images[z]``
            (:class:`~promptseg.intensity.NormalizedSlices`).
        prompts: validated object prompts (boxes, points, key-slice boxes, z-ranges).
        device: where the model runs.
        progress: show a progress bar of tracked slices.
        largest_component: keep each object's largest 3D connected component.
        stop_after: consecutive slices without the object that end a direction
            (``None``: track to the end of the volume, even from a prompted slice
            without the object); see the module docstring.
        masks: mask prompts ``{object label: {z: (H, W) bool}}`` replacing that
            object's box / points on slice ``z`` (Python API only).

    Returns:
        One :class:`~promptseg.propagation.ObjectResult` per prompt (same order; logits
        ``(H, W)`` float16 on slices with a non-empty mask, scores = object-presence
        probability, stops per direction) and every slice the image encoder processed,
        in order (a slice repeats when objects prompted on different slices visit it,
        and key slices repeat once; see the module docstring).
    """
    if stop_after is not None and stop_after < 1:
        raise ValueError(f"stop_after must be >= 1 or None, got {stop_after}")
    device = torch.device(device)
    depth, height, width = (int(v) for v in images.shape[:3])
    tracks = _tracks(list(prompts), masks, depth, (height, width))
    frames = VolumeFrames(images, int(model.image_size), device)
    groups: dict[int, list[_Track]] = {}
    for track in tracks:
        groups.setdefault(track.start, []).append(track)
    bar = tqdm(total=None, unit="slice", desc="SAM2 memory propagation", disable=not progress, leave=False)
    try:
        for start, members in sorted(groups.items()):
            state = new_inference_state(frames, height, width, device)
            for track in members:
                _add_prompts(model, state, track)
            start_features = state["cached_features"].get(start)
            _sweep(model, state, members, start, "up", depth, stop_after, bar)
            down = [t for t in members if t.active["down"] and not t.prompt.is_key_slices]
            for t in members:
                if t.prompt.is_key_slices:
                    t.active["down"] = False
            if not down:
                continue
            model.reset_state(state)
            if start_features is not None:  # the prompted slice's features: no second encoder pass
                state["cached_features"] = {start: start_features}
            for track in down:
                _add_prompts(model, state, track)
            _sweep(model, state, down, start, "down", depth, stop_after, bar)
    finally:
        bar.close()
    results = [t.result for t in tracks]
    if largest_component:
        for result in results:
            _keep_largest_component(result)
    return results, list(frames.loaded)
