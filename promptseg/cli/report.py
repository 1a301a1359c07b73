"""``promptseg report``: benchmark run folders -> a Markdown page with figures."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG_REPORT = """\
writes REPORT_DIR/report.md (+ report.html with --html) and REPORT_DIR/figures/*.png; all links are
relative, so the folder can be moved. Prints the path of report.md.

examples:
  # one run
  promptseg report runs/lung_litemedsam -o report/

  # two datasets x two models: heatmap of median Dice, box plots per label, best/worst montages
  promptseg report runs/*/ -o report/ --best-worst 5 --html

  # with the train/val/test shares in the dataset overview
  promptseg report runs/liver_* -o report/ --split splits.json

split.json: a file of 'promptseg split', {"train": ["case_001", ...], "val": [...], "test": [...]}, or
nnU-Net's splits_final.json (a file with folds: the first fold). See docs/evaluation.md, section Reports.
"""


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="Markdown report with figures from benchmark runs",
        description="Summarise benchmark run folders (run.json + metrics.csv): tables of Dice / NSD / HD95, a "
        "heatmap of median Dice per dataset x model, box plots per label, sweep curves, overlay montages of the "
        "best and worst cases, and a dataset overview.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG_REPORT,
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="benchmark run folder(s)")
    p.add_argument("-o", "--output", required=True, metavar="REPORT_DIR", help="folder to write the report into")
    p.add_argument("--best-worst", type=int, default=3, metavar="N",
                   help="montages of the N best and N worst cases by Dice per run; 0 = none (default 3)")
    p.add_argument("--split", metavar="SPLIT.json", help="train/val/test split for the dataset overview")
    p.add_argument("--html", action="store_true", help="also write report.html")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import PromptsegError
    from ..evaluation.benchmark import RUN_FILES
    from ..io.guard import check_output_folder
    from ..reporting.report import REPORT_FILES, build_report

    if args.best_worst < 0:
        raise PromptsegError(f"--best-worst must be >= 0, got {args.best_worst}")
    check_output_folder(args.output, inputs=[Path(d) / name for d in args.run_dirs for name in RUN_FILES]
                        + [args.split], writes=REPORT_FILES, folders_read=args.run_dirs)
    path = build_report(args.run_dirs, args.output, best_worst=args.best_worst, split=args.split,
                        html=args.html, progress=not args.no_progress)
    print(path)
    return 0
