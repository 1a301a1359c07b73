"""The box-prompt decoder in a fast runtime: prompt encoder + mask decoder + up-sampling to the slice.

A re-prompt on an already embedded slice (a viewer dragging a box, each step of
3D chaining) runs only this part. :class:`BoxDecoderGraph` wraps a SAM-style
``prompt_encoder`` / ``mask_decoder`` pair into one graph

``(features (1, C, h, w) f32, box (1, 4) f32 on the model grid, crop (2,) i64 = (h', w'),
size (2,) i64 = (H, W)) -> (logits (1, 1, H, W) f32, iou (1, 1) f32)``

-- single-mask output, the low-resolution logits cropped to the resized slice
area ``[:h', :w']`` and bilinearly up-sampled (``align_corners=False``) to the
slice's ``H x W`` -- exported once to ONNX (dynamic crop and slice size) and
compiled by OpenVINO in fp32 with its model cache. Prompts with points keep the
eager path (they are rare: LiteMedSAM was trained on boxes).
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..io.atomic import atomic_path
from .onnx_export import CACHE_FORMAT, ONNX_OPSET

logger = logging.getLogger(__name__)

INPUT_NAMES = ["features", "box", "crop", "size"]
OUTPUT_NAMES = ["logits", "iou"]


class BoxDecoderGraph(torch.nn.Module):
    """``prompt_encoder`` + ``mask_decoder`` + crop + up-sampling as one module (see the module docstring)."""

    def __init__(self, prompt_encoder: torch.nn.Module, mask_decoder: torch.nn.Module) -> None:
        super().__init__()
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    def forward(self, features, box, crop, size):
        sparse, dense = self.prompt_encoder(points=None, boxes=box[:, None, :], masks=None)
        low_res, iou = self.mask_decoder(
            image_embeddings=features,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        cropped = low_res[:, :, : crop[0], : crop[1]]
        logits = F.interpolate(cropped, size=(size[0], size[1]), mode="bilinear", align_corners=False)
        return logits, iou


def decode_eager(graph: BoxDecoderGraph, features: torch.Tensor, box: np.ndarray, crop, size) -> tuple[np.ndarray, float]:
    """The graph in eager PyTorch: ``(H, W)`` float32 logits and the predicted IoU."""
    with torch.inference_mode():
        logits, iou = graph(features, torch.as_tensor(box, dtype=torch.float32).view(1, 4),
                            torch.as_tensor(crop), torch.as_tensor(size))
    return logits[0, 0].float().cpu().numpy(), float(iou[0, 0])


def export_decoder(graph: BoxDecoderGraph, feature_shape: tuple[int, ...], path: Path) -> None:
    """Export ``graph`` to the ONNX file ``path`` (TorchScript-based exporter, crop and size dynamic)."""
    features = torch.zeros(feature_shape, dtype=torch.float32)
    box = torch.tensor([[10.0, 10.0, 100.0, 100.0]])
    crop = torch.tensor([200, 256], dtype=torch.int64)
    size = torch.tensor([300, 384], dtype=torch.int64)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph.eval(), (features, box, crop, size), str(path), dynamo=False, opset_version=ONNX_OPSET,
            input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
            dynamic_axes={"logits": {2: "height", 3: "width"}}, do_constant_folding=True,
        )


class ExportedBoxDecoder:
    """The exported box decoder on OpenVINO: ``decoder(features, box, crop, size) -> ((H, W) logits, iou)``.

    ``features`` is ``(1, C, h, w)`` float32 (numpy or a CPU tensor), ``box`` the
    ``(x0, y0, x1, y1)`` on the model grid, ``crop`` ``(h', w')`` and ``size``
    ``(H, W)`` pixels. Built by :func:`build_box_decoder`.
    """

    name = "openvino"

    def __init__(self, compiled) -> None:
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()

    def __call__(self, features, box, crop, size) -> tuple[np.ndarray, float]:
        if isinstance(features, torch.Tensor):
            features = features.detach().cpu().numpy()
        inputs = {
            0: np.ascontiguousarray(features, dtype=np.float32),
            1: np.asarray(box, dtype=np.float32).reshape(1, 4),
            2: np.asarray(crop, dtype=np.int64).reshape(2),
            3: np.asarray(size, dtype=np.int64).reshape(2),
        }
        with self._lock:
            self._request.infer(inputs)
            logits = self._request.get_output_tensor(0).data[0, 0].copy()
            iou = float(self._request.get_output_tensor(1).data.reshape(-1)[0])
        return logits, iou


def _graph(net) -> BoxDecoderGraph:
    from .onnx_export import resolve_module

    module = resolve_module(net)
    return BoxDecoderGraph(module.prompt_encoder, module.mask_decoder).eval()


def _stem(cache_key: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", cache_key)[:80]
    full = f"{cache_key}|decoder|opset{ONNX_OPSET}|format{CACHE_FORMAT}"
    return f"decoder-{readable}-{hashlib.sha256(full.encode()).hexdigest()[:12]}"


def build_box_decoder(
    net,
    feature_shape: tuple[int, ...],
    cache_key: Optional[str] = None,
    cache_dir: Optional[Path] = None,
    num_threads: Optional[int] = None,
) -> ExportedBoxDecoder:
    """Export (once per ``cache_key``) and compile the box decoder; fp32 on OpenVINO's CPU plugin.

    Args:
        net: a SAM-style module with ``prompt_encoder`` and ``mask_decoder`` (eval mode,
            CPU), or a zero-argument function returning it, called only when the
            decoder must be exported (a warm start never builds the network).
        feature_shape: the encoder output shape, e.g. ``(1, 256, 64, 64)``.
        cache_key: names the cached ONNX file in ``cache_dir`` (a digest of the weights);
            None: export to a temporary folder.
        cache_dir: default :func:`~promptseg.runtimes.onnx_export.default_cache_dir`.
        num_threads: CPU threads (default all available cores).

    Raises:
        ImportError: OpenVINO or onnx is not installed; RuntimeError: export or compile failed.
    """
    from . import openvino_backend
    from .base import default_num_threads
    from .onnx_export import default_cache_dir

    threads = num_threads or default_num_threads()
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    config = openvino_backend.compile_config(threads, "fp32", folder / "openvino" / "fp32" if cache_key else None)
    with tempfile.TemporaryDirectory(prefix="promptseg-decoder-") as tmp:
        if cache_key is not None:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{_stem(cache_key)}.onnx"
            if not path.exists():
                start = time.perf_counter()
                with atomic_path(path) as staged:
                    export_decoder(_graph(net), feature_shape, staged)
                logger.info("exported the box decoder to ONNX in %.1f s (%s)", time.perf_counter() - start, path)
        else:
            path = Path(tmp) / "decoder.onnx"
            export_decoder(_graph(net), feature_shape, path)
        compiled = openvino_backend.core().compile_model(str(path), "CPU", config)
    return ExportedBoxDecoder(compiled)
