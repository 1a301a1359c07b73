"""SAM and MedSAM backends: the upstream ``segment_anything`` model code, 1024 px input.

Backends (``promptseg models`` lists them):

==============  ==================  ==============================================
name            upstream model      weights
==============  ==================  ==============================================
sam-vit-b       ``vit_b``           ``sam_vit_b_01ec64.pth`` (segment-anything)
sam-vit-l       ``vit_l``           ``sam_vit_l_0b3195.pth`` (segment-anything)
sam-vit-h       ``vit_h``           ``sam_vit_h_4b8939.pth`` (segment-anything)
medsam-vit-b    ``vit_b``           ``medsam_vit_b.pth`` (bowang-lab/MedSAM)
==============  ==================  ==============================================

The network is built by ``segment_anything`` without weights and the checkpoint
is loaded by promptseg's strict loader (:mod:`promptseg.models.checkpoint`):
plain state dicts as released, ``{"model": ...}`` / ``{"state_dict": ...}``
wrappers, ``module.`` and Lightning prefixes; any missing, unexpected or
mis-shaped key is an error naming it. ``segment_anything``'s own loader is never
used.

Each family keeps the pre-processing its weights were trained with:

SAM (``segment_anything.SamPredictor``)
    the uint8 RGB slice is resized so its longest side is 1024 px
    (``ResizeLongestSide``: new side ``int(side * 1024 / longest + 0.5)``,
    Pillow bilinear through torchvision), normalised per channel with
    ``(x - [123.675, 116.28, 103.53]) / [58.395, 57.12, 57.375]`` and zero-padded
    at the bottom and right to 1024 x 1024. Boxes and points are scaled by
    ``new_w / W`` and ``new_h / H``. The 256 x 256 mask logits are bilinearly
    up-sampled to 1024, cropped to the resized area and resized to the slice
    (``Sam.postprocess_masks``); ``> 0`` is inside.
MedSAM (``MedSAM_Inference.py``)
    the slice is resized to 1024 x 1024 whatever its aspect ratio (scikit-image
    ``resize(order=3, preserve_range=True, anti_aliasing=True)`` then ``uint8``,
    called as MedSAM calls it, see :func:`medsam_resize`), min-max scaled to
    [0, 1] over the resized image and fed to the image encoder as is -- no pixel
    mean / std, no padding. Boxes are scaled by ``1024 / W`` and ``1024 / H``. The
    sigmoid of the 256 x 256 logits is bilinearly resized to the slice and
    thresholded at 0.5; promptseg returns ``logit`` of that probability, so
    ``> 0`` gives exactly MedSAM's mask.

Prompts: a box, points, or both (MedSAM was trained with boxes only: points
work but are SAM's untuned point embeddings). A single point is ambiguous, so
the decoder then proposes three masks and the one with the best predicted IoU
is kept (``score``); every other prompt decodes one mask.

Chaining (:meth:`SamSegmenter.box_from_mask`): SAM was trained with boxes
perturbed by zero-mean noise around the tight box, so the tight box of the
previous mask is used as is; MedSAM's boxes were grown outwards by a random
0-20 px per side on its 1024 grid, so the tight box is grown by 10 px (the mean
of that jitter) on the 1024 grid. ``box_margin=`` overrides both.

This module stays cheap to import (``promptseg models`` reads :data:`SPECS`):
torch and ``segment_anything`` are imported inside the functions that need them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..device import resolve_device
from .base import Embedding
from .capabilities import Capability
from .sam_core import GridPreprocessing, SamFamilySegmenter, batch_features, batch_prompts

#: side of the square model input of every SAM / MedSAM variant, pixels
INPUT_SIZE = 1024
#: SAM's per-channel normalisation of uint8 RGB (``Sam.pixel_mean`` / ``pixel_std``)
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
#: the segment-anything README's download links
SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/{file}"
MEDSAM_URL = "https://drive.google.com/drive/folders/1ETWmi4AiniJeWOt6HAsYgTjYv_fkgzoN"


@dataclass(frozen=True)
class ViTSize:
    """Size of a SAM image encoder (``ImageEncoderViT``); everything else is fixed.

    Attributes:
        embed_dim: channels of the ViT tokens.
        depth: number of transformer blocks.
        num_heads: attention heads per block.
        global_attn_indexes: blocks with global (not 14 x 14 windowed) attention.
    """

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]


#: the upstream sizes (``segment_anything.build_sam``)
VIT_SIZES = {
    "vit_b": ViTSize(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": ViTSize(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": ViTSize(1280, 32, 16, (7, 15, 23, 31)),
}


@dataclass(frozen=True)
class Variant:
    """One registered backend of this family.

    Attributes:
        name: registry name.
        vit: ``segment_anything.sam_model_registry`` key (``vit_b`` / ``vit_l`` / ``vit_h``).
        normalisation: ``"sam"`` or ``"medsam"`` (see the module docstring).
        checkpoint_file: the released file name.
        source: where to get it.
        box_margin: default margin, in 1024-grid pixels, of :meth:`SamSegmenter.box_from_mask`.
        automatic: automatic mask generation is offered (see :mod:`promptseg.inference.automatic`).
        description: one line for ``promptseg models``.
    """

    name: str
    vit: str
    normalisation: str
    checkpoint_file: str
    source: str
    box_margin: float
    automatic: bool
    description: str

    @property
    def checkpoint_text(self) -> str:
        return f"{self.checkpoint_file} from {self.source}"


def _sam_variant(vit: str, file: str, size: str) -> Variant:
    return Variant(
        name=f"sam-{vit.replace('_', '-')}", vit=vit, normalisation="sam", checkpoint_file=file,
        source=f"{SAM_URL.format(file=file)} (segment-anything README, 'Model Checkpoints')",
        box_margin=0.0, automatic=True,
        description=f"Segment Anything {size} (Meta, natural images); boxes, points, automatic masks",
    )


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        _sam_variant("vit_b", "sam_vit_b_01ec64.pth", "ViT-B, 91M parameters"),
        _sam_variant("vit_l", "sam_vit_l_0b3195.pth", "ViT-L, 308M parameters"),
        _sam_variant("vit_h", "sam_vit_h_4b8939.pth", "ViT-H, 636M parameters"),
        Variant(
            name="medsam-vit-b", vit="vit_b", normalisation="medsam", checkpoint_file="medsam_vit_b.pth",
            source=f"the Google Drive folder linked in the MedSAM README (github.com/bowang-lab/MedSAM): {MEDSAM_URL}",
            box_margin=10.0, automatic=False,
            description="MedSAM (SAM ViT-B fine-tuned on 1.5M medical image-mask pairs); trained with box prompts",
        ),
    )
}

_NORMALISATION_TEXT = {
    "sam": "RGB, longest side to 1024 (bilinear), (x - mean) / std per channel "
    "(mean 123.675,116.28,103.53; std 58.395,57.12,57.375), pad bottom/right",
    "medsam": "resize to 1024 x 1024 (cubic spline, aspect ratio not kept), min-max to [0, 1], "
    "3 channels, no mean/std, no padding",
}


# ---------------------------------------------------------------------------
# network
def build_sam_network(vit: str | ViTSize = "vit_b"):
    """An upstream ``segment_anything.modeling.Sam`` with random weights, in eval mode.

    Args:
        vit: ``"vit_b"``, ``"vit_l"``, ``"vit_h"`` (the released sizes) or a
            :class:`ViTSize` -- e.g. a tiny encoder for tests. The prompt encoder,
            mask decoder and the 1024 px input are SAM's whatever the size, and the
            state-dict keys follow the same layout.
    """
    from segment_anything.build_sam import _build_sam

    size = VIT_SIZES[vit] if isinstance(vit, str) else vit
    return _build_sam(
        encoder_embed_dim=size.embed_dim,
        encoder_depth=size.depth,
        encoder_num_heads=size.num_heads,
        encoder_global_attn_indexes=list(size.global_attn_indexes),
        checkpoint=None,
    )


# ---------------------------------------------------------------------------
# MedSAM's resize
def medsam_resize(channel: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """One ``(H, W)`` uint8 channel -> ``(size, size)`` uint8, as MedSAM's inference resizes.

    Exactly MedSAM's call (``MedSAM_Inference.py``):
    ``skimage.transform.resize(img, (1024, 1024), order=3, preserve_range=True,
    anti_aliasing=True).astype(np.uint8)`` -- cubic spline, a Gaussian
    anti-aliasing pre-filter when down-sampling, values clipped to the input's
    range and truncated to ``uint8``; the aspect ratio is not kept.

    MedSAM resizes the ``(H, W, 3)`` image at once; scikit-image neither filters
    nor zooms along the channel axis (factor 1), so resizing each channel alone
    gives the same ``uint8`` values, and a grey slice (three equal channels) is
    resized once instead of three times.
    """
    from skimage.transform import resize

    if channel.ndim != 2:
        raise ValueError(f"expected one (H, W) channel, got shape {channel.shape}")
    return resize(channel, (size, size), order=3, preserve_range=True, anti_aliasing=True).astype(np.uint8)


# ---------------------------------------------------------------------------
class SamPreprocessing(GridPreprocessing):
    """How a slice, a mask and prompt coordinates reach the 1024 grid of a SAM or MedSAM
    variant -- everything that needs no weights (``promptseg prepare`` uses it alone).
    ``prepare_mask`` comes from :class:`~promptseg.models.sam_core.GridPreprocessing`.

    Args:
        variant: a key of :data:`VARIANTS`, or a :class:`Variant` of another family that
            shares SAM's 1024 px pipeline (MobileSAM).
    """

    input_size = INPUT_SIZE

    def __init__(self, variant: str | Variant = "sam-vit-b") -> None:
        from ..errors import ModelError

        if isinstance(variant, str):
            if variant not in VARIANTS:
                raise ModelError(f"unknown SAM variant {variant!r}; available: {', '.join(VARIANTS)}")
            variant = VARIANTS[variant]
        self.variant = variant
        self.name = variant.name
        self.normalisation = self.variant.normalisation

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` of a ``(height, width)`` slice inside the 1024 model input."""
        if self.normalisation == "medsam":
            return INPUT_SIZE, INPUT_SIZE
        scale = INPUT_SIZE / max(height, width)
        return int(height * scale + 0.5), int(width * scale + 0.5)

    def prepare_slice(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """Resize (and for SAM zero-pad bottom/right) a slice to the 1024 grid; stays uint8.

        Args:
            image: ``(H, W)`` or ``(H, W, 3)`` uint8 (intensity-normalised).

        Returns:
            ``(1024, 1024)`` or ``(1024, 1024, 3)`` uint8 and the resized ``(h, w)``
            (MedSAM: always ``(1024, 1024)``). A grey slice stays one channel (SAM's
            RGB input is that channel repeated). This is what
            :mod:`promptseg.training.prepare` stores.
        """
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
            raise ValueError(f"expected an (H, W) or (H, W, 3) slice, got shape {image.shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 slice (see promptseg.normalize), got {image.dtype}")
        if self.normalisation == "medsam":
            channels = [image] if image.ndim == 2 else [image[..., c] for c in range(3)]
            resized = np.stack([medsam_resize(np.ascontiguousarray(ch)) for ch in channels], axis=-1)
            return (resized[..., 0] if image.ndim == 2 else resized), (INPUT_SIZE, INPUT_SIZE)
        from segment_anything.utils.transforms import ResizeLongestSide

        resized = ResizeLongestSide(INPUT_SIZE).apply_image(np.ascontiguousarray(image))
        new_h, new_w = resized.shape[:2]
        if (new_h, new_w) != self.resized_size(*image.shape[:2]):  # pragma: no cover - same formula upstream
            raise RuntimeError(f"resize gave {(new_h, new_w)}")
        padded = np.zeros((INPUT_SIZE, INPUT_SIZE) + image.shape[2:], dtype=np.uint8)
        padded[:new_h, :new_w] = resized
        return padded, (new_h, new_w)

    def model_input(self, padded: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Prepared uint8 slice -> ``(3, 1024, 1024)`` float32 encoder input.

        SAM: ``(x - mean) / std`` per RGB channel on the resized ``(h, w)`` area, 0 in
        the padding (SAM pads after normalising). MedSAM: ``(x - min) / max(max - min,
        1e-8)`` over the whole 1024 x 1024 x 3 image, computed in float64 as MedSAM does.
        """
        new_h, new_w = size
        area = padded[:new_h, :new_w]
        if area.ndim == 2:
            area = np.repeat(area[..., None], 3, axis=-1)
        if self.normalisation == "medsam":
            low, high = area.min(), area.max()
            scaled = (area - low) / np.clip(high - low, 1e-8, None)
            return np.ascontiguousarray(np.moveaxis(scaled, -1, 0), dtype=np.float32)
        mean = np.asarray(SAM_PIXEL_MEAN, dtype=np.float32)
        std = np.asarray(SAM_PIXEL_STD, dtype=np.float32)
        out = np.zeros((3, INPUT_SIZE, INPUT_SIZE), dtype=np.float32)
        out[:, :new_h, :new_w] = np.moveaxis((area.astype(np.float32) - mean) / std, -1, 0)
        return out

    def transform_coords(self, coords: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """Slice pixels ``(..., 2)`` of ``(x, y)`` -> 1024-grid pixels (float64).

        SAM: ``x * new_w / W``, ``y * new_h / H`` (``ResizeLongestSide.apply_coords``);
        MedSAM: ``x / W * 1024``, ``y / H * 1024`` (``MedSAM_Inference.py``).
        """
        height, width = original_size
        coords = np.array(coords, dtype=np.float64)
        if self.normalisation == "medsam":
            return coords / np.array([width, height], dtype=np.float64) * INPUT_SIZE
        from segment_anything.utils.transforms import ResizeLongestSide

        return ResizeLongestSide(INPUT_SIZE).apply_coords(coords, original_size)


# ---------------------------------------------------------------------------
class SamSegmenter(SamPreprocessing, SamFamilySegmenter):
    """SAM or MedSAM (upstream ``segment_anything`` code) as a :class:`~promptseg.models.base.Segmenter`.

    The decode recipe is :class:`~promptseg.models.sam_core.SamFamilySegmenter`'s (as
    ``SamPredictor.predict``: single-mask output, three masks for a lone point); this
    class states what differs: the 1024 grid (:meth:`transform_coords`), the
    up-sampling (:meth:`postprocess`), the chaining margin and the training forward.

    Args:
        checkpoint: weights file (required: no weights are bundled).
        variant: a key of :data:`VARIANTS` (``"sam-vit-b"``, ..., ``"medsam-vit-b"``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``.
        runtime: image-encoder runtime, see :mod:`promptseg.runtimes`.
            ``"auto"`` (default) is eager torch: measured on ViT-B at 1024 px, the
            exported runtimes are not worth their export (see docs/models.md).
        vit: encoder size override (a :class:`ViTSize`), for small test models;
            default the variant's upstream size.
        box_margin: margin, in 1024-grid pixels, that :meth:`box_from_mask` adds
            per side; default the variant's (SAM 0, MedSAM 10).

    Attributes:
        net: the upstream ``Sam`` module (``image_encoder`` / ``prompt_encoder`` /
            ``mask_decoder``), in eval mode.
        weights_digest: first 16 hex digits of the checkpoint file's SHA-256.
    """

    def __init__(
        self,
        checkpoint: str | Path,
        variant: str | Variant = "sam-vit-b",
        device: str = "cpu",
        runtime: str = "auto",
        vit: ViTSize | None = None,
        box_margin: float | None = None,
    ) -> None:
        from ..errors import CheckpointError, ModelError
        from .checkpoint import load_weights

        super().__init__(variant)
        if checkpoint is None:
            raise CheckpointError(f"model {self.name} needs weights: --checkpoint FILE ({self.variant.checkpoint_text})")
        self.checkpoint = Path(checkpoint)
        if not self.checkpoint.is_file():
            raise CheckpointError(f"checkpoint not found: {self.checkpoint} ({self.name} expects {self.variant.checkpoint_text})")
        self.device = resolve_device(device)
        self.box_margin = float(self.variant.box_margin if box_margin is None else box_margin)
        self.box_trained = self.normalisation == "medsam"
        self.capabilities = variant_capabilities(self.variant)
        self.net = self.build_network(vit)
        self.weights_digest = load_weights(self.net, self.checkpoint)
        self.net.eval().to(self.device)
        if int(self.net.image_encoder.img_size) != INPUT_SIZE:  # pragma: no cover - fixed upstream
            raise ModelError(f"{self.name}: expected a {INPUT_SIZE} px encoder")
        self.runtime_kind = runtime

    def build_network(self, vit: ViTSize | None = None):
        """The upstream ``Sam`` module with random weights (the checkpoint is loaded after);
        a family with another image encoder on SAM's prompt encoder and decoder overrides this."""
        return build_sam_network(vit if vit is not None else self.variant.vit)

    # -- encoder --------------------------------------------------------------
    @functools.cached_property
    def encoder(self):
        """Callable ``(N, 3, 1024, 1024) float32 -> (N, 256, 64, 64) float32`` (numpy), built on first use."""
        from ..runtimes import build_encoder_runtime

        kind = "torch" if self.runtime_kind == "auto" else self.runtime_kind
        return build_encoder_runtime(
            self.net.image_encoder, input_size=INPUT_SIZE, kind=kind,
            cache_key=f"{self.name}-{self.weights_digest}-{INPUT_SIZE}", device=self.device,
        )

    def embed(self, image: np.ndarray) -> Embedding:
        """Encode one slice: ``(H, W)`` / ``(H, W, 3)`` uint8 -> features ``(1, 256, 64, 64)``."""
        import torch

        padded, size = self.prepare_slice(image)
        batch = self.model_input(padded, size)[None]
        features = torch.from_numpy(np.ascontiguousarray(self.encoder(batch))).to(self.device)
        return Embedding(features=features, original_size=tuple(int(v) for v in image.shape[:2]), input_size=size)

    # -- decoder hooks --------------------------------------------------------
    def to_model_coords(self, xy: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """Slice pixels -> 1024-grid pixels: :meth:`transform_coords`."""
        return self.transform_coords(xy, original_size)

    def postprocess(self, low_res, embedding: Embedding):
        """Decoder logits ``(B, C, 256, 256)`` -> ``(B, C, H, W)`` float32 logits on the slice.

        SAM: ``Sam.postprocess_masks`` (up-sample to 1024, crop the resized area,
        resize to the slice). MedSAM: ``logit(resize(sigmoid(low_res)))``, so
        ``> 0`` is exactly MedSAM's ``probability > 0.5`` (probabilities clipped to
        ``[1e-12, 1 - 1e-12]``, i.e. logits within +-27.6).
        """
        import torch
        import torch.nn.functional as F

        if self.normalisation == "medsam":
            prob = F.interpolate(torch.sigmoid(low_res), size=embedding.original_size, mode="bilinear", align_corners=False)
            prob = prob.double().clamp(1e-12, 1 - 1e-12)
            return (torch.log(prob) - torch.log1p(-prob)).float()
        return self.net.postprocess_masks(low_res, embedding.input_size, embedding.original_size)

    # -- fine-tuning ----------------------------------------------------------
    def train_forward(self, net, batch: dict, device):
        """Differentiable forward of a training batch on the 1024 grid.

        ``segment_anything``'s mask decoder pairs one image with all prompts given
        (it repeats the image embedding per prompt), so the batch is decoded
        sample by sample: image ``i`` with prompt ``i``. Single-mask output.

        Args:
            net: the ``Sam`` being trained (``self.net`` or a LoRA-injected copy).
            batch: ``"image"`` ``(B, 3, 1024, 1024)`` (see :meth:`model_input`) or
                ``"embedding"`` ``(B, 256, 64, 64)``; ``"box"`` ``(B, 4)`` in 1024-grid
                pixels (NaN: no box); ``"points"`` ``(B, P, 2)``, ``"point_labels"`` ``(B, P)``.

        Returns:
            ``(logits (B, 1, 1024, 1024), predicted IoU (B, 1))``: the 256 px decoder
            logits bilinearly up-sampled to the model input, as MedSAM trains.
        """
        import torch
        import torch.nn.functional as F

        features = batch_features(net, batch, device)
        points, boxes = batch_prompts(batch, device)
        image_pe = net.prompt_encoder.get_dense_pe()
        low_res, ious = [], []
        for i in range(features.shape[0]):
            sparse, dense = net.prompt_encoder(
                points=None if points is None else (points[0][i : i + 1], points[1][i : i + 1]),
                boxes=None if boxes is None else boxes[i : i + 1, None, :],
                masks=None,
            )
            low, iou = net.mask_decoder(
                image_embeddings=features[i : i + 1], image_pe=image_pe,
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False,
            )
            low_res.append(low)
            ious.append(iou)
        logits = F.interpolate(torch.cat(low_res), size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return logits, torch.cat(ious)

    def describe(self) -> str:
        return f"{self.name} ({self.checkpoint.name}, sha256 {self.weights_digest}, {self.device})"


def variant_capabilities(variant: Variant) -> frozenset[Capability]:
    """Fine-tuning (also from cached embeddings) for every variant; automatic masks where the
    weights were trained for point prompts with three-mask output (SAM, not MedSAM)."""
    caps = {Capability.FINE_TUNING, Capability.CACHED_EMBEDDINGS}
    if variant.automatic:
        caps.add(Capability.AUTOMATIC_MASKS)
    return frozenset(caps)


# ---------------------------------------------------------------------------
# registry
def _spec(variant: Variant):
    from .spec import ModelSpec

    return ModelSpec(
        name=variant.name,
        description=variant.description,
        input_size=INPUT_SIZE,
        normalisation=_NORMALISATION_TEXT[variant.normalisation],
        checkpoint=variant.checkpoint_text,
        build=functools.partial(SamSegmenter, variant=variant.name),
        needs_checkpoint=True,
        capabilities=variant_capabilities(variant),
        preprocessing=functools.partial(SamPreprocessing, variant.name),
    )


SPECS = {name: _spec(v) for name, v in VARIANTS.items()}
