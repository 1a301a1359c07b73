"""SAM's mask decoder on ONNX Runtime: the per-prompt cost of an interactive re-prompt.

A prompt on an already encoded slice runs only the prompt encoder (cheap) and the
mask decoder; on a CPU, eager PyTorch spends most of that time in the decoder's
two-way transformer. :func:`build_mask_decoder_runtime` exports
``MaskDecoder.predict_masks`` -- every mask token, so the caller chooses single or
multi-mask output as SAM's ``forward`` does -- with a dynamic number of prompt
tokens, checks it against eager PyTorch on a probe, and otherwise keeps eager
PyTorch (with a warning). Measured on the shared 2-core test host (Intel Xeon, interleaved runs,
box prompt on the bundled CT): eager PyTorch 4.5x slower than ONNX Runtime, which agrees with
it to 3e-5 in the logits. OpenVINO is not used: in float32 it was no faster than ONNX Runtime
(166 vs 146 ms); its default on that CPU, bfloat16, took 58 ms but moved logits by up to 0.67,
which changes masks at their border -- a precision choice to make with a mask-agreement check.
"""

from __future__ import annotations

import io
import logging
import warnings
from typing import Callable, Optional

import numpy as np
import torch

from .base import default_num_threads, one_line
from .build import try_import

logger = logging.getLogger(__name__)

#: decoder runtimes :func:`build_mask_decoder_runtime` accepts
KINDS = ("auto", "onnxruntime", "torch")
#: largest |logit| difference to eager PyTorch accepted on the probe
TOLERANCE = 1e-2

MaskDecoderRun = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class _AllMasks(torch.nn.Module):
    def __init__(self, mask_decoder: torch.nn.Module, image_pe: torch.Tensor) -> None:
        super().__init__()
        self.mask_decoder = mask_decoder
        self.register_buffer("image_pe", image_pe)

    def forward(self, image_embeddings, sparse, dense):
        return self.mask_decoder.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=self.image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
        )


def build_mask_decoder_runtime(
    mask_decoder: torch.nn.Module,
    image_pe: torch.Tensor,
    kind: str = "auto",
    num_threads: Optional[int] = None,
) -> tuple[str, MaskDecoderRun]:
    """``(name, run)`` with ``run(image_embeddings, sparse, dense) -> (masks, iou)`` for every mask token.

    Args:
        mask_decoder: a SAM ``MaskDecoder`` in eval mode, on the CPU for ``"onnxruntime"``.
        image_pe: the prompt encoder's dense positional encoding ``(1, C, h, w)`` (constant).
        kind: ``"torch"``, ``"onnxruntime"`` or ``"auto"`` (ONNX Runtime when it builds and
            passes the probe, else torch).
        num_threads: CPU threads for ONNX Runtime (default: every available core).

    Shapes: ``image_embeddings`` and ``dense`` ``(1, C, h, w)``, ``sparse`` ``(1, K, C)`` for
    any ``K``; returns ``masks`` ``(1, T, 4h, 4w)`` and ``iou`` ``(1, T)``, ``T`` mask tokens.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown mask-decoder runtime {kind!r}; choose one of {', '.join(KINDS)}")
    wrapper = _AllMasks(mask_decoder, image_pe.detach()).eval()

    def eager(image_embeddings, sparse, dense):
        with torch.inference_mode():
            return wrapper(image_embeddings, sparse, dense)

    if kind == "torch":
        return "torch", eager
    try:
        return "onnxruntime", _onnxruntime(wrapper, image_pe, num_threads or default_num_threads(), eager)
    except Exception as error:
        if kind == "onnxruntime":
            raise
        logger.warning("mask-decoder runtime 'onnxruntime' unavailable (%s); using torch", one_line(error))
        return "torch", eager


def _probe(image_pe: torch.Tensor, tokens: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(tokens)
    channels = image_pe.shape[1]
    shape = tuple(image_pe.shape)
    return (
        torch.randn(shape, generator=generator) * 0.5,
        torch.randn((1, tokens, channels), generator=generator),
        torch.randn(shape, generator=generator) * 0.1,
    )


def _onnxruntime(wrapper: torch.nn.Module, image_pe: torch.Tensor, threads: int, eager) -> MaskDecoderRun:
    ort = try_import("onnxruntime")
    if ort is None or try_import("onnx") is None:
        raise RuntimeError("needs the onnx and onnxruntime packages")
    example = _probe(image_pe, 3)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
        torch.onnx.export(
            wrapper, example, buffer, input_names=["image_embeddings", "sparse", "dense"],
            output_names=["masks", "iou"], dynamic_axes={"sparse": {1: "tokens"}}, opset_version=17, dynamo=False,
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])

    def run(image_embeddings, sparse, dense):
        masks, iou = session.run(None, {
            "image_embeddings": np.ascontiguousarray(image_embeddings.detach().cpu().numpy(), dtype=np.float32),
            "sparse": np.ascontiguousarray(sparse.detach().cpu().numpy(), dtype=np.float32),
            "dense": np.ascontiguousarray(dense.detach().cpu().numpy(), dtype=np.float32),
        })
        return torch.from_numpy(masks), torch.from_numpy(iou)

    for tokens in (2, 3, 5):  # the number of prompt tokens varies: box (2), box + points, points + padding
        inputs = _probe(image_pe, tokens)
        expected, got = eager(*inputs), run(*inputs)
        difference = max(float((e - g).abs().max()) for e, g in zip(expected, got))
        if not difference <= TOLERANCE:
            raise RuntimeError(f"differs from eager PyTorch by {difference:.3g} with {tokens} prompt tokens")
    return run
