"""``promptseg auto``: not implemented yet (being written)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("auto", help="(not available yet)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import PromptsegError

    raise PromptsegError("'promptseg auto' is not implemented yet")
