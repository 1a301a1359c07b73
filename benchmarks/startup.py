"""Start-up and memory: ``promptseg segment`` as a user runs it, wall time and peak RSS of the process.

* :func:`measure_start` -- a 2D box on the bundled breast MR (45 x 120 x 21): *cold* with an
  empty cache folder (``--precision fp32``: export + compile; with ``auto`` a first run also
  judges bf16/int8 once, see :func:`measure_first_auto`), and *warm* (cached exports,
  compiled models and verdicts; the default ``--precision auto``), medians of ``repeats``;
  warm also without promptseg's bytecode (its ``__pycache__`` deleted before each such run and
  ``PYTHONDONTWRITEBYTECODE=1``, as in a fresh clone in a sandbox that sets it), interleaved.
  Every other run lets Python use its bytecode cache, as an installed package does.
  Also the floor every run pays: ``python -c "import torch"``.
* :func:`measure_large_ct` -- a 512 x 512 x 300 CT made by stacking the bundled lung CT's slices
  (150 MB of int16), the lung tumour prompted on a middle copy, 3D, warm: wall and peak RSS.

Each measured command runs in a fresh process; its peak RSS is its ``ru_maxrss``.

    python benchmarks/startup.py [--repeats 3] [--first-auto]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "promptseg" / "data"
BREAST = DATA / "breast1_image.nrrd"
BREAST_PROMPT = ["--box", "21,64,29,75", "--slice", "9", "--2d"]

#: runs ``argv`` as a child and prints its wall seconds and peak RSS (KiB) as JSON
_MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
wall = time.perf_counter() - start
print(json.dumps({"wall_s": wall, "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                  "returncode": done.returncode, "stderr": done.stderr[-2000:]}))
"""


def run_measured(argv: list[str], env: dict | None = None, bytecode: bool = True) -> dict:
    """Wall seconds and peak RSS (MiB) of ``argv`` in a fresh process; raises if it fails.

    ``bytecode``: Python may write and read its ``__pycache__`` as on a user's machine (pip compiles an
    installed package's modules at install time); False sets ``PYTHONDONTWRITEBYTECODE=1`` (some CI sandboxes
    set it): Python then writes no bytecode but still reads what is there, so delete promptseg's first
    (:func:`drop_promptseg_bytecode`) to have its modules compiled from source.
    """
    child_env = {**os.environ, **(env or {})}
    if bytecode:
        child_env.pop("PYTHONDONTWRITEBYTECODE", None)
    else:
        child_env["PYTHONDONTWRITEBYTECODE"] = "1"
    out = subprocess.run([sys.executable, "-c", _MEASURE, *argv], capture_output=True, text=True,
                         env=child_env, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["returncode"] != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result['stderr']}")
    return result


def drop_promptseg_bytecode() -> int:
    """Delete the ``__pycache__`` folders of the promptseg package this Python imports (the next run that may
    write bytecode writes them again); returns how many were deleted."""
    import importlib.util
    import shutil

    spec = importlib.util.find_spec("promptseg")
    folders = [f for root in (spec.submodule_search_locations or []) for f in Path(root).rglob("__pycache__")]
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    return len(folders)


def promptseg_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "promptseg.cli", *args]


def _median(runs: list[dict]) -> dict:
    return {"wall_s": statistics.median(r["wall_s"] for r in runs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "runs_s": [r["wall_s"] for r in runs]}


def measure_start(repeats: int = 3) -> dict:
    """Cold (empty cache, fp32) and warm (default cache, auto) ``promptseg segment`` of a 2D box, and import torch."""
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "mask.nii.gz")
        segment = promptseg_cmd("segment", str(BREAST), "-o", out, *BREAST_PROMPT, "--no-progress")
        cold = run_measured(segment + ["--precision", "fp32"], {"PROMPTSEG_CACHE_DIR": str(Path(tmp) / "cache")})
        # fills the default cache and __pycache__ if needed (a first auto run judges precision once)
        run_measured(segment)
        warm, no_bytecode = [], []
        for _ in range(repeats):  # interleaved, so the host's noise hits both alike
            warm.append(run_measured(segment))
            drop_promptseg_bytecode()  # Python still reads a __pycache__ it may not write
            no_bytecode.append(run_measured(segment, bytecode=False))
        torch_only = [run_measured([sys.executable, "-c", "import torch"]) for _ in range(repeats)]
    return {"cold_fp32": cold, "warm_auto": _median(warm), "warm_no_bytecode": _median(no_bytecode),
            "import_torch": _median(torch_only), "load_average": os.getloadavg()}


def measure_first_auto() -> dict:
    """A first ``promptseg segment`` with an empty cache and the default precision auto (runs the gate once)."""
    with tempfile.TemporaryDirectory() as tmp:
        segment = promptseg_cmd("-v", "segment", str(BREAST), "-o", str(Path(tmp) / "m.nii.gz"), *BREAST_PROMPT,
                                "--no-progress")
        result = run_measured(segment, {"PROMPTSEG_CACHE_DIR": str(Path(tmp) / "cache")})
    result["log"] = [line for line in result.pop("stderr").splitlines() if "precision" in line]
    return result


def make_large_ct(path: Path, depth: int = 300) -> tuple[int, tuple[int, int, int, int]]:
    """Write a ``512 x 512 x depth`` CT stacking the lung CT's slices; return the prompt slice and box."""
    import numpy as np
    import SimpleITK as sitk

    image = sitk.ReadImage(str(DATA / "lung1_image.nrrd"))
    array = sitk.GetArrayFromImage(image)  # (48, 512, 512) int16
    copies = -(-depth // array.shape[0])
    stacked = np.concatenate([array] * copies, axis=0)[:depth]
    out = sitk.GetImageFromArray(stacked)
    out.SetSpacing(image.GetSpacing())
    out.SetOrigin(image.GetOrigin())
    out.SetDirection(image.GetDirection())
    sitk.WriteImage(out, str(path), useCompression=False)
    middle_copy = (depth // 2) // array.shape[0]
    return middle_copy * array.shape[0] + 33, (206, 347, 229, 368)


def measure_large_ct() -> dict:
    """Warm 3D ``promptseg segment`` of the 512 x 512 x 300 stacked CT: wall and peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        ct = Path(tmp) / "ct300.nrrd"
        z, box = make_large_ct(ct)
        argv = promptseg_cmd("segment", str(ct), "-o", str(Path(tmp) / "m.nii.gz"), "--box", ",".join(map(str, box)),
                             "--slice", str(z), "--no-progress")
        result = run_measured(argv)
        result["volume_mb"] = ct.stat().st_size / 2**20
    result.pop("stderr")
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--first-auto", action="store_true", help="also time a first run with an empty cache and auto")
    args = parser.parse_args(argv)
    report = {"start": measure_start(args.repeats), "large_ct": measure_large_ct()}
    for part in ("cold_fp32",):
        report["start"][part].pop("stderr", None)
    if args.first_auto:
        report["first_auto"] = measure_first_auto()
    print(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
