"""ONNX Runtime on the CPU execution provider, for an exported encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np


def load(onnx_path: Path, num_threads: int, precision: str = "fp32", cache_dir=None) -> Callable[[np.ndarray], np.ndarray]:
    """A batch-1 ``run_one(images) -> features`` on ``num_threads`` threads, all graph optimisations on.

    fp32 only; ``cache_dir`` is accepted for the common loader signature (ONNX Runtime
    builds its session from the ONNX file in well under a second).
    """
    if precision != "fp32":
        raise ValueError(f"the ONNX Runtime encoder runs fp32 only, not {precision}")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    # no busy-waiting after a run: spinning threads slowed the torch decoder that
    # follows each encoder call, and the encoder gained nothing
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def run_one(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: batch})[0]

    return run_one
