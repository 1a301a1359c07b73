"""Model families behind the :class:`~promptseg.models.base.Segmenter` interface.

``build_segmenter(name, checkpoint=None, device="cpu")`` is the one constructor;
:data:`MODELS` lists what it can build and what each backend can do
(:class:`Capability`, checked by :func:`require`).
"""

from .base import Embedding, Prediction, Segmenter
from .capabilities import Capability
from .registry import MODELS, backends_with, build_segmenter, capabilities_of, get_spec, has, require
from .spec import ModelSpec

__all__ = [
    "MODELS",
    "Capability",
    "Embedding",
    "ModelSpec",
    "Prediction",
    "Segmenter",
    "backends_with",
    "build_segmenter",
    "capabilities_of",
    "get_spec",
    "has",
    "require",
]
