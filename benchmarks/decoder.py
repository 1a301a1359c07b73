"""Re-prompt latency: a box on an already embedded slice, exported decoder vs eager PyTorch.

:func:`measure_decoder` embeds each of the 9 gate slices once, then decodes its expert
box ``calls`` times on three paths, a block per path and slice, on every available core (2 here):
the *interactive* decoder a viewer's re-prompt runs (``decode_interactive`` under
``precision="auto"``: the exported graph in bf16 where the CPU has it and its gate
passes, else fp32), LiteMedSAM's exported box decoder in fp32 (prompt encoder + mask
decoder + up-sampling to the slice, what 3D runs use), and the eager PyTorch decoder.
It reports p50 / p95 per path, whether the fp32 masks were identical to eager, and the
interactive masks' Dice with the fp32 ones.

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
    """p50 / p95 seconds of one box decode per path over the gate slices, and how the masks compare."""
    from promptseg.runtimes.precision import mask_dice

    fast = build_segmenter("litemedsam")  # exported box decoder; interactive decoder as auto chooses it
    eager = build_segmenter("litemedsam", runtime="torch", precision="fp32")  # eager decoder
    if fast.box_decoder is None:
        raise RuntimeError("the exported box decoder is not available here")
    paths = {"interactive": fast.decode_interactive, "exported": fast.decode, "eager": eager.decode}
    times = {name: [] for name in paths}
    identical, interactive_dice = [], []
    for item in gate_slices():
        embedding = fast.embed(item.image)
        for name, decode in paths.items():  # a block of calls per path: PyTorch's OpenMP threads keep
            decode(embedding, box=item.box)  # spinning after an eager call and would slow the next path's call
            for _ in range(calls):
                start = time.perf_counter()
                decode(embedding, box=item.box)
                times[name].append(time.perf_counter() - start)
        fp32 = fast.decode(embedding, box=item.box).mask
        identical.append(bool(np.array_equal(fp32, eager.decode(embedding, box=item.box).mask)))
        interactive_dice.append(mask_dice(fast.decode_interactive(embedding, box=item.box).mask, fp32))
    out = {name: {"p50_s": float(np.percentile(t, 50)), "p95_s": float(np.percentile(t, 95)), "calls": len(t)}
           for name, t in times.items()}
    decoder = fast.interactive_decoder
    out["interactive"].update(precision=getattr(decoder, "precision", "eager"),
                              reason=getattr(decoder, "precision_reason", ""),
                              mean_dice_vs_fp32=float(np.mean(interactive_dice)))
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
