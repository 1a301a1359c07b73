"""Device names (``--device``, ``train.device``, ``build_segmenter(device=...)``), checked in one place.

Accepted: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``,
``cuda:N``, ``mps``. Anything else -- ``tpu:7``, ``cuda:-1``, ``gpu`` -- is an
:class:`~promptseg.errors.OptionError` naming the accepted forms, raised
before a model is built; so is a CUDA/MPS device this machine does not have.
"""

from __future__ import annotations

import re

from .errors import OptionError

ACCEPTED = "auto, cpu, cuda, cuda:N or mps"


def check_device_name(spec) -> str:
    """The device name, lower case, if it has an accepted form (no hardware check, no torch import).

    Raises:
        OptionError: any other form.
    """
    text = str(spec).strip().lower()
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d{1,3})?", text):
        raise OptionError(f"device {str(spec)[:40]!r} is not one of {ACCEPTED}")
    return text


def device_name(spec) -> str:
    """The device ``spec`` resolves to, as text (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).

    ``cpu`` is answered without importing torch (a warm CPU start never needs it);
    anything else goes through :func:`resolve_device` and its hardware checks.

    Raises:
        OptionError: as :func:`resolve_device`.
    """
    if check_device_name(spec) == "cpu":
        return "cpu"
    return str(resolve_device(spec))


def resolve_device(spec):
    """A ``torch.device`` for ``spec``; ``auto`` picks CUDA when available, else CPU.

    Raises:
        OptionError: a malformed name, or CUDA / MPS (or CUDA device N) not present here.
    """
    import torch

    text = check_device_name(spec)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(text)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise OptionError(f"device {text!r} requested but no CUDA GPU is available (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise OptionError(
                f"device {text!r} requested but this machine has {torch.cuda.device_count()} CUDA GPU(s) "
                f"(cuda:0..cuda:{torch.cuda.device_count() - 1})"
            )
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise OptionError("device 'mps' requested but Apple's Metal backend is not available here")
    return device
