"""The ``promptseg`` command line: one subcommand per module, each a thin wrapper over the library.

Adding a subcommand: write ``promptseg/cli/<name>.py`` with ``register(subparsers)``
(which sets ``func=run``) and ``run(args) -> int``, and list it in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
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
    from .. import __version__

    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log what happens (prompts, intensity rule, model and weights digest, encoder runtime "
                             "and precision)")
    parser.add_argument("--version", action="version", version=f"promptseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


#: a value that argparse would take for an option: ``-5,64,29,75``, ``-600,1500``, ``-.5``
_NEGATIVE_VALUE = re.compile(r"^-\.?\d[\d.,:eE+-]*$")


def _value_options(parser: argparse.ArgumentParser) -> set[str]:
    """Option strings (of ``parser`` and its subcommands) that take a value."""
    found: set[str] = set()
    for action in parser._actions:  # argparse has no public way to list them
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _value_options(sub)
        elif action.option_strings and action.nargs != 0:
            found.update(action.option_strings)
    return found


def attach_negative_values(argv: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    """``--box -5,64,29,75`` -> ``--box=-5,64,29,75``: argparse reads a value that starts with ``-`` and
    is not a plain number as an unknown option ("expected one argument")."""
    options = _value_options(parser)
    out: list[str] = []
    for token in argv:
        if out and out[-1] in options and _NEGATIVE_VALUE.match(token) and out[-1].startswith("--"):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    raw = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = parser.parse_args(attach_negative_values(raw, parser))
    args.command_line = raw
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from ..io.itk_log import route_itk_messages

    route_itk_messages()  # ITK's warnings become log lines (shown with -v), never raw text before an error
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


