"""Which cases this process takes: ``--shard i/n``, or its rank under ``torchrun`` (``RANK`` / ``WORLD_SIZE``).

Cases are dealt round-robin in case-id order: shard ``i`` of ``n`` takes cases
``i, i + n, i + 2n, ...``. Every case goes to exactly one shard, and what a case
produces does not depend on the shard that runs it, so the outputs are the same
bytes as a one-process run.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Optional, Sequence, TypeVar

from ..errors import OptionError

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based); ``distributed`` when ranks of a torchrun job share the work."""

    index: int = 0
    count: int = 1
    distributed: bool = False

    def __post_init__(self) -> None:
        if not (self.count >= 1 and 0 <= self.index < self.count):
            raise OptionError(f"shard {self.index}/{self.count}: needs 0 <= i < n")

    def take(self, items: Sequence[T], key=None) -> list[T]:
        """This shard's share of ``items`` (sorted by ``key`` first, so every process deals the same way)."""
        ordered = sorted(items, key=key) if key is not None else list(items)
        return ordered[self.index :: self.count]

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"1/4"`` -> the second of four shards."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match:
        raise OptionError(f"--shard {text!r}: expected i/n, e.g. 0/4 (shards 0..n-1)")
    return Shard(int(match.group(1)), int(match.group(2)))


def shard_from_env(environ: Optional[dict] = None) -> Shard:
    """The shard of a process started by ``torchrun`` (``RANK`` of ``WORLD_SIZE``), else the whole run."""
    environ = os.environ if environ is None else environ
    try:
        world = int(environ.get("WORLD_SIZE", 1))
        rank = int(environ.get("RANK", 0))
    except ValueError:
        raise OptionError("RANK and WORLD_SIZE must be integers (as torchrun sets them)") from None
    return Shard(rank, world, distributed=world > 1)


def choose_shard(text: Optional[str] = None) -> Shard:
    """``--shard`` when given, else the torchrun rank (refusing both at once)."""
    env = shard_from_env()
    if text is None:
        return env
    if env.distributed:
        raise OptionError("--shard splits the cases by hand; under torchrun each rank already takes its share")
    return parse_shard(text)
