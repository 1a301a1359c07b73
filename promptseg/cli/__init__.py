"""The ``promptseg`` command line: one subcommand per module, each a thin wrapper over the library.

Adding a subcommand: write ``promptseg/cli/<name>.py`` with ``register(subparsers)``
(which sets ``func=run``) and ``run(args) -> int``, and list it in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

from ..errors import PromptsegError

#: subcommand modules, in the order ``promptseg --help`` lists them
COMMANDS = ("segment", "info", "demo", "models", "evaluate", "benchmark", "report", "prepare", "split", "train", "layers",
            "auto", "convert", "serve", "dicom_node")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="promptseg",
        description="Promptable segmentation of medical images with Segment-Anything-family models. "
        "Give a box, points or a line on one slice; get a 2D or 3D mask on the scan's own grid.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="run 'promptseg <command> --help' for the options of each command.\n"
        "quick start: promptseg demo",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except PromptsegError as exc:
        print(f"promptseg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("promptseg: interrupted", file=sys.stderr)
        return 130


