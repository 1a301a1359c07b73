"""``promptseg benchmark``: not implemented yet (being written)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("benchmark", help="(not available yet)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import PromptsegError

    raise PromptsegError("'promptseg benchmark' is not implemented yet")
