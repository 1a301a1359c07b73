"""``promptseg benchmark``: a model on a labelled dataset with simulated prompts -> a resumable run folder."""

from __future__ import annotations

import argparse
import json

from .common import add_model_args

EPILOG_BENCHMARK = """\
DATASET is a folder with images/ + labels/ (matching names; also imagesTr/ + labelsTr/, imgs/ + gts/),
a folder of MedSAM .npz files (imgs + gts), or a .csv / .json manifest (image,label[,case][,label_names][,phases]);
see docs/evaluation.md.

prompts, simulated from each reference label (seeded):
  box-mid  tight box on the label's middle slice, 3D propagation with the automatic stop (default)
  box-mid-z  the same box, chained over the label's true z-range (the reference for the automatic stop)
  box-2d   tight box on every slice of the label, each slice segmented on its own
  box3d    the LiteMedSAM challenge's 3D box: box on the middle slice, propagation over the label's slices
  points   N clicks on the middle slice: ceil(N/2) inside (N - K with --negatives K), the rest within
           2-12 px outside

RUN_DIR gets run.json, metrics.csv (one row per case, label, setting), prompts/<case>.json (the exact
prompts, in the --prompts file format), predictions/<case>.nii.gz and summary.json. Run the same command
again after an interruption: finished cases are kept, the rest is done.

examples:
  # the bundled real cases (lung CT, brain MR, breast MR), box on the middle slice
  promptseg benchmark examples/datasets/radiomics.csv -o runs/radiomics

  # boxes jittered by up to 5 px; only label 2; the first 10 cases
  promptseg benchmark data/liver/ -o runs/liver-j5 --jitter 5 --labels 2 --limit 10

  # 3 positive + 1 negative clicks, seed 2
  promptseg benchmark data/liver/ -o runs/p3n1 --prompt points --points 4 --negatives 1 --seed 2

  # prompt studies: points 1/5/10/20, box jitter 0/5/10/20 px, avg/max over phases
  promptseg benchmark data/liver/ -o runs/points --sweep points
  promptseg benchmark data/liver/ -o runs/jitter --sweep jitter --sweep-values 0,2,4,8
  promptseg benchmark phases.csv -o runs/phases --sweep aggregate

  # fine-tuned weights
  promptseg benchmark data/liver/ -o runs/ft --checkpoint finetuned.pth
"""


def register(sub) -> None:
    p = sub.add_parser(
        "benchmark",
        help="benchmark a model on a labelled dataset with simulated prompts (resumable, prompt sweeps)",
        description="For every case and reference label: simulate a prompt from the reference, segment, "
        "measure Dice / NSD / HD95 / volumes, and keep the prompts and predictions so the run can be repeated.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG_BENCHMARK,
    )
    p.add_argument("dataset", metavar="DATASET", help="dataset folder or .csv / .json manifest")
    p.add_argument("-o", "--output", metavar="RUN_DIR", required=True, help="run folder (created; an interrupted run resumes)")
    pr = p.add_argument_group("prompts")
    pr.add_argument("--prompt", choices=["box-mid", "box-mid-z", "box-2d", "box3d", "points"],
                    help="prompt simulated from the reference (default box-mid; points with --sweep points)")
    pr.add_argument("--jitter", type=float, default=0.0, metavar="PX",
                    help="move each box coordinate by up to PX pixels, uniformly (default 0)")
    pr.add_argument("--points", type=int, default=5, metavar="N", help="clicks per object for --prompt points (default 5)")
    pr.add_argument("--negatives", type=int, metavar="K",
                    help="how many of the clicks are negative (default: N // 2, so ceil(N/2) are positive)")
    pr.add_argument("--seed", type=int, default=0, help="random seed of the prompts (default 0)")
    sw = p.add_argument_group("prompt study")
    sw.add_argument("--sweep", choices=["points", "jitter", "input-size", "aggregate"],
                    help="run once per value: points 1,5,10,20; jitter 0,5,10,20 px; input-size (backends that "
                    "allow it); aggregate avg,max of the logits over each case's phases")
    sw.add_argument("--sweep-values", metavar="V1,V2,...", help="values of the sweep instead of the defaults")
    sg = p.add_argument_group("segmentation")
    sg.add_argument("--refine-prompt", action="store_true",
                    help="decode each prompted slice again from the box of the model's own mask (as segment)")
    sg.add_argument("--mask-prompt", action="store_true",
                    help="chaining: the previous slice's mask logits as SAM's dense mask prompt (as segment)")
    ev = p.add_argument_group("evaluation")
    ev.add_argument("--tolerance-mm", type=float, default=2.0, metavar="MM", help="NSD tolerance in mm (default 2)")
    ev.add_argument("--labels", metavar="L1,L2,...", help="only these label values (default: all labels of each reference)")
    ev.add_argument("--limit", type=int, metavar="N", help="only the first N cases")
    add_model_args(p, "backend (see 'promptseg models'; default litemedsam)",
                   "weights for the backend: required for all but litemedsam (bundled); fine-tuned weights too")
    p.add_argument("--overwrite", action="store_true", help="delete the run files in RUN_DIR and start over")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _int_list(text: str, what: str) -> list[int]:
    from ..errors import PromptsegError

    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise PromptsegError(f"{what} {text!r}: expected comma-separated integers") from None


def run(args) -> int:
    from ..errors import PromptsegError
    from ..datasets.layouts import load_dataset
    from ..datasets.metrics_table import read_metrics
    from ..evaluation.benchmark import RUN_FILES, canonical_sweep, run_benchmark, sweep_settings
    from ..io.guard import check_output_folder
    from ..models import build_segmenter

    sweep = canonical_sweep(args.sweep)
    if sweep == "points" and args.prompt not in (None, "points"):
        raise PromptsegError(f"--sweep points uses point prompts; drop --prompt {args.prompt}")
    values = None
    if args.sweep_values:
        if not sweep:
            raise PromptsegError("--sweep-values needs --sweep")
        values = [v for v in args.sweep_values.replace(" ", "").split(",") if v != ""]
    labels = _int_list(args.labels, "--labels") if args.labels else None
    prompt = args.prompt or ("points" if sweep == "points" else "box-mid")
    sweep_settings(prompt, args.jitter, args.points, sweep, values, args.negatives)  # fails before the model loads
    check_output_folder(args.output, inputs=(args.dataset, args.checkpoint), writes=RUN_FILES)
    dataset = load_dataset(args.dataset)
    segmenter = build_segmenter(args.model, checkpoint=args.checkpoint, device=args.device, runtime=args.runtime,
                                precision=args.precision)
    out = run_benchmark(
        dataset, segmenter, args.output, prompt_mode=prompt, jitter_px=args.jitter, points=args.points,
        negatives=args.negatives,
        seed=args.seed, sweep=sweep, sweep_values=values, tolerance_mm=args.tolerance_mm, labels=labels,
        limit=args.limit, checkpoint=args.checkpoint, progress=not args.no_progress, overwrite=args.overwrite,
        segment_options={name: True for name in ("refine_prompt", "mask_prompt")
                         if getattr(args, name)} or None,
    )
    from ..evaluation.summary import format_table, summarize

    rows = read_metrics(out)
    if sweep:  # summary.json lists the settings in sweep order
        print(format_table(json.loads((out / "summary.json").read_text(encoding="utf-8"))))
    else:
        print(format_table(summarize(rows, by=("label",))))
    print(f"{len(rows)} rows over {len({r['case'] for r in rows})} case(s); wrote {out}/ (metrics.csv, summary.json, "
          "prompts/, predictions/)")
    return 0
