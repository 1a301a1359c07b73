"""``promptseg segment``: box / point / line prompts -> a label map on the input grid."""

from __future__ import annotations

import argparse

from .common import add_image_args, add_intensity_args, add_model_args, load_image
from .dicom_options import EPILOG_DICOM, add_dicom_args, check_dicom_output, roi_prompts, save_dicom

EPILOG_SEGMENT = """\
coordinates are voxel indices as in 3D Slicer's IJK: x = column, y = row, z = slice (0-based).

examples:
  # a box on slice 33, propagated up and down until the object ends
  promptseg segment ct.nii.gz -o tumour.nii.gz --box 206,347,229,368 --slice 33 --overlay tumour.png

  # only that slice (2D), with a + point and a - point
  promptseg segment ct.nii.gz -o s33.nii.gz --slice 33 --2d --point 217,357 --point 240,357,0

  # a RECIST long-axis line instead of a box; limit propagation to slices 30-36
  promptseg segment ct.nii.gz -o t.nii.gz --slice 33 --line 206,350,229,366 --z-range 30,36

  # the LiteMedSAM challenge's 3D box x0,y0,z0,x1,y1,z1
  promptseg segment ct.nii.gz -o t.nii.gz --box3d 206,347,32,229,368,34

  # key slices: boxes on slices 10 and 30, interpolated in between
  promptseg segment ct.nii.gz -o liver.nii.gz --key-box 10:100,120,300,330 --key-box 30:90,110,310,340

  # several objects from a JSON prompt file (see docs/prompts.md), MR normalisation
  promptseg segment mr.nrrd -o labels.nrrd --prompts prompts.json --modality mr

  # another model with its downloaded weights (promptseg models lists them); SAM2 memory propagation
  promptseg segment ct.nii.gz -o t.nii.gz --box 206,347,229,368 --slice 33 \\
      --model medsam2 --checkpoint MedSAM2_latest.pt --propagation memory --largest-component

  # a DICOM series folder holding several series
  promptseg segment dicom_dir/ --series 1.2.840.113619... -o out.nii.gz --box ... --slice 40

  # log which encoder runtime and precision run, and why (bf16/int8 need native CPU support
  # and must pass the accuracy gate, see docs/speed.md); or force plain fp32
  promptseg -v segment ct.nii.gz -o t.nii.gz --box 206,347,229,368 --slice 33
  promptseg segment ct.nii.gz -o t.nii.gz --box 206,347,229,368 --slice 33 --precision fp32
"""



def register(sub) -> None:
    seg = sub.add_parser(
        "segment",
        help="segment objects from box / point / line prompts (2D or 3D)",
        description="Segment one or more objects. Prompts are voxel indices; the output label map "
        "has exactly the input's grid (spacing, origin, direction).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG_SEGMENT + "\n" + EPILOG_DICOM,
    )
    add_image_args(seg)
    seg.add_argument("-o", "--output", required=True, help="label map to write: .nii.gz .nii .nrrd .mha .npz (.png for 2D), or .dcm with --format")
    g = seg.add_argument_group("prompt (one object; use --prompts for several)")
    g.add_argument("--box", metavar="x0,y0,x1,y1", help="box corners on --slice")
    g.add_argument("--point", metavar="x,y[,1|0]", action="append", default=[],
                   help="a point on --slice: 1 (default) inside the object, 0 outside; repeatable")
    g.add_argument("--line", metavar="x0,y0,x1,y1", help="a line across the object (e.g. RECIST long axis), turned into a box")
    g.add_argument("--slice", type=int, metavar="Z", help="slice of the prompt (default 0 for 2D images)")
    g.add_argument("--box3d", metavar="x0,y0,z0,x1,y1,z1", help="3D box: 2D box on the middle slice, propagation limited to z0..z1")
    g.add_argument("--key-box", metavar="Z:x0,y0,x1,y1", action="append", default=[],
                   help="a box on key slice Z; two or more are interpolated on the slices between them")
    g.add_argument("--label", type=int, default=1, help="label value of the object (default 1)")
    g.add_argument("--name", help="name of the object (shown in the summary)")
    g.add_argument("--prompts", metavar="FILE.json", help="several objects from a JSON prompt file (docs/prompts.md)")
    m = seg.add_argument_group("mode")
    mx = m.add_mutually_exclusive_group()
    mx.add_argument("--3d", dest="mode", action="store_const", const="3d", help="propagate through the volume (default for volumes)")
    mx.add_argument("--2d", dest="mode", action="store_const", const="2d", help="segment only the prompted slice(s)")
    m.add_argument("--propagation", choices=["chain", "memory"], default="chain",
                   help="3D: chain boxes slice to slice (any model, default) or SAM2 memory propagation (SAM2-family models)")
    m.add_argument("--memory-stop-after", type=int, default=1, metavar="N",
                   help="memory propagation: stop a direction after N consecutive slices where SAM2 finds no object "
                        "(default 1; 0 tracks to the end of the volume, as upstream SAM2)")
    m.add_argument("--largest-component", action="store_true",
                   help="memory propagation: keep each object's largest 3D connected component (as MedSAM2's inference)")
    m.add_argument("--z-range", metavar="z0,z1", help="propagate exactly over slices z0..z1 (turns the automatic stop off)")
    m.add_argument("--refine-prompt", action="store_true",
                   help="decode the prompted slice again from the box of the model's own mask (helps boxes a few "
                        "pixels off with LiteMedSAM and point-only prompts; see docs/quality.md)")
    m.add_argument("--stop-extent", type=float, default=1.0, metavar="F",
                   help="stop rule: expected reach as a multiple of half the prompt box's larger side (default 1.0)")
    m.add_argument("--stop-iou", type=float, default=0.5, metavar="F",
                   help="stop rule: beyond that reach, minimum IoU between consecutive masks (default 0.5)")
    m.add_argument("--stop-appearance", type=float, default=0.5, metavar="F",
                   help="stop rule: minimum share of object-like voxels in a mask, 0 disables (default 0.5)")
    add_model_args(seg, "backend (see 'promptseg models'; default litemedsam)",
                   "weights for the backend: required for all but litemedsam (bundled); fine-tuned weights too")
    add_intensity_args(seg)
    out = seg.add_argument_group("output")
    out.add_argument("--overlay", metavar="OUT.png", help="write a montage of the segmented slices with masks and prompts")
    out.add_argument("--reference", metavar="LABELS", help="a reference label map on the same grid: print the Dice per label")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_dicom_args(seg)
    seg.set_defaults(func=run)



