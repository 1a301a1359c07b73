"""Runtimes for the image encoder, the one expensive step of a slice.

:func:`build_encoder_runtime` wraps an encoder ``nn.Module`` into a callable
``(N, 3, S, S) float32 -> (N, C, h, w) float32`` (numpy in, numpy out) on one of:

``"openvino"``
    the encoder exported to ONNX (:mod:`.onnx_export`), compiled by OpenVINO's CPU
    plugin in fp32 (:mod:`.openvino_backend`).
``"onnxruntime"``
    the same ONNX file on ONNX Runtime's CPU execution provider (:mod:`.onnxruntime_backend`).
``"torch-jit"``
    ``torch.jit.trace`` + ``torch.jit.freeze`` of a channels-last copy (:mod:`.eager`).
``"torch"``
    plain eager PyTorch under ``torch.inference_mode()`` (:mod:`.eager`); always
    available, and what ``"auto"`` uses on CUDA and any non-CPU device.

``"auto"`` on CPU tries them in the order of :data:`CPU_AUTO_ORDER` and falls back
to the next one, with a one-line warning, when a package is missing or an export,
compile or check fails. Every built runtime is checked against eager PyTorch on a
fixed probe (:mod:`.base`). Measured speeds: ``docs/benchmarks.md`` (``make bench``).
"""

from .base import VERIFY_TOLERANCE, EncoderRuntime, default_num_threads
from .build import CPU_AUTO_ORDER, KINDS, available_runtimes, build_encoder_runtime
from .onnx_export import default_cache_dir

__all__ = [
    "CPU_AUTO_ORDER",
    "KINDS",
    "VERIFY_TOLERANCE",
    "EncoderRuntime",
    "available_runtimes",
    "build_encoder_runtime",
    "default_cache_dir",
    "default_num_threads",
]
