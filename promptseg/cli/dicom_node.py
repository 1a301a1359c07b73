"""``promptseg dicom-node``: run the DICOM node (receive series, segment them by rules, send RTSTRUCT / SEG)."""

from __future__ import annotations

import argparse
import logging

EPILOG = """\
examples:
  # check a config and exit
  promptseg dicom-node --config node.yaml --check

  # run the node (stop with Ctrl-C or SIGTERM; a restart resumes pending work)
  promptseg dicom-node --config examples/dicom-node.yaml

  # then, from another shell, with dcmtk:
  echoscu -aet CT_SCANNER -aec PROMPTSEG 127.0.0.1 11112
  storescu -aet CT_SCANNER -aec PROMPTSEG +sd +r 127.0.0.1 11112 ct_series/

see docs/dicom.md (section "DICOM node") for the config reference and a deployment note.
"""


def register(sub) -> None:
    parser = sub.add_parser(
        "dicom-node",
        help="run a DICOM node: C-STORE in, segmentation by rules, RTSTRUCT / SEG out",
        description="A DICOM C-STORE SCP that segments each complete series by the first matching rule of its "
        "config and sends the result (RTSTRUCT or SEG) to DICOM destinations and/or a folder. Every instance "
        "is on disk and journaled before it is acknowledged; a restart finishes pending work exactly once.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    parser.add_argument("--config", required=True, metavar="NODE.yaml", help="the node's config (YAML)")
    parser.add_argument("--check", action="store_true", help="validate the config, print a summary and exit")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..node import load_config, run_node

    config = load_config(args.config)
    if args.check:
        node = config.node
        print(f"config OK: AE {node.ae_title} on {node.host}:{node.port}{' (TLS)' if node.tls else ''}, "
              f"{len(config.allowed_callers)} allowed caller(s), {len(config.destinations)} destination(s), "
              f"{len(config.rules)} rule(s), storage {node.storage}")
        return 0
    node_log = logging.getLogger("promptseg.node")
    if node_log.getEffectiveLevel() > logging.INFO:
        node_log.setLevel(logging.INFO)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    run_node(config)
    return 0
