"""How the encoder degrades on a loaded host: a second process burning one core, per runtime and thread count.

:func:`measure_busy_host` times the LiteMedSAM encoder (batch 1, a real CT slice) in
OpenVINO fp32 and bf16 (promptseg's settings, and with OpenVINO's CPU pinning on), ONNX Runtime and eager
PyTorch, on 1 thread and on every core, first as the host is, then while a burner process
spins (``while True: pass``); runs interleaved, medians. The ratio busy / as-is says how
gracefully each setting degrades. The burner is always stopped (``finally``).

    python benchmarks/busy_host.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

import promptseg
from promptseg.models.registry import build_segmenter
from promptseg.runtimes import onnx_export, onnxruntime_backend, openvino_backend
from promptseg.runtimes.base import default_num_threads
from promptseg.runtimes.real_slices import DATA


def _engines(model, threads: int) -> dict:
    folder = onnx_export.default_cache_dir()
    artefact = onnx_export.OnnxArtefact(model.net.image_encoder, 256, f"litemedsam-{model.weights_digest}-256", folder)
    path, _, _ = artefact.get()
    engines = {}
    for precision in ("fp32", "bf16"):
        engines[f"openvino-{precision}"] = openvino_backend.load(path, threads, precision, folder / "openvino" / precision)
        config = openvino_backend.compile_config(threads, precision)
        config["ENABLE_CPU_PINNING"] = True
        compiled = openvino_backend.core().compile_model(str(path), "CPU", config)
        request = compiled.create_infer_request()
        engines[f"openvino-{precision}-pinned"] = (
            lambda x, r=request: (r.infer({0: x}), r.get_output_tensor(0).data.copy())[1])
    engines["onnxruntime"] = onnxruntime_backend.load(path, threads)

    def eager(x, encoder=model.net.image_encoder):
        with torch.inference_mode():
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                return encoder(torch.from_numpy(x)).numpy()
            finally:
                torch.set_num_threads(previous)

    engines["torch"] = eager
    return engines


def _time(engines: dict, batch: np.ndarray, repeats: int) -> dict:
    for run in engines.values():
        run(batch)
    times = {name: [] for name in engines}
    for _ in range(repeats):
        for name, run in engines.items():
            start = time.perf_counter()
            run(batch)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def measure_busy_host(repeats: int = 3) -> dict:
    """Median encoder seconds per engine and thread count, as-is and with one core burned; and the ratios."""
    model = build_segmenter("litemedsam", runtime="torch", precision="fp32")
    batch, _ = model.preprocess(promptseg.normalize(promptseg.load_volume(DATA / "lung1_image.nrrd"))[33])
    out = {"cores": default_num_threads(), "load_average_start": os.getloadavg()}
    for threads in sorted({1, default_num_threads()}):
        engines = _engines(model, threads)
        as_is = _time(engines, batch, repeats)
        burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(1.0)
            busy = _time(engines, batch, repeats)
        finally:
            burner.terminate()
            burner.wait(timeout=30)
        out[f"threads={threads}"] = {name: {"as_is_s": as_is[name], "burner_s": busy[name],
                                            "slowdown": busy[name] / as_is[name]} for name in engines}
    out["load_average_end"] = os.getloadavg()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(json.dumps(measure_busy_host(args.repeats), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
