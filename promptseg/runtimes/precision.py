"""Numeric precision of the image encoder: fp32, or bf16 / int8 where the CPU runs them natively and the masks agree.

``precision="auto"`` on CPU (see docs/speed.md):

1. the reduced precisions the CPU executes natively (:func:`.cpu.native_precisions`)
   are the candidates -- none: fp32, nothing is measured;
2. each candidate (bf16; int8 only where bf16 is not native) is
   built and judged by the **mask-level gate**: the masks it gives on the real
   lesion slices with their expert boxes (:func:`.real_slices.gate_slices`, 9
   slices) must agree with the fp32 masks at mean Dice >= :data:`GATE_MIN_MEAN_DICE`;
3. a passing candidate is chosen when it is also at least :data:`MIN_SPEEDUP`
   times faster than fp32 on those slices; else fp32;
4. the verdict is cached (JSON, written atomically) per model digest, CPU model and
   flags, runtime and its version, so the gate runs once per machine and model.

fp32 keeps the random-probe check against eager PyTorch (tolerance
:data:`~.base.VERIFY_TOLERANCE`); reduced precision cannot meet it (bf16 keeps 8
bits of mantissa) and is judged by the gate instead, also when asked for by name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import ImageWriteError
from ..io.atomic import atomic_path
from .base import EncoderRuntime

logger = logging.getLogger(__name__)

#: what ``precision=`` accepts
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
#: reduced precisions, in the order ``"auto"`` tries them (fp16: CUDA only)
REDUCED = ("bf16", "fp16", "int8")
#: the gate: mean Dice of a precision's masks vs the fp32 masks on the gate slices
GATE_MIN_MEAN_DICE = 0.98
#: ``"auto"`` takes a passing reduced precision only when it is at least this much faster than fp32
MIN_SPEEDUP = 1.1
#: bump when the gate, its slices or the verdict file change, to ignore older verdicts
GATE_FORMAT = 2


@dataclass(frozen=True)
class RealSliceCheck:
    """What the model family supplies to judge a precision on real slices.

    Attributes:
        masks: ``masks(encoder) -> [(H, W) bool, ...]``: the masks of the gate slices
            (:func:`.real_slices.gate_slices`, their boxes as prompts) when ``encoder``
            is the image encoder; the decoder is the model's own fp32 decoder.
        calibration_inputs: ``calibration_inputs(count) -> [(1, 3, S, S) float32, ...]``:
            encoder inputs of real slices for int8 calibration
            (:func:`.real_slices.calibration_slices`).
    """

    masks: Callable[[EncoderRuntime], list[np.ndarray]]
    calibration_inputs: Callable[[int], list[np.ndarray]]


@dataclass
class Trial:
    """One precision on the gate slices: encoder + decoder seconds, Dice per slice vs fp32 (empty for fp32)."""

    precision: str
    seconds: float
    dice: list[float] = field(default_factory=list)

    @property
    def mean_dice(self) -> float:
        return float(np.mean(self.dice)) if self.dice else 1.0

    @property
    def min_dice(self) -> float:
        return float(np.min(self.dice)) if self.dice else 1.0

    @property
    def passed(self) -> bool:
        return self.mean_dice >= GATE_MIN_MEAN_DICE

    def summary(self) -> str:
        if not self.dice:
            return f"{self.precision}: {self.seconds:.2f} s on the gate slices"
        verdict = "passes" if self.passed else "fails"
        return (f"{self.precision} {verdict} the gate: mean Dice {self.mean_dice:.4f} (min {self.min_dice:.4f}) "
                f"vs fp32 on {len(self.dice)} real slices, {self.seconds:.2f} s")


@dataclass
class Verdict:
    """The precision chosen, why, and the trials behind it (what the cache file holds)."""

    precision: str
    reason: str
    trials: dict[str, Trial] = field(default_factory=dict)

    def to_json(self, key: dict) -> dict:
        return {
            "format": GATE_FORMAT,
            "key": key,
            "precision": self.precision,
            "reason": self.reason,
            "gate": {"min_mean_dice": GATE_MIN_MEAN_DICE, "min_speedup": MIN_SPEEDUP},
            "trials": {name: asdict(trial) for name, trial in self.trials.items()},
        }

    @classmethod
    def from_json(cls, doc: dict) -> "Verdict":
        trials = {name: Trial(**t) for name, t in doc.get("trials", {}).items()}
        precision = doc["precision"]
        if precision not in ("fp32",) + REDUCED:
            raise ValueError(f"unknown precision {precision!r}")
        return cls(precision=precision, reason=str(doc["reason"]), trials=trials)


#: environment variable naming the precision used when none is given (default ``"auto"``)
PRECISION_ENV = "PROMPTSEG_PRECISION"


def default_precision() -> str:
    """``$PROMPTSEG_PRECISION`` if set (e.g. ``fp32`` to pin every run to fp32), else ``"auto"``."""
    import os

    return check_precision(os.environ.get(PRECISION_ENV, "").strip() or "auto")


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else ModelError naming them."""
    from ..errors import ModelError

    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return precision


