"""The box decoder as one PyTorch module, the graph :mod:`.decoder` exports and checks against.

Kept apart from :mod:`.decoder` because defining it imports torch, which a start
with a cached decoder export never needs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class BoxDecoderGraph(torch.nn.Module):
    """``prompt_encoder`` + ``mask_decoder`` + crop + up-sampling as one module (see the module docstring)."""

    def __init__(self, prompt_encoder: torch.nn.Module, mask_decoder: torch.nn.Module) -> None:
        super().__init__()
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    def forward(self, features, box, crop, size):
        sparse, dense = self.prompt_encoder(points=None, boxes=box[:, None, :], masks=None)
        low_res, iou = self.mask_decoder(
            image_embeddings=features,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        cropped = low_res[:, :, : crop[0], : crop[1]]
        logits = F.interpolate(cropped, size=(size[0], size[1]), mode="bilinear", align_corners=False)
        return logits, iou
