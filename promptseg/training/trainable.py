"""What trains: the whole model, some parts, parameters matched by name, or LoRA adapters.

The model is a SAM-style network with ``image_encoder``, ``prompt_encoder``
and ``mask_decoder`` children. LoRA uses peft: adapters are injected into the
modules whose full name matches ``lora.target_modules`` (a regular expression);
every base weight stays frozen. Checkpoints written for inference hold the
base architecture's keys with the adapters merged in, so
``promptseg segment --checkpoint`` loads them like any fine-tuned model.
"""

from __future__ import annotations

import copy
import fnmatch

import torch

from ..errors import PromptsegError

PARTS = ("image_encoder", "prompt_encoder", "mask_decoder")


def parameter_table(net: torch.nn.Module) -> list[tuple[str, tuple[int, ...], int]]:
    """``(name, shape, count)`` of every parameter (what ``promptseg layers`` prints)."""
    return [(name, tuple(p.shape), p.numel()) for name, p in net.named_parameters()]


def apply_trainable(net: torch.nn.Module, trainable, lora=None) -> torch.nn.Module:
    """Mark what trains; returns the model to optimise (a peft model for LoRA).

    Args:
        net: the network (modified in place).
        trainable: :class:`~promptseg.training.config.TrainableSection`.
        lora: :class:`~promptseg.training.config.LoraSection` (mode ``lora``).

    Raises:
        PromptsegError: a name glob matches no parameter, or LoRA targets no module.
    """
    mode = trainable.mode
    if mode == "lora":
        return _inject_lora(net, lora)
    names = [name for name, _ in net.named_parameters()]
    if mode == "full":
        selected = set(names)
    elif mode == "parts":
        selected = {n for n in names if n.split(".", 1)[0] in trainable.parts}
    else:
        selected = set()
        for pattern in trainable.names:
            hits = {n for n in names if fnmatch.fnmatchcase(n, pattern)}
            if not hits:
                raise PromptsegError(
                    f"trainable.names: {pattern!r} matches no parameter (see 'promptseg layers'; e.g. {names[0]})"
                )
            selected |= hits
    for name, param in net.named_parameters():
        param.requires_grad_(name in selected)
    return net


def _inject_lora(net: torch.nn.Module, lora) -> torch.nn.Module:
    import re

    import peft

    matching = [name for name, module in net.named_modules()
                if re.fullmatch(lora.target_modules, name) and isinstance(module, (torch.nn.Linear, torch.nn.Conv2d))]
    if not matching:
        raise PromptsegError(f"lora.target_modules {lora.target_modules!r} matches no Linear/Conv2d module")
    config = peft.LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                             target_modules=lora.target_modules)
    return peft.get_peft_model(net, config)


def base_network(model: torch.nn.Module) -> torch.nn.Module:
    """The SAM-style network inside ``model`` (unwraps DDP and peft)."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    if hasattr(model, "merge_and_unload"):
        return model.base_model.model
    return model


def inference_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Weights with the base architecture's keys (LoRA merged), on the CPU."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    if hasattr(model, "merge_and_unload"):
        model = copy.deepcopy(model).merge_and_unload()
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def frozen_parts(model: torch.nn.Module) -> list[str]:
    """Parts with no trainable parameter (their modules stay in eval mode)."""
    net = base_network(model)
    return [part for part in PARTS if not any(p.requires_grad for p in getattr(net, part).parameters())]