def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two bool masks; 1.0 when both are empty.

    (``promptseg.evaluation.metrics.dice`` computes the same, but evaluation sits
    above the runtimes in promptseg's layers.)
    """
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def run_trial(precision: str, encoder: EncoderRuntime, check: RealSliceCheck,
              reference: Optional[list[np.ndarray]] = None) -> tuple[Trial, list[np.ndarray]]:
    """Masks of the gate slices with ``encoder``, timed, and their Dice vs ``reference`` (the fp32 masks)."""
    start = time.perf_counter()
    masks = check.masks(encoder)
    seconds = time.perf_counter() - start
    dice = [] if reference is None else [mask_dice(r, m) for r, m in zip(reference, masks)]
    if reference is not None and len(reference) != len(masks):
        raise RuntimeError(f"{len(masks)} gate masks for {len(reference)} reference masks")
    return Trial(precision, seconds, dice), masks


def verdict_path(cache_dir: Path, key: dict) -> Path:
    """The verdict file for ``key`` in ``cache_dir``: ``precision-<hash of the key>.json``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir / f"precision-{digest}.json"


def load_verdict(path: Path, key: dict) -> Optional[Verdict]:
    """The cached verdict for ``key``, or None (missing, unreadable, other key or format)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("format") != GATE_FORMAT or doc.get("key") != key:
            return None
        return Verdict.from_json(doc)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("ignoring the unreadable precision verdict %s (%s)", path, exc)
        return None


def save_verdict(path: Path, key: dict, verdict: Verdict) -> None:
    """Write the verdict atomically; a cache that cannot be written only costs a warning."""
    try:
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(verdict.to_json(key), indent=2) + "\n", encoding="utf-8")
    except (OSError, ImageWriteError) as exc:
        logger.warning("could not cache the precision verdict in %s (%s)", path, exc)


def decide(
    candidates: dict[str, str],
    build: Callable[[str], EncoderRuntime],
    check: RealSliceCheck,
    min_speedup: Optional[float] = None,
) -> tuple[Verdict, dict[str, EncoderRuntime]]:
    """Run the gate: fp32 first, then the native reduced precisions in :data:`REDUCED` order.

    Args:
        candidates: ``{precision: why it is native}`` (from :func:`.cpu.native_precisions`).
        build: ``build(precision) -> encoder runtime``; may raise (that precision is skipped).
        check: the model's :class:`RealSliceCheck`.
        min_speedup: speed a passing precision needs over fp32 (default
            :data:`MIN_SPEEDUP`; 0 when the precision was asked for by name).

    Returns:
        the verdict and the runtimes built (the chosen one among them, to reuse).
    """
    min_speedup = MIN_SPEEDUP if min_speedup is None else min_speedup
    built: dict[str, EncoderRuntime] = {"fp32": build("fp32")}
    fp32, reference = run_trial("fp32", built["fp32"], check)
    trials = {"fp32": fp32}
    notes = []
    chosen = None
    for precision in REDUCED:
        if precision not in candidates:
            if precision != "fp16":
                notes.append(f"{precision} not native")
            continue
        if chosen is not None:
            notes.append(f"{precision} not tried ({chosen} passed first)")
            continue
        if precision == "int8" and "bf16" in candidates:
            # where both were native, int8 (NNCF, quantised layers only) was slower than bf16 and
            # quantising costs minutes: docs/speed.md
            notes.append("int8 not tried (bf16 is native here)")
            continue
        try:
            runtime = build(precision)
        except Exception as exc:
            notes.append(f"{precision} could not be built ({type(exc).__name__}: {str(exc)[:120]})")
            continue
        trial, _ = run_trial(precision, runtime, check, reference)
        trials[precision] = trial
        speedup = fp32.seconds / max(trial.seconds, 1e-9)
        logger.info("%s; %.2fx the speed of fp32", trial.summary(), speedup)
        if not trial.passed:
            notes.append(f"{precision} failed the gate (mean Dice {trial.mean_dice:.4f} < {GATE_MIN_MEAN_DICE})")
        elif speedup < min_speedup:
            notes.append(f"{precision} passed the gate but is only {speedup:.2f}x the speed of fp32")
        else:
            chosen = precision
            built[precision] = runtime
            notes.insert(0, f"{precision} is native ({candidates[precision]}), passes the gate (mean Dice "
                            f"{trial.mean_dice:.4f}, min {trial.min_dice:.4f} vs fp32 on {len(trial.dice)} real "
                            f"slices) and is {speedup:.2f}x the speed of fp32")
    if chosen is None:
        chosen = "fp32"
        notes.insert(0, "fp32")
    return Verdict(chosen, "; ".join(notes), trials), built
