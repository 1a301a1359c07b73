"""The fuzz worker: a child process that runs targets under memory limits and reports each outcome.

Started by :mod:`tests.fuzz.harness` as ``python -m tests.fuzz.worker RESULT_FD [LIMIT]``.
It reads one JSON request per line on stdin (``{"target", "path", "labels"}``)
and writes one JSON line per request to file descriptor ``RESULT_FD``:
``{"outcome": "accepted" | "typed" | "untyped" | "garbage", "detail": ...}``.
Native crashes kill the worker (the harness sees the signal); hangs are the
harness's timeout. The address space is capped (``RLIMIT_AS``) so a runaway
allocation fails inside the worker instead of exhausting the machine, and core
dumps are off.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import traceback
from pathlib import Path

#: address-space cap of a worker
MEMORY_LIMIT = 3 * 1024**3
#: promptseg's read budget inside the worker: large declared images must be refused, well below the cap
READ_BUDGET = "256M"
#: longest typed-error message that still counts as one readable line
MAX_MESSAGE = 2000


def _limit(kind: str = "address-space") -> None:
    """Cap the address space, or (``"data"``, for targets that import torch, whose libraries map more address
    space than the cap) the data segment, which malloc and anonymous maps count against."""
    limit = resource.RLIMIT_DATA if kind == "data" else resource.RLIMIT_AS
    resource.setrlimit(limit, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def classify(target: str, path: Path, labels: bool) -> dict:
    """Run one target on one file; never raises."""
    from promptseg.errors import PromptsegError

    from .targets import TARGETS

    try:
        problem = TARGETS[target].call(path, labels)
    except PromptsegError as error:
        message = str(error)
        if "\n" in message or len(message) > MAX_MESSAGE or not message.strip():
            return {"outcome": "untyped", "detail": f"badly formed {type(error).__name__} message: {message[:300]!r}"}
        return {"outcome": "typed", "detail": f"{type(error).__name__}: {message}"}
    except BaseException as error:  # noqa: BLE001 - this is what the campaign looks for
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
        frames = traceback.extract_tb(error.__traceback__)
        where = "; ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in frames[-3:])
        return {"outcome": "untyped", "detail": f"{type(error).__name__}: {str(error)[:300]} [{where}]"}
    if problem:
        return {"outcome": "garbage", "detail": problem}
    return {"outcome": "accepted", "detail": ""}


def main() -> None:
    _limit(sys.argv[2] if len(sys.argv) > 2 else "address-space")
    os.environ["PROMPTSEG_MAX_IMAGE_BYTES"] = READ_BUDGET
    import warnings

    warnings.simplefilter("ignore")
    out = os.fdopen(int(sys.argv[1]), "w", buffering=1)
    import promptseg.io  # noqa: F401  (import once, before the first request)

    out.write(json.dumps({"outcome": "ready"}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        result = classify(request["target"], Path(request["path"]), request.get("labels", False))
        out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
