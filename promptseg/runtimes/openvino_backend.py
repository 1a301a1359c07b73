"""OpenVINO's CPU plugin, for an exported encoder (fp32, bf16, or an int8 IR).

The precision is always set explicitly (OpenVINO would otherwise pick bf16 by
itself wherever the CPU has it): ``INFERENCE_PRECISION_HINT`` ``f32`` for fp32
and for the int8 IR (its quantised layers run in int8, the rest in fp32), ``bf16``
for bf16. With ``cache_dir`` OpenVINO keeps the compiled model there
(``CACHE_DIR``), so a later start imports it instead of compiling again.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Callable, Optional

import numpy as np

#: promptseg precision -> OpenVINO ``INFERENCE_PRECISION_HINT``
INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def version() -> str:
    """The installed OpenVINO version (without importing it)."""
    from importlib.metadata import version as dist_version

    return dist_version("openvino")


@functools.lru_cache(maxsize=1)
def core():
    """The process's one ``openvino.Core`` (compiling with a model cache on a second Core after
    querying a first one crashed the CPU plugin's JIT code; OpenVINO recommends one Core anyway)."""
    import openvino as ov

    return ov.Core()


def compile_config(num_threads: int, precision: str = "fp32", cache_dir: Optional[Path] = None) -> dict:
    """The ``compile_model`` properties promptseg uses."""
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[precision],
        "INFERENCE_NUM_THREADS": int(num_threads),
        # threads not pinned to cores: with a second process burning one of 2 cores the encoder
        # slowed 2.0-2.2x unpinned vs 2.8-2.9x pinned, and ran as fast when the host was not
        # loaded (benchmarks/busy_host.py, docs/speed.md)
        "ENABLE_CPU_PINNING": False,
    }
    if cache_dir is not None:
        config["CACHE_DIR"] = str(cache_dir)
    return config


def load(
    model_path: Path, num_threads: int, precision: str = "fp32", cache_dir: Optional[Path] = None
) -> Callable[[np.ndarray], np.ndarray]:
    """A batch-1 ``run_one(images) -> features`` for an ONNX file or OpenVINO IR ``.xml``."""
    compiled = core().compile_model(str(model_path), "CPU", compile_config(num_threads, precision, cache_dir))
    request = compiled.create_infer_request()
    lock = threading.Lock()  # one infer request: serialise callers

    def run_one(batch: np.ndarray) -> np.ndarray:
        with lock:
            request.infer({0: batch})
            return request.get_output_tensor(0).data.copy()

    return run_one
