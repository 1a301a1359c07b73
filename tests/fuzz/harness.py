"""Run a fuzz campaign: mutate seeds, feed them to a worker process, classify every outcome.

Outcomes per input:

* ``accepted``  -- read and sound (see :mod:`tests.fuzz.oracle`);
* ``typed``     -- refused with a one-line :class:`promptseg.errors.PromptsegError`;
* ``untyped``   -- any other exception, or a typed error whose message is not one line;
* ``hang``      -- no answer within the time limit (twice: a slow answer on a
  busy machine is retried once with three times the limit);
* ``crash``     -- the worker died (a signal such as SIGSEGV, or the memory cap);
* ``garbage``   -- accepted, but the result breaks the oracle.

The inputs that end in the last four outcomes are saved for reproduction.
"""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .mutate import Mutator
from .seeds import REPO, make_seeds
from .targets import TARGETS

OUTCOMES = ("accepted", "typed", "untyped", "hang", "crash", "garbage")
BAD = ("untyped", "hang", "crash", "garbage")
#: inputs saved per target and bad outcome
KEEP = 25


@dataclass
class Counts:
    """Outcome counts of one target's campaign."""

    inputs: int = 0
    accepted: int = 0
    typed: int = 0
    untyped: int = 0
    hang: int = 0
    crash: int = 0
    garbage: int = 0
    seconds: float = 0.0
    examples: dict = field(default_factory=dict)  # bad outcome -> up to 5 details

    @property
    def bad(self) -> int:
        return self.untyped + self.hang + self.crash + self.garbage


class Worker:
    """One ``tests.fuzz.worker`` child process."""

    def __init__(self, limit: str = "address-space") -> None:
        self.process: Optional[subprocess.Popen] = None
        self._buffer = b""
        self.limit = limit
        self._start()

    def _start(self) -> None:
        read_fd, write_fd = os.pipe()
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.fuzz.worker", str(write_fd), self.limit],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(write_fd,), cwd=str(REPO), env=env,
        )
        os.close(write_fd)
        self._fd = read_fd
        self._buffer = b""
        ready = self._answer(120.0)
        if not isinstance(ready, dict) or ready.get("outcome") != "ready":
            raise RuntimeError(f"the fuzz worker did not start: {ready}")

    def _answer(self, timeout: float):
        """The next JSON line, ``"hang"`` after ``timeout`` s, or ``("crash", returncode)``."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "hang"
            ready, _, _ = select.select([self._fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(self._fd, 65536)
            if not chunk:
                return ("crash", self.process.wait())
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def run(self, target: str, path: Path, labels: bool, timeout: float):
        try:
            self.process.stdin.write((json.dumps({"target": target, "path": str(path), "labels": labels}) + "\n").encode())
            self.process.stdin.flush()
        except BrokenPipeError:
            return ("crash", self.process.wait())
        return self._answer(timeout)

    def restart(self) -> None:
        self.close()
        self._start()

    def close(self) -> None:
        """End the worker: at the end of its input it exits normally (its targets clean up their temporary
        folders at exit); one that is stuck is killed after 5 s."""
        if self.process is not None:
            try:
                if self.process.stdin:
                    self.process.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        try:
            os.close(self._fd)
        except OSError:
            pass


def _write_input(folder: Path, files: dict[str, bytes]) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder / next(iter(files))


def _describe(result) -> tuple[str, str]:
    if result == "hang":
        return "hang", "no answer within the time limit (twice)"
    if isinstance(result, tuple):
        code = result[1]
        reason = signal.Signals(-code).name if code < 0 else f"exit status {code}"
        return "crash", f"worker died: {reason}"
    return result["outcome"], result.get("detail", "")


def run_campaign(target: str, count: int, seed: int, scratch: Path, findings: Optional[Path] = None,
                 timeout: float = 10.0, report: Optional[Callable[[str, Counts], None]] = None,
                 seeds: Optional[dict] = None) -> Counts:
    """Feed ``count`` mutated inputs to ``target``; returns the outcome counts.

    Args:
        target: a key of :data:`tests.fuzz.targets.TARGETS`.
        count: number of inputs (the unmutated seeds come first).
        seed: random seed of the mutations.
        scratch: folder for inputs (use a tmpfs such as /dev/shm when available).
        findings: folder where bad inputs are saved (None: not saved).
        timeout: seconds one input may take before it counts as a hang.
        report: called every 500 inputs with progress.
        seeds: precomputed seed inputs (default :func:`tests.fuzz.seeds.make_seeds`).
    """
    spec = TARGETS[target]
    seeds = seeds if seeds is not None else make_seeds(scratch / "seeds")
    pool = seeds[target]
    rng = random.Random(f"{target}:{seed}")
    mutator = Mutator(rng, spec.kind, first_only=spec.mutate_first_only)
    counts = Counts()
    saved = {outcome: 0 for outcome in BAD}
    started = time.monotonic()
    worker = Worker(spec.memory_limit)
    try:
        for index in range(count):
            base = pool[index % len(pool)]
            files = base if index < len(pool) else mutator.mutate(base, rng.choice(pool))
            labels = spec.labels and index % 2 == 1
            path = _write_input(scratch / target, files)
            result = worker.run(target, path, labels, timeout)
            if result == "hang" or isinstance(result, tuple):
                worker.restart()
                if result == "hang":  # confirm on a fresh worker with a longer limit
                    result = worker.run(target, path, labels, 3 * timeout)
                    if result == "hang" or isinstance(result, tuple):
                        worker.restart()
            outcome, detail = _describe(result)
            counts.inputs += 1
            setattr(counts, outcome, getattr(counts, outcome) + 1)
            if outcome in BAD:
                examples = counts.examples.setdefault(outcome, [])
                if len(examples) < 5:
                    examples.append(detail)
                if findings is not None and saved[outcome] < KEEP:
                    saved[outcome] += 1
                    folder = findings / target / f"{outcome}-{saved[outcome]:02d}"
                    shutil.copytree(path.parent, folder, dirs_exist_ok=True)
                    (folder / "outcome.json").write_text(json.dumps(
                        {"outcome": outcome, "detail": detail, "labels": labels, "read": path.name}, indent=1))
            if report and (index + 1) % 500 == 0:
                counts.seconds = time.monotonic() - started
                report(target, counts)
    finally:
        worker.close()
    counts.seconds = time.monotonic() - started
    return counts


def counts_json(results: dict[str, Counts]) -> str:
    return json.dumps({name: asdict(c) for name, c in results.items()}, indent=1)
