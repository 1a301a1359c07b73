"""``promptseg evaluate``: prediction label maps vs reference label maps -> metrics CSV + JSON summary."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG_EVALUATE = """\
metrics per case and label: dice, nsd (surface Dice at --tolerance-mm), hd95 (mm), pred_ml, ref_ml;
spacing comes from the files. Both masks empty: dice 1, nsd 1, hd95 0. Exactly one empty: dice 0,
nsd 0, hd95 inf (left out of the summary statistics, which say how many were left out).
Files are never resampled: prediction and reference must share the grid.

examples:
  # one case
  promptseg evaluate --pred tumour.nii.gz --gt lung1_label.nrrd -o metrics.csv

  # two folders matched by case name (case1.nii.gz <-> case1.npz), labels 1 and 2, NSD at 1 mm
  promptseg evaluate --pred preds/ --gt labelsTs/ -o results/metrics.csv --labels 1,2 --tolerance-mm 1

  # score cases without a prediction as empty instead of stopping
  promptseg evaluate --pred preds/ --gt labelsTs/ -o metrics.csv --allow-missing

details: docs/evaluation.md
"""


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="Dice, NSD, HD95 and volumes of predicted label maps vs references (CSV + summary)",
        description="Compare prediction label maps with reference label maps, per case and label: "
        "Dice, normalised surface distance (NSD) at a tolerance in mm, HD95 in mm, predicted and "
        "reference volume in ml. Writes a CSV, a JSON summary (mean, sd, median, IQR per label) "
        "and prints the summary.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG_EVALUATE,
    )
    p.add_argument("--pred", required=True, metavar="FILE|DIR", help="prediction label map, or a folder of them")
    p.add_argument("--gt", required=True, metavar="FILE|DIR",
                   help="reference label map, or a folder of them (matched to predictions by file name without suffix)")
    p.add_argument("-o", "--output", required=True, metavar="METRICS.csv", help="CSV to write, one row per case and label")
    p.add_argument("--labels", metavar="1,2,...", help="labels to evaluate (default: every label > 0 found in either map, per case)")
    p.add_argument("--tolerance-mm", type=float, default=2.0, metavar="MM", help="NSD tolerance in mm (default 2)")
    p.add_argument("--summary", metavar="SUMMARY.json", help="JSON summary to write (default: <output name>.summary.json next to the CSV)")
    p.add_argument("--allow-missing", action="store_true",
                   help="folders: score a reference without prediction as an empty prediction and skip a "
                   "prediction without reference (default: stop and list them)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _parse_labels(text):
    from ..evaluation.metrics import EvaluationError, check_labels

    if text is None:
        return None
    parts = [part.strip() for part in text.split(",") if part.strip()]
    values = []
    for part in parts:
        if not part.isdigit():
            raise EvaluationError(f"--labels {text!r}: expected positive integers separated by commas, e.g. 1,2")
        values.append(int(part))
    return check_labels(values)


def default_summary_path(output) -> Path:
    """``results/metrics.csv`` -> ``results/metrics.summary.json``."""
    output = Path(output)
    stem = output.name[: -len(output.suffix)] if output.suffix else output.name
    return output.with_name(f"{stem}.summary.json")


def run(args) -> int:
    import sys

    from ..evaluation.evaluate import evaluate_matching, match_cases, write_evaluation
    from ..io import check_destination
    from ..evaluation.metrics import EvaluationError, check_tolerance
    from ..evaluation.summary import format_table, summarize

    labels = _parse_labels(args.labels)
    tolerance = check_tolerance(args.tolerance_mm)
    summary_path = Path(args.summary) if args.summary else default_summary_path(args.output)
    if Path(args.output).resolve() == summary_path.resolve():
        raise EvaluationError("--summary must differ from the CSV output (-o)")
    for destination in (args.output, summary_path):  # before any work: unwritable outputs fail now
        check_destination(destination, inputs=(args.pred, args.gt))
    matching = match_cases(args.pred, args.gt, allow_missing=args.allow_missing)
    if matching.gt_only:
        print(f"{len(matching.gt_only)} case(s) without a prediction, scored as empty: "
              + ", ".join(matching.gt_only), file=sys.stderr)
    if matching.pred_only:
        print(f"{len(matching.pred_only)} prediction(s) without a reference, skipped: "
              + ", ".join(matching.pred_only), file=sys.stderr)
    rows = evaluate_matching(matching, labels, tolerance, progress=not args.no_progress)
    per_label = summarize(rows, by=("label",))
    summary = {
        "pred": str(args.pred),
        "gt": str(args.gt),
        "tolerance_mm": tolerance,
        "cases": len(matching.pairs),
        "cases_without_prediction": matching.gt_only,
        "predictions_without_reference": matching.pred_only,
        "conventions": "both empty: dice 1, nsd 1, hd95 0; exactly one empty: dice 0, nsd 0, hd95 inf; "
        "statistics use finite values only (n_nonfinite counts the rest); sd with ddof 1; "
        "quartiles with linear interpolation",
        "per_label": per_label,
    }
    csv_path, json_path = write_evaluation(rows, summary, args.output, summary_path)
    cases = len(matching.pairs)
    print(f"{cases} case(s), {len(rows)} case-label row(s), NSD tolerance {tolerance:g} mm")
    if rows:
        print(format_table(per_label))
    else:
        print("no labels to evaluate (every map is empty; name labels with --labels to score them)")
    print(f"wrote {csv_path}")
    print(f"wrote {json_path}")
    return 0
