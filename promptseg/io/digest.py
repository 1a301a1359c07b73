"""File digests: one SHA-256 helper for weights, caches and provenance records."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional


def sha256_file(path: str | Path, length: Optional[int] = None) -> str:
    """Hex SHA-256 of the file's bytes, read in 1 MiB blocks.

    Args:
        path: the file.
        length: keep only the first ``length`` hex digits (None: all 64).
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    text = digest.hexdigest()
    return text if length is None else text[:length]
