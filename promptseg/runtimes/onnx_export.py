"""The encoder exported to ONNX once, and kept in an on-disk cache.

The ONNX file is written by the TorchScript-based exporter
(``torch.onnx.export(..., dynamo=False)``, opset :data:`ONNX_OPSET`; the
``dynamo=True`` exporter needs the extra ``onnxscript`` package). With a
``cache_key`` (the caller passes a digest of the weights and the input size) the
file is kept in ``cache_dir`` (default ``$PROMPTSEG_CACHE_DIR`` or
``~/.cache/promptseg``) as ``encoder-<key>-<hash>.onnx`` next to
``encoder-<key>-<hash>.npz``, which holds the file's SHA-256 and a probe: a fixed
input and the eager-PyTorch output for it. Both are written atomically
(:func:`promptseg.io.atomic.atomic_path`), the ``.npz`` last, so it marks a
complete entry. A missing or unreadable ``.npz`` or a hash mismatch means a
corrupt entry: it is deleted and exported again. Without ``cache_key`` the export
goes to a temporary folder that is removed after loading.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from ..errors import ImageWriteError
from ..io.atomic import atomic_path
from ..io.digest import sha256_file
from .base import eager_reference, is_module, module_device, probe_input

if TYPE_CHECKING:  # imported by an export only: a cached entry is read without torch
    import torch

logger = logging.getLogger(__name__)

#: ONNX opset of the export (17: native LayerNormalization)
ONNX_OPSET = 17
#: bump when the export or the cache layout changes, to ignore older cache files
CACHE_FORMAT = 1
INPUT_NAME = "images"
OUTPUT_NAME = "features"


def default_cache_dir() -> Path:
    """``$PROMPTSEG_CACHE_DIR``, else ``~/.cache/promptseg``."""
    env = os.environ.get("PROMPTSEG_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "promptseg"


def cache_stem(cache_key: str, input_size: int) -> str:
    """File-name stem for ``cache_key``: readable prefix + hash of everything that matters."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", cache_key)[:80]
    full = f"{cache_key}|{input_size}|opset{ONNX_OPSET}|format{CACHE_FORMAT}"
    return f"encoder-{readable}-{hashlib.sha256(full.encode()).hexdigest()[:12]}"


def export_onnx(encoder: torch.nn.Module, input_size: int, path: Path) -> None:
    """Export ``encoder`` for input ``(1, 3, S, S)`` float32 to the ONNX file ``path``.

    Uses the TorchScript-based exporter (``dynamo=False``) on a CPU copy when the
    encoder lives elsewhere. The graph is fixed at batch 1.
    """
    import torch

    module = encoder if module_device(encoder).type == "cpu" else copy.deepcopy(encoder).cpu()
    dummy = torch.zeros(1, 3, input_size, input_size, dtype=torch.float32)
    was_training = module.training
    module.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TracerWarnings, exporter deprecation notices
            torch.onnx.export(
                module,
                (dummy,),
                str(path),
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                do_constant_folding=True,
            )
    finally:
        if was_training:
            module.train()


def resolve_module(module) -> torch.nn.Module:
    """``module`` itself, or what the zero-argument function ``module`` returns (a lazily built network)."""
    return module if is_module(module) else module()


class OnnxArtefact:
    """The encoder's ONNX file plus its probe, exported at most once per build call.

    ``get()`` returns ``(onnx_path, probe_input, probe_expected)``; ``close()``
    removes an uncached temporary export. ``encoder`` may be a zero-argument
    function returning the module: it is then called only if an export is needed
    (a warm start with a cached export never builds the PyTorch network).
    """

    def __init__(self, encoder, input_size: int, cache_key: Optional[str], cache_dir: Optional[Path]):
        self._encoder = encoder
        self.input_size = input_size
        self.cache_key = cache_key
        self.cache_dir = cache_dir
        self._tmp: Optional[tempfile.TemporaryDirectory] = None
        #: SHA-256 of the cached ONNX file (None for an uncached export)
        self.sha256: Optional[str] = None
        self._result: Optional[tuple[Path, np.ndarray, np.ndarray]] = None

    def get(self) -> tuple[Path, np.ndarray, np.ndarray]:
        if self._result is None:
            result = None
            if self.cache_key is not None:
                try:
                    result = self._cached()
                except (OSError, ImageWriteError) as exc:  # unwritable cache folder, full disk...
                    logger.warning("encoder cache in %s unusable (%s); exporting without cache", self.cache_dir, exc)
            self._result = result if result is not None else self._uncached()
        return self._result

    @property
    def encoder(self) -> torch.nn.Module:
        return resolve_module(self._encoder)

    def _export(self, onnx_path: Path, final_path: Optional[Path] = None) -> tuple[np.ndarray, np.ndarray]:
        start = time.perf_counter()
        export_onnx(self.encoder, self.input_size, onnx_path)
        probe_in = probe_input(self.input_size)
        expected = eager_reference(self.encoder, probe_in)
        elapsed = time.perf_counter() - start
        logger.info("exported the image encoder to ONNX in %.1f s (%s)", elapsed, final_path or onnx_path)
        return probe_in, expected

    def _uncached(self) -> tuple[Path, np.ndarray, np.ndarray]:
        self._tmp = tempfile.TemporaryDirectory(prefix="promptseg-encoder-")
        onnx_path = Path(self._tmp.name) / "encoder.onnx"
        probe_in, expected = self._export(onnx_path)
        return onnx_path, probe_in, expected

    def _cached(self) -> tuple[Path, np.ndarray, np.ndarray]:
        assert self.cache_key is not None and self.cache_dir is not None
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        stem = cache_stem(self.cache_key, self.input_size)
        onnx_path = self.cache_dir / f"{stem}.onnx"
        meta_path = self.cache_dir / f"{stem}.npz"
        if onnx_path.exists() or meta_path.exists():
            try:
                return (onnx_path, *self._load_meta(onnx_path, meta_path))
            except Exception as exc:
                logger.warning("cached encoder export %s is corrupt (%s); exporting again", onnx_path.name, exc)
                for path in (meta_path, onnx_path):
                    path.unlink(missing_ok=True)
        with atomic_path(onnx_path) as tmp_onnx:
            probe_in, expected = self._export(tmp_onnx, onnx_path)
            sha = sha256_file(tmp_onnx)
        self.sha256 = sha
        with atomic_path(meta_path) as tmp_meta:  # last: a complete entry exists only now
            with open(tmp_meta, "wb") as fh:
                np.savez(fh, sha256=np.array(sha), format=np.array(CACHE_FORMAT),
                         probe_input=probe_in, probe_output=expected)
        return onnx_path, probe_in, expected

    def _load_meta(self, onnx_path: Path, meta_path: Path) -> tuple[np.ndarray, np.ndarray]:
        with np.load(meta_path, allow_pickle=False) as meta:
            sha = str(meta["sha256"])
            fmt = int(meta["format"])
            probe_in = np.asarray(meta["probe_input"], dtype=np.float32)
            expected = np.asarray(meta["probe_output"], dtype=np.float32)
        if fmt != CACHE_FORMAT:
            raise ValueError(f"cache format {fmt}, expected {CACHE_FORMAT}")
        if probe_in.shape != (1, 3, self.input_size, self.input_size):
            raise ValueError(f"probe input shape {probe_in.shape}")
        if sha256_file(onnx_path) != sha:
            raise ValueError("ONNX file does not match its recorded SHA-256")
        self.sha256 = sha
        return probe_in, expected

    def close(self) -> None:
        """Remove the temporary export (a loaded runtime no longer needs the file)."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
