"""SAM2's parameters under promptseg's training names (:class:`SAM2TrainingView`).

Apart from :mod:`.sam2` because a ``torch.nn.Module`` subclass imports torch when
defined, and the registry reads :mod:`.sam2`'s specs without torch.
"""

from __future__ import annotations

import torch


class SAM2TrainingView(torch.nn.Module):
    """The SAM2 parameters under the names promptseg's training code expects.

    Children ``image_encoder`` (Hiera trunk + FPN neck), ``prompt_encoder``
    (``sam_prompt_encoder``), ``mask_decoder`` (``sam_mask_decoder``, including the
    high-resolution projections ``conv_s0`` / ``conv_s1``) and ``memory`` (everything
    else: memory attention and encoder, object-pointer heads and the learned
    embeddings such as ``no_mem_embed``). They are the *same* modules and parameters
    as in the SAM2 model: training the view trains the model. Its state dict holds
    every tensor of the model once, under the view's names (:meth:`base_names` maps
    them back), which is what promptseg's fine-tuned checkpoints contain.

    Args:
        model: an upstream SAM2 model (:func:`build_network`).
    """

    def __init__(self, model) -> None:
        super().__init__()
        self.image_encoder = model.image_encoder
        self.prompt_encoder = model.sam_prompt_encoder
        self.mask_decoder = model.sam_mask_decoder
        memory = torch.nn.Module()
        taken = {"image_encoder", "sam_prompt_encoder", "sam_mask_decoder"}
        for name, child in model.named_children():
            if name not in taken:
                memory.add_module(name, child)
        for name, param in model.named_parameters(recurse=False):
            memory.register_parameter(name, param)
        for name, buf in model.named_buffers(recurse=False):
            memory.register_buffer(name, buf)
        self.memory = memory
        by_id = {id(t): k for k, t in model.state_dict(keep_vars=True).items()}
        self._base_names = {k: by_id[id(t)] for k, t in self.state_dict(keep_vars=True).items()}
        if sorted(self._base_names.values()) != sorted(by_id.values()):
            raise RuntimeError("SAM2 training view does not cover every tensor of the model")

    def base_names(self) -> dict[str, str]:
        """``{view key: SAM2 key}`` for every tensor of the state dict."""
        return dict(self._base_names)
