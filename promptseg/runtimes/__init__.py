"""Runtimes for the image encoder, the one expensive step of a slice.

:func:`build_encoder_runtime` wraps an encoder ``nn.Module`` into a callable
``(N, 3, S, S) float32 -> (N, C, h, w) float32`` (numpy in, numpy out) on one of:

``"openvino"``
    the encoder exported to ONNX (:mod:`.onnx_export`), compiled by OpenVINO's CPU
    plugin (:mod:`.openvino_backend`) in fp32, bf16, or int8 from an NNCF-quantised
    copy (:mod:`.quantize`); compiled models are cached on disk.
``"onnxruntime"``
    the same ONNX file on ONNX Runtime's CPU execution provider (:mod:`.onnxruntime_backend`).
``"torch-jit"``
    ``torch.jit.trace`` + ``torch.jit.freeze`` of a channels-last copy (:mod:`.eager`).
``"torch"``
    plain eager PyTorch under ``torch.inference_mode()`` (:mod:`.eager`); always
    available, and what ``"auto"`` uses on CUDA and any non-CPU device.

``"auto"`` on CPU tries them in the order of :data:`CPU_AUTO_ORDER` and falls back
to the next one, with a one-line warning, when a package is missing or an export,
compile or check fails. Every fp32 runtime is checked against eager PyTorch on a
fixed probe (:mod:`.base`); a reduced precision (``precision=``, :mod:`.precision`)
is checked instead by the masks it gives on real slices (:mod:`.real_slices`),
and ``precision="auto"`` uses one only where the CPU runs it natively
(:mod:`.cpu`). Measured speeds: ``docs/benchmarks.md`` (``make bench``); the
choices: ``docs/speed.md``.
"""

from .base import VERIFY_TOLERANCE, EncoderRuntime, default_num_threads
from .build import CPU_AUTO_ORDER, KINDS, SUPPORTED_PRECISIONS, available_runtimes, build_encoder_runtime
from .onnx_export import default_cache_dir
from .precision import GATE_MIN_MEAN_DICE, PRECISIONS, RealSliceCheck

__all__ = [
    "CPU_AUTO_ORDER",
    "GATE_MIN_MEAN_DICE",
    "KINDS",
    "PRECISIONS",
    "SUPPORTED_PRECISIONS",
    "RealSliceCheck",
    "VERIFY_TOLERANCE",
    "EncoderRuntime",
    "available_runtimes",
    "build_encoder_runtime",
    "default_cache_dir",
    "default_num_threads",
]
