"""Slice embeddings kept for interactive work: a memory-bounded LRU, optionally backed by files.

An embedding is identified by an :class:`EmbeddingKey`: what was encoded (a
digest of the volume's voxels and of the intensity mapping that turned them
into the model's uint8 input), by which model (name, weights digest, encoder
runtime) and which slice. Sessions on the same scan with the same model share
their embeddings; with ``directory`` set, a reopened scan (even after a restart)
needs no encoder pass for the slices already seen.

Files: ``directory/<digest of volume+model+intensity>/<z>.pt``, written with
``torch.save`` through :func:`promptseg.io.atomic.atomic_path` and read with
``torch.load(weights_only=True)`` (tensors, numbers and containers only: a
cache file cannot run code). An unreadable file counts as a miss.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..models.base import Embedding

log = logging.getLogger(__name__)

#: default memory budget: 1 GiB (about 256 LiteMedSAM / SAM slices of 4 MiB)
DEFAULT_MAX_BYTES = 1 << 30


@dataclass(frozen=True)
class EmbeddingKey:
    """Which slice of which volume, encoded by which model after which intensity mapping."""

    volume: str
    model: str
    intensity: str
    z: int

    @property
    def group(self) -> str:
        """Digest shared by all slices of one volume/model/intensity (the cache sub-folder)."""
        text = "\n".join((self.volume, self.model, self.intensity))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def volume_digest(array: np.ndarray) -> str:
    """Digest of a voxel array (dtype, shape and bytes)."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"{array.dtype.str}{array.shape}".encode("ascii"))
    digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def nbytes(value: Any) -> int:
    """Memory held by an embedding's features (tensors / arrays, nested in containers)."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if hasattr(value, "element_size") and hasattr(value, "nelement"):
        return int(value.element_size() * value.nelement())
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    return 0


class EmbeddingCache:
    """Thread-safe LRU of :class:`~promptseg.models.base.Embedding` bounded by bytes.

    Args:
        max_bytes: memory budget; the least recently used embeddings are dropped
            beyond it (an embedding larger than the budget is not kept).
        directory: optional folder for the on-disk cache (created when needed).
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, directory: Optional[str | Path] = None) -> None:
        self.max_bytes = int(max_bytes)
        self.directory = Path(directory) if directory is not None else None
        self._items: OrderedDict[EmbeddingKey, tuple[Embedding, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = self.disk_hits = 0

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: EmbeddingKey) -> bool:
        with self._lock:
            return key in self._items

    def get(self, key: EmbeddingKey) -> Optional[Embedding]:
        """The embedding for ``key`` from memory, else from disk, else None."""
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return item[0]
        embedding = self._read(key)
        with self._lock:
            if embedding is None:
                self.misses += 1
                return None
            self.disk_hits += 1
        self._remember(key, embedding)
        return embedding

    def put(self, key: EmbeddingKey, embedding: Embedding) -> None:
        """Keep ``embedding`` (and write it to disk when a directory is set)."""
        self._remember(key, embedding)
        self._write(key, embedding)

    def _remember(self, key: EmbeddingKey, embedding: Embedding) -> None:
        size = nbytes(embedding.features)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if size > self.max_bytes:
                return
            self._items[key] = (embedding, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped

    # -- files -------------------------------------------------------------
    def _path(self, key: EmbeddingKey) -> Optional[Path]:
        return None if self.directory is None else self.directory / key.group / f"{key.z}.pt"

    def _write(self, key: EmbeddingKey, embedding: Embedding) -> None:
        path = self._path(key)
        if path is None or path.exists():
            return
        import torch

        from ..io.atomic import atomic_path

        record = {
            "features": _to_torch(embedding.features),
            "original_size": list(embedding.original_size),
            "input_size": list(embedding.input_size),
        }
        try:
            with atomic_path(path) as temporary:
                torch.save(record, temporary)
        except Exception as error:  # a full disk must not break an interactive session
            log.warning("embedding cache: cannot write %s (%s)", path, error)

    def _read(self, key: EmbeddingKey) -> Optional[Embedding]:
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        import torch

        try:
            record = torch.load(path, weights_only=True, map_location="cpu")
            return Embedding(
                features=_from_torch(record["features"]),
                original_size=tuple(record["original_size"]),
                input_size=tuple(record["input_size"]),
            )
        except Exception as error:
            log.warning("embedding cache: ignoring unreadable %s (%s)", path, error)
            return None


def _to_torch(value: Any) -> Any:
    """numpy arrays become ``{"numpy": tensor}`` so that ``weights_only`` loading can read them back."""
    import torch

    if isinstance(value, np.ndarray):
        return {"numpy": torch.from_numpy(np.ascontiguousarray(value))}
    if isinstance(value, dict):
        return {k: _to_torch(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_torch(v) for v in value)
    return value


def _from_torch(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"numpy"}:
            return value["numpy"].numpy()
        return {k: _from_torch(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_from_torch(v) for v in value)
    return value
