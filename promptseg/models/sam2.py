"""SAM2, SAM2.1 and MedSAM2 backends, built from the configs shipped inside the ``sam2`` package.

Backends (``promptseg models``):

==========================  ==========================================  =====  ==========================
name                        packaged hydra config                       input  checkpoint
==========================  ==========================================  =====  ==========================
``sam2-hiera-tiny``         ``configs/sam2/sam2_hiera_t.yaml``          1024   ``sam2_hiera_tiny.pt``
``sam2-hiera-small``        ``configs/sam2/sam2_hiera_s.yaml``          1024   ``sam2_hiera_small.pt``
``sam2-hiera-base-plus``    ``configs/sam2/sam2_hiera_b+.yaml``         1024   ``sam2_hiera_base_plus.pt``
``sam2-hiera-large``        ``configs/sam2/sam2_hiera_l.yaml``          1024   ``sam2_hiera_large.pt``
``sam2.1-hiera-*``          ``configs/sam2.1/sam2.1_hiera_{t,s,b+,l}``  1024   ``sam2.1_hiera_*.pt``
``medsam2``                 ``configs/sam2.1/sam2.1_hiera_t.yaml``      512    ``MedSAM2_latest.pt``
                            with ``image_size=512``
==========================  ==========================================  =====  ==========================

The network is the upstream ``SAM2VideoPredictor`` (a ``SAM2Base``) instantiated
with random weights from the packaged config, with the settings upstream's
``build_sam2_video_predictor`` applies (dynamic multimask fall-back, binarised
masks from clicks in the memory encoder, 8-pixel hole filling when sam2's CUDA
extension is built -- without it upstream skips hole filling with a warning on
every slice, so we switch it off with one log line instead). The weights are then
loaded by promptseg's strict loader, never by upstream's ``_load_checkpoint``.

Checkpoints (:func:`load_sam2_weights`): a plain state dict, ``{"model": ...}``
(SAM2's and MedSAM2's own format), ``{"state_dict": ...}``, Lightning-style
prefixes, ``module.`` prefixes, and promptseg's fine-tuned checkpoints (the
training view's keys, see :class:`SAM2TrainingView`). SAM2.1 checkpoints hold
three tensors SAM2 ones lack (:data:`SAM21_ONLY_KEYS`); the Hiera size is read
from the trunk's width and block count. A checkpoint of the other generation or
another size is refused with a message naming the backend to use instead
(auto-selection is impossible in general: MedSAM2 and SAM2.1-tiny checkpoints
have identical keys and shapes, only the input size differs).

Pre-processing (both follow upstream exactly, and differ from each other as
upstream's two predictors do):

* 2D (:meth:`SAM2Segmenter.embed`, as ``SAM2ImagePredictor.set_image``): the
  uint8 slice (grey repeated to 3 channels) / 255, resized to a square
  ``S x S`` (aspect ratio *not* kept) with antialiased bilinear interpolation,
  minus ImageNet mean, divided by ImageNet std;
* memory propagation (:mod:`promptseg.models.sam2_memory`, as the video
  predictor's frame loader): the slice as an RGB image resized to ``S x S`` with
  Pillow's bicubic filter, / 255, ImageNet mean / std.

Coordinates map to the model grid by ``x * S / W`` and ``y * S / H``; mask
logits come from the decoder's ``S/4`` grid, bilinearly resized to the slice.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..device import resolve_device
from .base import Embedding
from .capabilities import Capability
from .sam_core import GridPreprocessing, SamFamilySegmenter, batch_prompts

log = logging.getLogger(__name__)


def __getattr__(name: str):
    if name == "SAM2TrainingView":  # in its own module: defining a torch.nn.Module subclass imports torch
        from .sam2_view import SAM2TrainingView

        return SAM2TrainingView
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: tensors only SAM2.1 checkpoints hold (no-object spatial embedding and the projection of
#: the object pointers' temporal encoding); SAM2 checkpoints hold none of them
SAM21_ONLY_KEYS = ("no_obj_embed_spatial", "obj_ptr_tpos_proj.weight", "obj_ptr_tpos_proj.bias")
#: Hiera trunk width (``patch_embed`` channels) and block count of each released size
HIERA_SIZES = {"tiny": (96, 12), "small": (96, 16), "base-plus": (112, 24), "large": (144, 48)}
_TRUNK_WIDTH_KEY = "image_encoder.trunk.patch_embed.proj.weight"
_TRUNK_BLOCK_PREFIX = "image_encoder.trunk.blocks."

SAM2_DOWNLOAD = "https://dl.fbaipublicfiles.com/segment_anything_2/072824/"
SAM21_DOWNLOAD = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
MEDSAM2_DOWNLOAD = "https://huggingface.co/wanglab/MedSAM2 (bowang-lab/MedSAM2 on GitHub)"

#: what upstream's ``build_sam2_video_predictor(apply_postprocessing=True)`` adds to every config
_POSTPROCESSING = (
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
    "++model.binarize_mask_from_pts_for_mem_enc=true",
)
_FILL_HOLE_AREA = 8
_DEFAULT = object()


@dataclass(frozen=True)
class SAM2Variant:
    """One SAM2-family backend.

    Attributes:
        name: registry name.
        family: ``"sam2"`` or ``"sam2.1"`` (which tensors the checkpoint holds).
        size: Hiera size, a key of :data:`HIERA_SIZES`.
        config: hydra config name inside the ``sam2`` package.
        image_size: side of the square model input, pixels.
        checkpoint_file: the file users download.
        source: where to download it.
        overrides: hydra overrides applied on top of the packaged config.
    """

    name: str
    family: str
    size: str
    config: str
    image_size: int
    checkpoint_file: str
    source: str
    overrides: tuple[str, ...] = field(default=())
    description: str = ""


def _variants() -> dict[str, SAM2Variant]:
    short = {"tiny": "t", "small": "s", "base-plus": "b+", "large": "l"}
    out = {}
    for family, folder, prefix, source in (("sam2", "sam2", "sam2_hiera", SAM2_DOWNLOAD),
                                           ("sam2.1", "sam2.1", "sam2.1_hiera", SAM21_DOWNLOAD)):
        for size in HIERA_SIZES:
            name = f"{family}-hiera-{size}"
            file = f"{prefix}_{size.replace('-', '_')}.pt"
            out[name] = SAM2Variant(
                name=name, family=family, size=size, config=f"configs/{folder}/{prefix}_{short[size]}.yaml",
                image_size=1024, checkpoint_file=file, source=source + file,
                description=f"{'SAM 2.1' if family == 'sam2.1' else 'SAM 2'} (Meta), Hiera-{size} image encoder",
            )
    # MedSAM2 (bowang-lab): SAM2.1 Hiera-tiny fine-tuned at 512 px (its config
    # sam2.1_hiera_t512.yaml = the packaged tiny config with image_size 512; the RoPE
    # feature size only pre-computes what the attention recomputes for 32 x 32 anyway)
    out["medsam2"] = SAM2Variant(
        name="medsam2", family="sam2.1", size="tiny", config="configs/sam2.1/sam2.1_hiera_t.yaml",
        image_size=512, checkpoint_file="MedSAM2_latest.pt", source=MEDSAM2_DOWNLOAD,
        overrides=("++model.image_size=512",
                   "++model.memory_attention.layer.self_attention.feat_sizes=[32,32]",
                   "++model.memory_attention.layer.cross_attention.feat_sizes=[32,32]"),
        description="MedSAM2 (bowang-lab): SAM 2.1 Hiera-tiny fine-tuned on 3D medical images and videos, 512 px",
    )
    return out


VARIANTS: dict[str, SAM2Variant] = _variants()


# ---------------------------------------------------------------------------
# building the upstream network
def _sam2_extension_built() -> bool:
    try:
        from sam2 import _C  # noqa: F401
    except ImportError:
        return False
    return True


_warned_no_extension = False


def build_network(variant: SAM2Variant, hydra_overrides: Sequence[str] = ()):
    """The upstream ``SAM2VideoPredictor`` for ``variant``, random weights, on the CPU, eval mode.

    Args:
        variant: the backend.
        hydra_overrides: extra hydra overrides (e.g. smaller architectures for tests,
            ``"++model.image_encoder.trunk.stages=[1,1,2,1]"``).

    Raises:
        ModelError: the ``sam2`` package is missing or cannot build the config.
    """
    global _warned_no_extension
    from ..errors import ModelError

    try:
        import sam2  # noqa: F401  (initialises hydra with sam2's packaged configs)
        from hydra import compose
        from hydra.errors import HydraException
        from hydra.utils import instantiate
        from omegaconf import OmegaConf
        from omegaconf.errors import OmegaConfBaseException
    except ImportError as exc:
        raise ModelError(
            f"model {variant.name} needs the sam2 package ({exc}); install it built against your torch: "
            "SAM2_BUILD_CUDA=0 pip install --no-build-isolation 'sam2>=1.1'"
        ) from None
    fill = _FILL_HOLE_AREA
    if not _sam2_extension_built():
        fill = 0
        if not _warned_no_extension:
            _warned_no_extension = True
            log.info("sam2 was built without its CUDA extension: 8-pixel hole filling of memory-propagated "
                     "masks is off (upstream skips it too, with a warning on every slice)")
    overrides = ["++model._target_=sam2.sam2_video_predictor.SAM2VideoPredictor", *_POSTPROCESSING,
                 f"++model.fill_hole_area={fill}", *variant.overrides, *hydra_overrides]
    try:
        cfg = compose(config_name=variant.config, overrides=overrides)
        OmegaConf.resolve(cfg)
        model = instantiate(cfg.model, _recursive_=True)
    except (HydraException, OmegaConfBaseException) as exc:
        # hydra wraps a constructor's error as "Error in call to target ...:" + the error: one line
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        why = " ".join(lines[:2]) if lines else type(exc).__name__
        raise ModelError(f"cannot build {variant.name} from sam2's {variant.config}: {why}") from None
    if not hasattr(model, "_run_single_frame_inference") or not hasattr(model, "propagate_in_video_preflight"):
        raise ModelError("promptseg's SAM2 memory propagation needs sam2 >= 1.1 (per-object inference state)")
    return model.eval()


# ---------------------------------------------------------------------------
# checkpoints
@dataclass(frozen=True)
class Architecture:
    """What a SAM2 state dict says about its model: generation and Hiera trunk."""

    family: str  # "sam2", "sam2.1" or "unknown"
    width: int | None
    blocks: int

    @property
    def size(self) -> str | None:
        for name, shape in HIERA_SIZES.items():
            if shape == (self.width, self.blocks):
                return name
        return None

    def describe(self) -> str:
        family = {"sam2": "SAM2", "sam2.1": "SAM2.1"}.get(self.family, "SAM2-family")
        trunk = f"Hiera-{self.size}" if self.size else f"Hiera with {self.blocks} blocks of width {self.width}"
        return f"{family} {trunk}"


def detect_architecture(state) -> Architecture:
    """Generation (from :data:`SAM21_ONLY_KEYS`) and trunk (width, blocks) of a SAM2 state dict."""
    keys = set(state)
    present = [k for k in SAM21_ONLY_KEYS if k in keys]
    family = "sam2.1" if len(present) == len(SAM21_ONLY_KEYS) else "sam2" if not present else "unknown"
    width = int(state[_TRUNK_WIDTH_KEY].shape[0]) if _TRUNK_WIDTH_KEY in keys else None
    blocks = {k[len(_TRUNK_BLOCK_PREFIX):].split(".", 1)[0] for k in keys if k.startswith(_TRUNK_BLOCK_PREFIX)}
    return Architecture(family, width, len(blocks))


def _suggest(arch: Architecture, variant: SAM2Variant, want: Architecture) -> str:
    """The backend a checkpoint of architecture ``arch`` needs (refused by ``variant``)."""
    if arch.family not in ("sam2", "sam2.1"):
        return "the backend it was trained as"
    size = arch.size
    if size is None and (arch.width, arch.blocks) == (want.width, want.blocks):
        size = variant.size  # same trunk as this backend: only the generation differs
    if size is None:
        return f"the {arch.family}-hiera-* backend it was trained as"
    name = f"{arch.family}-hiera-{size}"
    if name == "sam2.1-hiera-tiny":
        return f"--model {name} (or medsam2 for MedSAM2 weights, 512 px)"
    return f"--model {name}"


def _not_found(path, variant: SAM2Variant) -> str:
    return f"checkpoint not found: {path} ({variant.name} expects {variant.checkpoint_file} from {variant.source})"


def load_sam2_weights(model, path: str | Path, variant: SAM2Variant, view=None) -> str:
    """Load a checkpoint into the upstream SAM2 ``model`` strictly; return its SHA-256 digest prefix.

    Args:
        model: from :func:`build_network`.
        path: the checkpoint (any layout the module docstring lists).
        variant: the backend (named in error messages).
        view: the model's :class:`SAM2TrainingView`, to read promptseg's fine-tuned checkpoints.

    Raises:
        CheckpointError: missing file (naming the variant's download), unreadable file, no
            state dict, SAM2 vs SAM2.1 or Hiera size mismatch (naming the backend to use), or
            any missing / unexpected / mis-shaped key.
    """
    from ..errors import CheckpointError
    from .checkpoint import (
        check_state_dict,
        extract_state_dict,
        file_digest,
        read_checkpoint,
    )
    from .sam2_view import SAM2TrainingView

    source = str(path)
    if not Path(path).is_file():
        raise CheckpointError(_not_found(path, variant))
    expected = model.state_dict()
    view = view if view is not None else SAM2TrainingView(model)
    renames = view.base_names()
    obj = read_checkpoint(path)
    state = extract_state_dict(obj, source=source, expected=set(expected) | set(renames))
    if set(state) & (set(renames) - set(expected)):
        # promptseg's fine-tuned checkpoint: the training view's names -> SAM2's own (the
        # view's image_encoder.* keys are SAM2's, its other parts are renamed)
        renamed = {renames.get(k, k): v for k, v in state.items()}
        if len(renamed) != len(state):
            raise CheckpointError(f"{source} mixes promptseg's fine-tuned key names with SAM2's own "
                                  "(both name the same tensor)")
        state = renamed
    have, want = detect_architecture(state), detect_architecture(expected)
    if have.family != "unknown" and have.family != want.family:
        extra = [k for k in SAM21_ONLY_KEYS if k in state]
        why = (f"it holds {', '.join(extra)}" if have.family == "sam2.1"
               else f"it lacks {', '.join(SAM21_ONLY_KEYS)}")
        raise CheckpointError(
            f"{source} is a {have.describe()} checkpoint ({why}) but {variant.name} is a {want.describe()} model: "
            f"use {_suggest(have, variant, want)}"
        )
    if have.width is not None and (have.width, have.blocks) != (want.width, want.blocks):
        raise CheckpointError(
            f"{source} is a {have.describe()} checkpoint but {variant.name} is a {want.describe()} model: "
            f"use {_suggest(have, variant, want)}"
        )
    name = Path(path).name.lower()
    if "medsam2" in name and variant.name != "medsam2":
        log.warning("%s looks like MedSAM2 weights (trained at 512 px); %s runs at %d px -- use --model medsam2",
                    Path(path).name, variant.name, variant.image_size)
    check_state_dict(model, state, source=source)
    model.load_state_dict(state, strict=True)
    return file_digest(path)


# ---------------------------------------------------------------------------
# pre-processing for training samples
class SAM2Preprocessing(GridPreprocessing):
    """How a slice and a mask reach the ``S x S`` grid of a SAM2-family backend for
    training -- everything that needs no weights (``promptseg prepare`` uses it alone).
    ``prepare_mask`` comes from :class:`~promptseg.models.sam_core.GridPreprocessing`.

    Args:
        variant: registry name or :class:`SAM2Variant`.
        input_size: the model's ``S`` (default the variant's).
    """

    def __init__(self, variant, input_size: int | None = None) -> None:
        self.variant = VARIANTS[variant] if isinstance(variant, str) else variant
        self.name = self.variant.name
        self.input_size = int(input_size or self.variant.image_size)

    def prepare_slice(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """Resize a uint8 slice to ``S x S`` (antialiased bilinear, rounded); returns it and ``(S, S)``."""
        import torch
        import torch.nn.functional as F

        image = np.asarray(image)
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
            raise ValueError(f"expected an (H, W) or (H, W, 3) slice, got shape {image.shape}")
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        x = x[None, None] if image.ndim == 2 else x.permute(2, 0, 1)[None]
        x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                          align_corners=False, antialias=True)
        out = x[0].round().clamp(0, 255).to(torch.uint8).numpy()
        out = out[0] if image.ndim == 2 else out.transpose(1, 2, 0)
        return np.ascontiguousarray(out), (self.input_size, self.input_size)

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """Every slice is resized to ``(S, S)``: the aspect ratio is not kept."""
        return (self.input_size, self.input_size)

    @staticmethod
    def model_input(prepared: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Prepared uint8 ``(S, S[, 3])`` -> ``(3, S, S)`` float32: / 255, ImageNet mean / std."""
        x = np.asarray(prepared, dtype=np.float32) / 255.0
        x = np.repeat(x[None], 3, axis=0) if x.ndim == 2 else np.moveaxis(x, -1, 0)
        mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)[:, None, None]
        std = np.asarray(IMAGENET_STD, dtype=np.float32)[:, None, None]
        return np.ascontiguousarray((x - mean) / std, dtype=np.float32)


