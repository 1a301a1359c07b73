"""``python -m tests.fuzz``: run the fuzz campaign and print the outcome table (see docs/reliability.md)."""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

from .harness import OUTCOMES, counts_json, run_campaign
from .seeds import make_seeds
from .targets import TARGETS


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("--inputs", type=int, default=10_000, help="inputs per target (default 10000)")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated subset of {', '.join(TARGETS)}")
    parser.add_argument("--seed", type=int, default=1, help="mutation seed (default 1)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per input before it counts as a hang")
    parser.add_argument("--findings", type=Path, default=Path("fuzz-findings"), help="where bad inputs are saved")
    parser.add_argument("--json", type=Path, help="also write the counts as JSON")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    root = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    results = {}
    with tempfile.TemporaryDirectory(prefix="promptseg-fuzz-", dir=root) as scratch:
        scratch = Path(scratch)
        seeds = make_seeds(scratch / "seeds")
        for name in names:
            def report(target, counts):
                print(f"  {target}: {counts.inputs} inputs, {counts.bad} bad, {counts.seconds:.0f} s", file=sys.stderr)
            results[name] = run_campaign(name, args.inputs, args.seed, scratch, args.findings, args.timeout,
                                         report, seeds)
    print(f"fuzz campaign: {args.inputs} inputs per target, seed {args.seed}, timeout {args.timeout:g} s, "
          f"CPU {_cpu()}, {time.strftime('%Y-%m-%d')}")
    print("| target | inputs | " + " | ".join(OUTCOMES) + " | seconds |")
    print("|---|" + "---|" * (len(OUTCOMES) + 2))
    for name, counts in results.items():
        cells = " | ".join(str(getattr(counts, o)) for o in OUTCOMES)
        print(f"| {name} | {counts.inputs} | {cells} | {counts.seconds:.0f} |")
    for name, counts in results.items():
        for outcome, details in counts.examples.items():
            for detail in details:
                print(f"{name} {outcome}: {detail}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(counts_json(results))
    return 1 if any(c.bad for c in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
