"""Model families behind the :class:`~promptseg.models.base.Segmenter` interface.

``build_segmenter(name, checkpoint=None, device="cpu")`` is the one constructor;
:data:`MODELS` lists what it can build.
"""

from .base import Embedding, Prediction, Segmenter
from .registry import MODELS, build_segmenter
from .spec import ModelSpec

__all__ = ["Embedding", "Prediction", "Segmenter", "MODELS", "ModelSpec", "build_segmenter"]
