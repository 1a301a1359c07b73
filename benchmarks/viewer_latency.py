"""What a viewer user feels: prompt latency of `promptseg serve` over HTTP, on the bundled CT.

Measured (LiteMedSAM, the server's default runtime, the machine's CPU):

* **re-prompt**: a box on a slice whose embedding is cached (the decoder pass + JSON + HTTP):
  p50 / p95 over ``--repeats`` requests with boxes jittered by +-2 px, through FastAPI's
  TestClient (in-process ASGI) and through uvicorn over real HTTP on 127.0.0.1 (httpx);
* **first prompt on a new slice**: one encoder pass + the decoder, next to the bare encoder pass;
* **opening a large CT**: ``POST /api/sessions`` on a 512 x 512 x 300 scan (made here, int16),
  and how many slices were encoded by the time the answer came (should be 0).

    python benchmarks/viewer_latency.py [--repeats 60] [--output viewer_latency.md]

Prints a markdown section (and writes it to ``--output``) that `make bench` can append to
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

import promptseg
from promptseg.demo import DEMO_IMAGE
from promptseg.server import Settings, create_app

BOX = (206, 347, 229, 368)
SLICE = 33
TOKEN = "bench"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def cpu_name() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def percentiles(measured: tuple[list[float], list[float]]) -> tuple[float, float, float]:
    """p50 and p95 of the wall-clock times and the median CPU time, ms."""
    ms = np.asarray(measured[0]) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95)), float(np.median(measured[1]) * 1000)


def reprompts(post, session_id: str, repeats: int, seed: int = 0) -> tuple[list[float], list[float]]:
    """Wall-clock times and process CPU times of ``repeats`` box prompts on the already embedded slice.

    The CPU time (all threads of this process: client, server, model) does not grow when other
    programs compete for the cores, so it bounds what the same request costs on an idle machine.
    """
    rng = np.random.default_rng(seed)
    times, cpu = [], []
    for _ in range(repeats):
        jitter = rng.integers(-2, 3, size=4)
        box = [int(v) for v in np.asarray(BOX) + jitter]
        start, start_cpu = time.perf_counter(), time.process_time()
        answer = post(f"/api/sessions/{session_id}/prompt", {"label": 1, "slice": SLICE, "box": box})
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        assert answer["mask"]["bbox"] is not None
    return times, cpu


class UvicornThread:
    def __init__(self, app):
        import uvicorn

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)


def measure(repeats: int) -> dict:
    import httpx
    from fastapi.testclient import TestClient

    model = promptseg.build_segmenter("litemedsam", precision="auto")  # as promptseg serve builds it
    decoder = model.interactive_decoder
    results: dict = {"decoder": (f"exported box decoder (OpenVINO {decoder.precision}: {decoder.precision_reason})"
                                 if decoder is not None else "eager PyTorch"),
                     "encoder": f"{model.encoder.name} {getattr(model.encoder, 'precision', '')}".strip()}
    pinned = promptseg.build_segmenter("litemedsam", precision="fp32")
    with tempfile.TemporaryDirectory(prefix="promptseg-bench-") as folder:
        data = Path(folder)
        ct = Path(DEMO_IMAGE).name
        settings = Settings(data_dirs=[Path(DEMO_IMAGE).parent, data], token=TOKEN,
                            segmenter_factory=lambda name: model, prefetch=0)
        app = create_app(settings)
        with TestClient(app) as client:
            def post(url, body):
                response = client.post(url, json=body, headers=AUTH)
                response.raise_for_status()
                return response.json()

            sid = post("/api/sessions", {"path": ct})["id"]
            post(f"/api/sessions/{sid}/prompt", {"slice": SLICE, "box": list(BOX)})  # encodes slice 33, warms up
            fp32_settings = dataclasses.replace(settings, segmenter_factory=lambda name: pinned)
            with TestClient(create_app(fp32_settings)) as fp32_client:
                def post_fp32(url, body):
                    response = fp32_client.post(url, json=body, headers=AUTH)
                    response.raise_for_status()
                    return response.json()

                fp32_sid = post_fp32("/api/sessions", {"path": ct})["id"]
                post_fp32(f"/api/sessions/{fp32_sid}/prompt", {"slice": SLICE, "box": list(BOX)})
                # interleaved, request by request, so the host's load weighs on both alike
                default_times, fp32_times = ([], []), ([], [])
                for i in range(repeats):
                    for timed, call, session_id in ((default_times, post, sid), (fp32_times, post_fp32, fp32_sid)):
                        wall, cpu = reprompts(call, session_id, 1, seed=i)
                        timed[0].extend(wall)
                        timed[1].extend(cpu)
            results["testclient"] = percentiles(default_times)
            results["testclient_fp32"] = percentiles(fp32_times)
            # a prompt on a slice never seen: one encoder pass + the decoder
            firsts, encoders = [], []
            images = client.app.state.store.get(sid).session.images
            for z in (20, 24, 28, 38, 42):
                start = time.perf_counter()
                post(f"/api/sessions/{sid}/prompt", {"label": 2, "slice": z, "box": list(BOX)})
                firsts.append(time.perf_counter() - start)
                start = time.perf_counter()
                model.embed(images[z])
                encoders.append(time.perf_counter() - start)
            results["first"] = (statistics.median(firsts) * 1000, statistics.median(encoders) * 1000)
        with UvicornThread(create_app(settings)) as url, httpx.Client(base_url=url, headers=AUTH, timeout=60) as http:
            def post_http(path, body):
                response = http.post(path, json=body)
                response.raise_for_status()
                return response.json()

            sid = post_http("/api/sessions", {"path": ct})["id"]
            post_http(f"/api/sessions/{sid}/prompt", {"slice": SLICE, "box": list(BOX)})
            results["http"] = percentiles(reprompts(post_http, sid, repeats, seed=1))
        # opening a large CT
        rng = np.random.default_rng(0)
        big = promptseg.Volume(rng.integers(-1000, 1500, size=(300, 512, 512), dtype=np.int16), spacing=(0.7, 0.7, 1.0))
        promptseg.save_volume(big, data / "big.nrrd")
        with TestClient(create_app(settings)) as client:
            start = time.perf_counter()
            answer = client.post("/api/sessions", json={"path": "big.nrrd"}, headers=AUTH).json()
            opened = time.perf_counter() - start
            encoded = len(client.app.state.store.get(answer["id"]).session.embedder.encoded)
        results["open_big"] = (opened, encoded)
    return results


def markdown(results: dict, repeats: int) -> str:
    tc50, tc95, tc_cpu = results["testclient"]
    f50, f95, f_cpu = results["testclient_fp32"]
    h50, h95, h_cpu = results["http"]
    load = os.getloadavg()[0]
    first, encoder = results["first"]
    opened, encoded = results["open_big"]
    return "\n".join([
        "## Viewer latency (`promptseg serve`, LiteMedSAM)",
        "",
        f"CPU: {cpu_name()}, {torch.get_num_threads()} torch threads; encoder runtime {results['encoder']}, "
        f"mask decoder {results['decoder']}; bundled CT 512 x 512 x 48; "
        f"{repeats} re-prompts with boxes jittered +-2 px (`benchmarks/viewer_latency.py`).",
        "",
        "| what | p50 (ms) | p95 (ms) | CPU time, median (ms) |",
        "|---|---:|---:|---:|",
        f"| re-prompt on an embedded slice, TestClient (in-process) | {tc50:.0f} | {tc95:.0f} | {tc_cpu:.0f} |",
        f"| re-prompt on an embedded slice, uvicorn over HTTP (127.0.0.1) | {h50:.0f} | {h95:.0f} | {h_cpu:.0f} |",
        f"| the same, TestClient, decoder pinned to fp32 (`precision=\"fp32\"`), interleaved with row 1 "
        f"| {f50:.0f} | {f95:.0f} | {f_cpu:.0f} |",
        "",
        f"Load average during the run: {load:.1f} on {os.cpu_count()} cores. The CPU time (all threads of the "
        "benchmark process: client, server, model) does not grow with other programs' load; with the "
        "decoder's 2 threads it exceeds the wall time an idle machine needs.",
        "",
        f"First prompt on a new slice: {first:.0f} ms (median of 5), of which the encoder pass alone takes "
        f"{encoder:.0f} ms. Opening a 512 x 512 x 300 CT: {opened:.1f} s until the session answers, "
        f"{encoded} slices encoded by then (slices are encoded on demand and in the background).",
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--output", type=Path, help="write the markdown section here")
    args = parser.parse_args()
    text = markdown(measure(args.repeats), args.repeats)
    print(text)
    if args.output:
        args.output.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
