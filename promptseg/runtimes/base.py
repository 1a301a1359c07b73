"""What every encoder runtime shares: the call contract, threads, and the check against eager PyTorch."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import TYPE_CHECKING, Callable, Optional, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # torch is imported by the torch runtimes and exports only, never by a cached OpenVINO start
    import torch

logger = logging.getLogger(__name__)

#: largest accepted ``max|runtime - eager| / max(1, max|eager|)`` on the probe
VERIFY_TOLERANCE = 1e-3
_PROBE_SEED = 20240521


@runtime_checkable
class EncoderRuntime(Protocol):
    """An image encoder ready to run.

    ``name`` is the runtime used (one of :data:`promptseg.runtimes.KINDS`). Calling it
    maps ``images`` ``(N, 3, S, S)`` float32 to features ``(N, C, h, w)`` float32
    (LiteMedSAM: ``S = 256``, ``(C, h, w) = (256, 64, 64)``), numpy in and out.
    """

    name: str

    def __call__(self, images: np.ndarray) -> np.ndarray: ...


def default_num_threads() -> int:
    """Cores this process may run on (CPU affinity if known, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_images(images: np.ndarray, input_size: Optional[int]) -> np.ndarray:
    """Validate ``(N, 3, S, S)`` and return it as C-contiguous float32."""
    if not isinstance(images, np.ndarray):
        raise TypeError(f"images must be a numpy array, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[0] < 1 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (N>=1, 3, H, W), got {images.shape}")
    if input_size is not None and images.shape[2:] != (input_size, input_size):
        raise ValueError(
            f"images must be {input_size}x{input_size} for this encoder, got {images.shape[2]}x{images.shape[3]}"
        )
    return np.ascontiguousarray(images, dtype=np.float32)


class PerSliceRuntime:
    """A batch-1 engine run slice by slice: ``(N, 3, S, S) -> (N, C, h, w)``.

    The exported and traced graphs have the batch size baked in (TinyViT's
    ``PatchMerging`` takes ``len(x)``), so they are built for batch 1.
    """

    #: the numeric precision it runs (set by the builder) and why it was chosen
    precision = "fp32"
    precision_reason = ""

    def __init__(self, name: str, run_one: Callable[[np.ndarray], np.ndarray], input_size: int) -> None:
        self.name = name
        self.input_size = input_size
        self._run_one = run_one

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = check_images(images, self.input_size)
        outputs = [self._run_one(images[i : i + 1]) for i in range(images.shape[0])]
        out = outputs[0] if len(outputs) == 1 else np.concatenate(outputs, axis=0)
        return np.ascontiguousarray(out, dtype=np.float32)

    def __repr__(self) -> str:
        return f"<encoder runtime {self.name} {self.precision} ({self.input_size} px)>"


def is_tensor(value) -> bool:
    """True for a ``torch.Tensor``; never imports torch (a process that has not imported it holds none)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def is_module(value) -> bool:
    """True for a ``torch.nn.Module``; never imports torch (see :func:`is_tensor`)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.nn.Module)


@contextlib.contextmanager
def torch_threads(num_threads: Optional[int]):
    """Use ``num_threads`` torch threads inside the block (no-op for None)."""
    import torch

    if num_threads is None or num_threads == torch.get_num_threads():
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of the module's first parameter (CPU for a module without parameters)."""
    import torch

    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def probe_input(input_size: int) -> np.ndarray:
    """A fixed ``(1, 3, S, S)`` float32 image in [0, 1] for the equivalence check."""
    rng = np.random.default_rng(_PROBE_SEED)
    return rng.random((1, 3, input_size, input_size), dtype=np.float32)


def eager_reference(encoder: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    """``encoder(images)`` in eager PyTorch, numpy float32 out."""
    import torch

    with torch.inference_mode():
        x = torch.from_numpy(images).to(module_device(encoder))
        return encoder(x).float().cpu().numpy()


def verify(name: str, run_one: Callable[[np.ndarray], np.ndarray], probe_in: np.ndarray, expected: np.ndarray) -> None:
    """Raise if ``run_one(probe_in)`` is not ``expected`` within :data:`VERIFY_TOLERANCE`."""
    got = np.asarray(run_one(probe_in), dtype=np.float32)
    if got.shape != expected.shape:
        raise RuntimeError(f"{name} output shape {got.shape} != eager {expected.shape}")
    scale = max(1.0, float(np.abs(expected).max()))
    diff = float(np.abs(got - expected).max()) if got.size else 0.0
    if not np.isfinite(diff) or diff > VERIFY_TOLERANCE * scale:
        tolerance = VERIFY_TOLERANCE * scale
        raise RuntimeError(f"{name} output differs from eager torch by {diff:.3g} (tolerance {tolerance:.3g})")
    logger.debug("%s matches eager torch on the probe: max abs diff %.3g", name, diff)


def one_line(exc: BaseException) -> str:
    """``"ErrorType: first line"`` of an exception, for one-line warnings."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