def run(args) -> int:
    from ..device import check_device_name
    from ..evaluation.metrics import dice
    from ..inference import StopRule, segment
    from ..intensity import resolve_window
    from ..io import check_destination, check_output_path, load_labels
    from ..models import Capability, build_segmenter, require
    from ..prompts import objects_from_options, validate
    from ..reporting.overlay import check_overlay_path, save_overlay

    # before any work: a path that cannot be written, a bad device or option fails now
    inputs = (args.image, args.reference, args.prompts, args.checkpoint, args.add_to, args.rtstruct)
    if args.format or str(args.output).lower().endswith(".dcm"):
        check_destination(args.output, inputs=inputs)  # the DICOM object is checked with the volume below
    else:
        check_output_path(args.output, inputs=inputs)
    if args.overlay:
        check_overlay_path(args.overlay, inputs=inputs + (args.output,))
    check_device_name(args.device)
    if args.propagation == "memory":
        require(args.model, Capability.MEMORY_PROPAGATION, "use --propagation chain or a SAM2-family model")
        memory_options = {"stop_after": args.memory_stop_after, "largest_component": args.largest_component}
    else:
        memory_options = {"stop_after": args.memory_stop_after} if args.memory_stop_after != 1 else {}
        if args.largest_component:
            memory_options["largest_component"] = True
    rule = StopRule(extent_factor=args.stop_extent, continuity_iou=args.stop_iou,
                    min_object_fraction=args.stop_appearance)
    volume = load_image(args)
    check_dicom_output(args, volume)
    prompts = roi_prompts(args, volume) or objects_from_options(
        num_slices=volume.num_slices, image_shape=volume.shape[1:], box=args.box, points=args.point,
        line=args.line, slice=args.slice, box3d=args.box3d, key_boxes=args.key_box, z_range=args.z_range,
        prompt_file=args.prompts, label=args.label, name=args.name,
    )
    for p in prompts:  # fail on bad prompts before loading the model
        validate(p, volume.shape)
    window = resolve_window(args.window) if args.window else None
    reference = load_labels(args.reference, reference=volume) if args.reference else None
    segmenter = build_segmenter(args.model, checkpoint=args.checkpoint, device=args.device, runtime=args.runtime,
                                precision=args.precision)
    result = segment(volume, prompts, segmenter, mode=args.mode or "auto", modality=args.modality,
                     window=window, stop_rule=rule, progress=not args.no_progress, propagation=args.propagation,
                     memory_options=memory_options or None, refine_prompt=args.refine_prompt)
    path = save_dicom(args, result, volume) if args.format else result.save(args.output)
    for line, obj in zip(result.summary_lines(), result.objects):
        print(line)
        if reference is not None:
            label = obj.prompt.label
            print(f"  Dice vs reference label {label}: {dice(result.mask(label), reference.array == label):.4f}")
    print(f"wrote {path}")
    if args.overlay:
        ov = save_overlay(args.overlay, result.image, result.labels.array, prompts,
                          reference=None if reference is None else reference.array > 0)
        print(f"wrote {ov}")
    return 0
