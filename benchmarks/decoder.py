"""Re-prompt latency: a box on an already embedded slice, exported decoder vs eager PyTorch.

:func:`measure_decoder` embeds each of the 9 gate slices once, then decodes its expert
box ``calls`` times with LiteMedSAM's exported box decoder (prompt encoder + mask
decoder + up-sampling to the slice, OpenVINO fp32) and with the eager PyTorch decoder,
interleaved, on every available core (2 here), and reports p50 / p95 per path and
whether the masks were identical.

    python benchmarks/decoder.py [--calls 20]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from promptseg.models.registry import build_segmenter
from promptseg.runtimes.real_slices import gate_slices


def measure_decoder(calls: int = 20) -> dict:
    """p50 / p95 seconds of one box decode per path over the gate slices, and mask identity."""
    fast = build_segmenter("litemedsam")  # exported box decoder
    eager = build_segmenter("litemedsam", runtime="torch", precision="fp32")  # eager decoder
    if fast.box_decoder is None:
        raise RuntimeError("the exported box decoder is not available here")
    times = {"exported": [], "eager": []}
    identical = []
    for item in gate_slices():
        embedding = fast.embed(item.image)
        for _ in range(calls):
            for name, model in (("exported", fast), ("eager", eager)):
                start = time.perf_counter()
                prediction = model.decode(embedding, box=item.box)
                times[name].append(time.perf_counter() - start)
        identical.append(bool(np.array_equal(fast.decode(embedding, box=item.box).mask,
                                             eager.decode(embedding, box=item.box).mask)))
        del prediction
    out = {name: {"p50_s": float(np.percentile(t, 50)), "p95_s": float(np.percentile(t, 95)), "calls": len(t)}
           for name, t in times.items()}
    out["identical_masks"] = f"{sum(identical)}/{len(identical)}"
    out["load_average"] = os.getloadavg()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20, help="decodes per slice and path")
    args = parser.parse_args(argv)
    print(json.dumps(measure_decoder(args.calls), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
