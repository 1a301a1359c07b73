"""``promptseg report``: not implemented yet (being written)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("report", help="(not available yet)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import PromptsegError

    raise PromptsegError("'promptseg report' is not implemented yet")
