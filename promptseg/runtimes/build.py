"""Choose and build an encoder runtime: :func:`build_encoder_runtime`."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ..errors import ModelError
from . import eager, onnx_export, onnxruntime_backend, openvino_backend
from .base import EncoderRuntime, PerSliceRuntime, default_num_threads, one_line, verify

logger = logging.getLogger(__name__)

#: every runtime name :func:`build_encoder_runtime` accepts, besides ``"auto"``
KINDS = ("openvino", "onnxruntime", "torch-jit", "torch")
#: the order ``"auto"`` tries on CPU: fastest measured first (docs/benchmarks.md)
CPU_AUTO_ORDER = ("openvino", "onnxruntime", "torch-jit", "torch")

#: exported runtimes: ``load(onnx_path, num_threads) -> run_one``
LOADERS: dict[str, Callable[[Path, int], Callable[[np.ndarray], np.ndarray]]] = {
    "onnxruntime": onnxruntime_backend.load,
    "openvino": openvino_backend.load,
}


def try_import(module: str):
    """The imported module, or None when it is missing or broken (tests patch this)."""
    try:
        return importlib.import_module(module)
    except Exception:  # ImportError, or a binary wheel failing to load
        return None


def missing_packages(kind: str) -> list[str]:
    """Packages runtime ``kind`` needs that do not import here (the ONNX export needs ``onnx`` too)."""
    needed = {"openvino": ["onnx", "openvino"], "onnxruntime": ["onnx", "onnxruntime"]}.get(kind, [])
    return [name for name in needed if try_import(name) is None]


def available_runtimes() -> list[str]:
    """Runtimes whose packages import here, in the CPU preference order of ``"auto"``.

    ``"torch-jit"`` and ``"torch"`` are always listed. Being listed does not
    promise that the export / compile will succeed; ``"auto"`` falls back if not.
    """
    return [kind for kind in CPU_AUTO_ORDER if not missing_packages(kind)]


def _build_exported(kind: str, artefact: onnx_export.OnnxArtefact, input_size: int, num_threads: int) -> PerSliceRuntime:
    missing = missing_packages(kind)
    if missing:
        raise ModelError(
            f"encoder runtime {kind!r} needs the package(s) {', '.join(missing)} (pip install {' '.join(missing)})"
        )
    onnx_path, probe_in, expected = artefact.get()
    run_one = LOADERS[kind](onnx_path, num_threads)
    verify(kind, run_one, probe_in, expected)  # also the warm-up run
    return PerSliceRuntime(kind, run_one, input_size)


def build_encoder_runtime(
    encoder: torch.nn.Module,
    input_size: int,
    kind: str = "auto",
    cache_key: Optional[str] = None,
    cache_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    num_threads: Optional[int] = None,
) -> EncoderRuntime:
    """Wrap ``encoder`` (input ``(N, 3, input_size, input_size)``) into a fast runtime.

    Args:
        encoder: the image encoder in eval mode, on ``device``; maps
            ``(N, 3, S, S)`` float32 to ``(N, C, h, w)``.
        input_size: ``S``, the square input side the encoder expects.
        kind: ``"auto"`` or one of :data:`KINDS`. ``"auto"`` picks plain torch on
            non-CPU devices and, on CPU, the first of :data:`CPU_AUTO_ORDER` that
            builds and passes the probe check (warning once per skipped runtime).
        cache_key: names the exported ONNX file in ``cache_dir`` so later builds
            skip the export; pass a digest of the weights and the input size.
            ``None``: export to a temporary folder, no caching.
        cache_dir: folder for cached exports (default
            :func:`~promptseg.runtimes.onnx_export.default_cache_dir`).
        device: where ``encoder`` lives; the ONNX runtimes need ``"cpu"``.
        num_threads: CPU threads (default: every available core for ONNX
            Runtime / OpenVINO, torch's own setting for the torch runtimes).

    Returns:
        an :class:`~promptseg.runtimes.base.EncoderRuntime`: ``runtime(images)`` with
        ``images`` ``(N, 3, S, S)`` float32 returns ``(N, C, h, w)`` float32 (numpy).

    Raises:
        ModelError: unknown ``kind``, or a named runtime that cannot be built here.
    """
    if kind != "auto" and kind not in KINDS:
        raise ModelError(f"unknown encoder runtime {kind!r}; choose 'auto' or one of {', '.join(KINDS)}")
    if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
        raise ModelError(f"num_threads must be a positive integer, got {num_threads!r}")
    device = torch.device(device)
    if kind in LOADERS and device.type != "cpu":
        raise ModelError(f"encoder runtime {kind!r} runs on CPU only; use 'torch' or 'auto' on {device}")
    if kind == "auto":
        order = CPU_AUTO_ORDER if device.type == "cpu" else ("torch",)
    else:
        order = (kind,)

    threads = num_threads if num_threads is not None else default_num_threads()
    folder = Path(cache_dir).expanduser() if cache_dir is not None else onnx_export.default_cache_dir()
    artefact = onnx_export.OnnxArtefact(encoder, input_size, cache_key, folder)
    try:
        for position, candidate in enumerate(order):
            try:
                if candidate == "torch":
                    return eager.TorchRuntime(encoder, input_size, device, num_threads)
                if candidate == "torch-jit":
                    return eager.build_torch_jit(encoder, input_size, device, num_threads)
                return _build_exported(candidate, artefact, input_size, threads)
            except Exception as exc:
                if kind != "auto":
                    if isinstance(exc, ModelError):
                        raise
                    raise ModelError(f"encoder runtime {candidate!r} could not be built: {one_line(exc)}") from exc
                following = order[position + 1] if position + 1 < len(order) else None
                logger.warning("encoder runtime %r unavailable (%s); trying %r", candidate, one_line(exc), following)
        raise ModelError("no encoder runtime could be built")  # pragma: no cover - "torch" cannot fail
    finally:
        artefact.close()
