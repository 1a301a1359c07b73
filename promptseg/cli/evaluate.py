"""``promptseg evaluate``: not implemented yet (being written)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="(not available yet)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import PromptsegError

    raise PromptsegError("'promptseg evaluate' is not implemented yet")