# ---------------------------------------------------------------------------
# the segmenter
#: fine-tuning (re-encoding every sample: SAM2's features include high-resolution maps, 16.8 MB a
#: slice at 1024 px, that the decoder's conv_s0 / conv_s1 act on) and memory propagation
CAPABILITIES = frozenset({Capability.FINE_TUNING, Capability.MEMORY_PROPAGATION})


class SAM2Segmenter(SAM2Preprocessing, SamFamilySegmenter):
    """A SAM2-family model as a :class:`~promptseg.models.base.Segmenter` (2D) with memory propagation (3D).

    The 2D decode recipe is :class:`~promptseg.models.sam_core.SamFamilySegmenter`'s;
    what differs is stated here: the ``S x S`` grid, a box passed as two corner points
    (labels 2, 3) ahead of any points (as ``SAM2ImagePredictor``), the decoder's
    high-resolution features, and no chaining margin (the tight box).

    Args:
        variant: registry name or :class:`SAM2Variant`.
        checkpoint: weights file (required: ``None`` or a missing file raises
            :class:`~promptseg.errors.CheckpointError` naming where to download it; see
            :func:`load_sam2_weights`).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``.
        hydra_overrides: extra hydra overrides of the packaged config (smaller test
            architectures); the checkpoint must match the resulting model.
        stop_after: memory propagation stops in a direction after this many consecutive
            slices without the object (``None``: never, track to the end of the volume).
        largest_component: memory propagation keeps only each object's largest 3D
            connected component (26-connectivity), as MedSAM2's inference does.
        runtime: ``"auto"`` or ``"torch"`` (SAM2 runs in PyTorch only).
    """

    capabilities = CAPABILITIES

    def __init__(self, variant, checkpoint, device="cpu", hydra_overrides: Sequence[str] = (),
                 stop_after: int | None = 1, largest_component: bool = False, runtime: str = "auto") -> None:
        import torch

        from ..errors import CheckpointError, ModelError
        from .sam2_view import SAM2TrainingView

        if runtime not in ("auto", "torch"):
            raise ModelError(f"SAM2 backends run in PyTorch only: --runtime auto or torch, not {runtime!r}")
        SAM2Preprocessing.__init__(self, variant)
        if checkpoint is None:
            raise CheckpointError(f"model {self.name} needs weights: {self.variant.checkpoint_file} "
                                  f"from {self.variant.source}")
        self.checkpoint = Path(checkpoint)
        if not self.checkpoint.is_file():  # before building a network of up to 224M parameters
            raise CheckpointError(_not_found(checkpoint, self.variant))
        self.device = resolve_device(device)
        self.hydra_overrides = tuple(hydra_overrides)
        self.model = build_network(self.variant, self.hydra_overrides)
        self.input_size = int(self.model.image_size)  # the variant's, unless an override changed it
        self._view = SAM2TrainingView(self.model)
        self.weights_digest = load_sam2_weights(self.model, self.checkpoint, self.variant, self._view)
        self.model.to(self.device).eval()
        self.stop_after = stop_after
        self.largest_component = largest_component
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
        self._mean, self._std = mean.to(self.device), std.to(self.device)

    @property
    def net(self):
        """The :class:`SAM2TrainingView` of the model (same parameters)."""
        return self._view

    def describe(self) -> str:
        return f"{self.name} ({self.checkpoint.name}, sha256 {self.weights_digest}, {self.input_size} px, {self.device})"

    # -- 2D ----------------------------------------------------------------
    @staticmethod
    def _rgb(image: np.ndarray) -> np.ndarray:
        if image.ndim == 2:
            return np.repeat(image[..., None], 3, axis=2)
        if image.ndim == 3 and image.shape[2] == 3:
            return image
        raise ValueError(f"expected an (H, W) or (H, W, 3) slice, got shape {image.shape}")

    def preprocess(self, image: np.ndarray):
        """``(H, W)`` / ``(H, W, 3)`` uint8 -> ``(1, 3, S, S)`` float32 tensor, as ``SAM2ImagePredictor``."""
        import torch
        import torch.nn.functional as F

        rgb = self._rgb(np.asarray(image))
        x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).to(torch.float32).div(255)
        x = F.interpolate(x[None], size=(self.input_size, self.input_size), mode="bilinear",
                          align_corners=False, antialias=True)
        return ((x.to(self.device) - self._mean) / self._std)

    def embed(self, image: np.ndarray) -> Embedding:
        """Encode one slice.

        Returns an :class:`Embedding` whose ``features`` are ``{"image_embed": (1, 256, S/16, S/16),
        "high_res_feats": [(1, 32, S/4, S/4), (1, 64, S/8, S/8)]}`` (float32 tensors).
        """
        import torch

        image = np.asarray(image)
        with torch.inference_mode():
            features = self._features(self.model.forward_image(self.preprocess(image)))
        size = (self.input_size, self.input_size)
        return Embedding(features=features, original_size=tuple(image.shape[:2]), input_size=size)

    def _features(self, backbone_out) -> dict:
        # the levels the model uses (as _prepare_backbone_features); the high-resolution
        # ones are already projected by the decoder's conv_s0 / conv_s1 in forward_image
        levels = backbone_out["backbone_fpn"][-self.model.num_feature_levels:]
        embed = levels[-1]
        if self.model.directly_add_no_mem_embed:
            embed = embed + self.model.no_mem_embed.view(1, -1, 1, 1)
        return {"image_embed": embed, "high_res_feats": list(levels[:-1])}

    def to_model_coords(self, xy: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """``x * S / W``, ``y * S / H`` in float32, as ``SAM2Transforms.transform_coords``."""
        height, width = original_size
        coords = np.array(xy, dtype=np.float32).reshape(-1, 2)
        coords[:, 0] = coords[:, 0] / np.float32(width)
        coords[:, 1] = coords[:, 1] / np.float32(height)
        return coords * np.float32(self.input_size)

    def prompt_tensors(self, box, points, point_labels, original_size):
        """A box becomes its two corner points (labels 2, 3) ahead of any points; no ``boxes`` argument."""
        import torch

        coords, labels = [], []
        if box is not None:
            coords.append(self.to_model_coords(np.asarray(box, dtype=np.float32).reshape(2, 2), original_size))
            labels.append(np.array([2, 3], dtype=np.int32))
        if points is not None:
            pts = np.asarray(points, dtype=np.float32).reshape(-1, 2)
            coords.append(self.to_model_coords(pts, original_size))
            lab = np.ones(len(pts)) if point_labels is None else np.asarray(point_labels)
            labels.append(np.asarray(lab, dtype=np.int32).reshape(-1))
        points_t = (torch.as_tensor(np.concatenate(coords), device=self.device)[None],
                    torch.as_tensor(np.concatenate(labels), device=self.device)[None])
        return points_t, None

    def decode_prompts(self, features, points=None, boxes=None, masks=None, multimask_output: bool = False):
        """SAM2's prompt encoder + mask decoder with the high-resolution features of the embedding."""
        sparse, dense = self.model.sam_prompt_encoder(points=points, boxes=boxes, masks=masks)
        low_res, iou, _, _ = self.model.sam_mask_decoder(
            image_embeddings=features["image_embed"],
            image_pe=self.model.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            repeat_image=False,
            high_res_features=features["high_res_feats"],
        )
        return low_res, iou

    def postprocess(self, low_res, embedding: Embedding):
        """The decoder's ``S/4`` logits bilinearly resized to the slice."""
        import torch.nn.functional as F

        return F.interpolate(low_res.float(), size=embedding.original_size, mode="bilinear", align_corners=False)

    # -- 3D ----------------------------------------------------------------
    def propagate_memory(self, images, tracks, progress: bool = False, largest_component: bool | None = None,
                         stop_after=_DEFAULT) -> list[int]:
        """SAM2 memory propagation of ``tracks`` through ``images``; see :func:`promptseg.models.sam2_memory.track`.

        ``largest_component`` and ``stop_after`` default to the constructor's values.
        Fills each :class:`~promptseg.models.sam2_memory.Track`'s results; returns the
        slices encoded, in order.
        """
        from .sam2_memory import track

        return track(
            self.model, images, tracks, device=self.device, progress=progress,
            largest_component=self.largest_component if largest_component is None else largest_component,
            stop_after=self.stop_after if stop_after is _DEFAULT else stop_after,
        )

    # -- fine-tuning hooks (prepare_slice / prepare_mask / model_input: SAM2Preprocessing) --
    def train_forward(self, net, batch: dict, device):
        """Differentiable 2D forward of a batch through the training view.

        ``batch["image"]`` ``(B, 3, S, S)``; boxes / points in model-input pixels.
        Returns ``(logits (B, 1, S, S), predicted IoU (B, 1))``: the decoder's ``S/4``
        single-mask logits bilinearly up-sampled to the input grid.
        """
        import torch
        import torch.nn.functional as F

        from ..errors import ModelError

        if "embedding" in batch:
            raise ModelError("SAM2 backends do not train from cached embeddings (set train.cache_embeddings=false)")
        images = batch["image"].to(device)
        out = net.image_encoder(images)
        fpn = list(out["backbone_fpn"])
        decoder = net.mask_decoder
        if self.model.use_high_res_features_in_sam:
            fpn[0] = decoder.conv_s0(fpn[0])
            fpn[1] = decoder.conv_s1(fpn[1])
        levels = fpn[-self.model.num_feature_levels:]
        embed = levels[-1]
        if self.model.directly_add_no_mem_embed:
            embed = embed + net.memory.no_mem_embed.view(1, -1, 1, 1)
        points, boxes = batch_prompts(batch, device)
        batch_size = images.shape[0]
        coords = torch.zeros(batch_size, 0, 2, device=device)
        labels = torch.zeros(batch_size, 0, dtype=torch.int32, device=device)
        if boxes is not None:
            coords = boxes.reshape(batch_size, 2, 2)
            labels = torch.tensor([[2, 3]], dtype=torch.int32, device=device).repeat(batch_size, 1)
        if points is not None:
            coords = torch.cat([coords, points[0]], dim=1)
            labels = torch.cat([labels, points[1].to(torch.int32)], dim=1)
        sparse, dense = net.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        low_res, iou, _, _ = decoder(
            image_embeddings=embed,
            image_pe=net.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
            repeat_image=False,
            high_res_features=levels[:-1] if self.model.use_high_res_features_in_sam else None,
        )
        logits = F.interpolate(low_res.float(), size=images.shape[-2:], mode="bilinear", align_corners=False)
        return logits, iou


# ---------------------------------------------------------------------------
# registry
def _spec(variant: SAM2Variant):
    from .spec import ModelSpec

    return ModelSpec(
        name=variant.name,
        description=f"{variant.description}; 3D: chain or SAM2 memory propagation",
        input_size=variant.image_size,
        normalisation=(f"resized to {variant.image_size} x {variant.image_size} (aspect ratio not kept), "
                       "/255, ImageNet mean/std, grey repeated to 3 channels"),
        checkpoint=f"{variant.checkpoint_file} from {variant.source}",
        build=functools.partial(SAM2Segmenter, variant.name),
        needs_checkpoint=True,
        capabilities=CAPABILITIES,
        preprocessing=functools.partial(SAM2Preprocessing, variant.name),
    )


SPECS = {name: _spec(variant) for name, variant in VARIANTS.items()}
