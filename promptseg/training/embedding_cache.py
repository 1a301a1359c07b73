"""Image embeddings computed once and reused by every epoch while the image encoder is frozen.

Stored as ``PREPARED/embeddings/<encoder digest>/<case>.npy`` (float32,
``(n_slices, C, h, w)``), memory-mapped when read. The digest is taken over the
encoder's weights, so a different starting checkpoint never reuses another's
cache. Files are written atomically; an incomplete cache is rebuilt.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..io.atomic import atomic_path
from .prepare import load_case


def module_digest(module: torch.nn.Module, length: int = 16) -> str:
    """SHA-256 over a module's state dict (names, shapes, values)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:length]


class EmbeddingCache:
    """Read access to cached embeddings: ``cache.get(case, image_index)`` -> ``(C, h, w)`` float32."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, case: str, image_index: int) -> np.ndarray:
        if case not in self._arrays:
            self._arrays[case] = np.load(self.folder / f"{case}.npy", mmap_mode="r")
        return self._arrays[case][image_index]

    @classmethod
    def build(cls, prepared: Path, cases: Sequence[str], encoder: torch.nn.Module,
              model_input: Callable, device: torch.device, progress: bool = True) -> tuple["EmbeddingCache", int]:
        """Compute what is missing; returns the cache and how many slices were encoded now."""
        folder = Path(prepared) / "embeddings" / module_digest(encoder)
        folder.mkdir(parents=True, exist_ok=True)
        todo = [c for c in cases if not (folder / f"{c}.npy").is_file()]
        encoded = 0
        encoder.eval()
        for case in tqdm(todo, desc="caching embeddings", unit="case", disable=not progress):
            arrays = load_case(Path(prepared) / "cases" / f"{case}.npz")
            out = []
            with torch.inference_mode():
                for image, size in zip(arrays["images"], arrays["sizes"]):
                    batch = torch.from_numpy(model_input(image, tuple(int(v) for v in size))[None]).to(device)
                    out.append(encoder(batch)[0].float().cpu().numpy())
                    encoded += 1
            with atomic_path(folder / f"{case}.npy") as tmp:
                with open(tmp, "wb") as handle:
                    np.save(handle, np.asarray(out, dtype=np.float32))
        return cls(folder), encoded
