"""Interactive segmentation: :class:`Session` (prompt, propagate, correct, undo, export) and its parts.

* :class:`Session` -- one volume + one model + labels; see :mod:`promptseg.session.session`.
* :class:`SharedModel` -- one model shared safely by sessions and threads.
* :class:`EmbeddingCache` -- memory-bounded LRU of slice embeddings, optionally on disk.
"""

from .cache import EmbeddingCache, EmbeddingKey
from .labels import Label
from .model import SharedModel
from .session import PropagationDone, Session, SessionBusy, SliceResult

__all__ = [
    "EmbeddingCache",
    "EmbeddingKey",
    "Label",
    "PropagationDone",
    "Session",
    "SessionBusy",
    "SharedModel",
    "SliceResult",
]
