"""OpenVINO's CPU plugin, for an exported encoder (fp32)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

import numpy as np


def load(onnx_path: Path, num_threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """A batch-1 ``run_one(images) -> features``; fp32 is forced (OpenVINO would pick bf16 where the CPU has it)."""
    import openvino as ov

    core = ov.Core()
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
        "INFERENCE_NUM_THREADS": int(num_threads),
    }
    compiled = core.compile_model(core.read_model(str(onnx_path)), "CPU", config)
    request = compiled.create_infer_request()
    lock = threading.Lock()  # one infer request: serialise callers

    def run_one(batch: np.ndarray) -> np.ndarray:
        with lock:
            request.infer({0: batch})
            return request.get_output_tensor(0).data.copy()

    return run_one
