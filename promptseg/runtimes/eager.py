"""PyTorch runtimes: eager (any device, any batch) and a frozen TorchScript trace (CPU, batch 1)."""

from __future__ import annotations

import contextlib
import copy
import warnings
from typing import Optional

import numpy as np
import torch

from .base import PerSliceRuntime, check_images, probe_input, torch_threads, verify


#: precision name -> autocast dtype
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: Optional[str]):
    """``torch.autocast`` on ``device`` for ``"bf16"`` / ``"fp16"``; a no-op context for None / ``"fp32"``."""
    if precision in (None, "fp32"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision])


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A numpy array as a tensor on ``device``; to CUDA through pinned memory without blocking the host."""
    tensor = torch.from_numpy(array)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


class TorchRuntime:
    """Eager PyTorch under ``torch.inference_mode()``; any batch ``(N, 3, S, S) -> (N, C, h, w)``.

    ``num_threads`` (CPU only) applies during each call, then torch's own setting returns.
    ``autocast`` (``"bf16"`` / ``"fp16"``) runs the encoder under ``torch.autocast``
    on its device; the output is float32 either way. Inputs go to CUDA through
    pinned memory.
    """

    name = "torch"
    precision = "fp32"
    precision_reason = ""

    def __init__(self, encoder: torch.nn.Module, input_size: int, device: torch.device, num_threads: Optional[int],
                 autocast: Optional[str] = None):
        self.encoder = encoder
        self.input_size = input_size
        self.device = device
        self.num_threads = num_threads if device.type == "cpu" else None
        self.autocast = autocast

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = check_images(images, self.input_size)
        with torch.inference_mode(), torch_threads(self.num_threads), autocast(self.device, self.autocast):
            out = self.encoder(to_device(images, self.device))
        return np.ascontiguousarray(out.float().cpu().numpy())

    def __repr__(self) -> str:
        under = f", autocast {self.autocast}" if self.autocast else ""
        return f"<encoder runtime torch on {self.device}{under} ({self.input_size} px)>"


def build_torch_jit(
    encoder: torch.nn.Module, input_size: int, device: torch.device, num_threads: Optional[int]
) -> PerSliceRuntime:
    """Trace (batch 1) and freeze the encoder; checked against eager on the probe.

    On CPU the trace runs on a channels-last copy of the encoder (the caller's
    module is left untouched), which the benchmarks measured faster than the
    default layout.
    """
    threads = num_threads if device.type == "cpu" else None
    layout = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    probe_in = probe_input(input_size)
    with torch.inference_mode(), torch_threads(threads):
        expected = encoder(torch.from_numpy(probe_in).to(device)).float().cpu().numpy()
    module = copy.deepcopy(encoder).to(memory_format=layout) if layout is torch.channels_last else encoder
    x = torch.from_numpy(probe_in).to(device).contiguous(memory_format=layout)
    with warnings.catch_warnings(), torch_threads(threads), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about shape-dependent Python code
        traced = torch.jit.freeze(torch.jit.trace(module.eval(), x, check_trace=False))

    def run_one(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), torch_threads(threads):
            inputs = torch.from_numpy(batch).to(device).contiguous(memory_format=layout)
            return traced(inputs).float().contiguous().cpu().numpy()

    verify("torch-jit", run_one, probe_in, expected)  # also the warm-up run
    return PerSliceRuntime("torch-jit", run_one, input_size)
