"""``promptseg segment``: box / point / line prompts -> a label map on the input grid."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys

from .common import add_intensity_args, add_model_args, load_image
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

  # several objects from a JSON prompt file (voxel indices, or "space": "RAS"/"LPS" in mm; docs/prompts.md),
  # MR normalisation
  promptseg segment mr.nrrd -o labels.nrrd --prompts prompts.json --modality mr

  # prompts drawn in 3D Slicer: an ROI (box), a line, point lists (+/-), saved as .mrk.json
  promptseg segment ct.nii.gz -o t.nii.gz --prompts tumour.mrk.json

  # prompts from a mask you already have: per label, a box on its largest cross-section
  promptseg segment ct.nii.gz -o refined.nii.gz --prompt-from rough_labels.nii.gz --labels 1,3

  # probabilities (float32 on the input grid) next to the label map; every output also gets
  # t.provenance.json (version, model and weights digest, runtime, precision, prompts, why it stopped)
  promptseg segment ct.nii.gz -o t.nii.gz --box 206,347,229,368 --slice 33 --probabilities t_prob.nii.gz

  # another model with its downloaded weights (promptseg models lists them); SAM2 memory propagation
  promptseg segment ct.nii.gz -o t.nii.gz --box 206,347,229,368 --slice 33 \\
      --model medsam2 --checkpoint MedSAM2_latest.pt --propagation memory --largest-component

  # a DICOM series folder holding several series
  promptseg segment dicom_dir/ --series 1.2.840.113619... -o out.nii.gz --box ... --slice 40

  # log which encoder runtime and precision run, and why (bf16/int8 need native CPU support
  # and must pass the accuracy gate, see docs/speed.md); or force plain fp32
  promptseg -v segment ct.nii.gz -o t.nii.gz --box 206,347,229,368 --slice 33
  promptseg segment ct.nii.gz -o t.nii.gz --box 206,347,229,368 --slice 33 --precision fp32

batch runs (-i: a folder of images / DICOM series folders, or a CSV/JSON manifest; -o: a folder):
  # every image of scans/ with its prompt file prompts/<case>.json (or <case>.mrk.json)
  promptseg segment -i scans/ -o out/ --prompts prompts/
  # with per-case masks masks/<case>.nii.gz; or a manifest with the columns
  # image, prompts | prompt_mask, labels, series, output, case
  promptseg segment -i scans/ -o out/ --prompt-from masks/
  promptseg segment -i cases.csv -o out/
  # run it again after a crash or kill: finished cases are skipped (--overwrite redoes them);
  # a failed case is logged and listed in out/summary.csv, the others go on
  # split the cases over processes, one model each, same outputs as one process:
  torchrun --nproc_per_node 4 -m promptseg.cli segment -i scans/ -o out/ --prompts prompts/
  promptseg segment -i scans/ -o out/ --prompts prompts/ --shard 0/4     # e.g. in a SLURM array job
"""



def register(sub) -> None:
    seg = sub.add_parser(
        "segment",
        help="segment objects from box / point / line prompts (2D or 3D), one image or a batch",
        description="Segment one or more objects. Prompts are voxel indices (or physical RAS/LPS mm in a prompt\n"
        "file, or 3D Slicer markups, or a label map); the output label map has exactly the input's grid\n"
        "(spacing, origin, direction), with a provenance sidecar next to it (<name>.provenance.json).\n"
        "With -i, segment every case of a folder or manifest (resumable, sharded; examples below).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG_SEGMENT + "\n" + EPILOG_DICOM,
    )
    seg.add_argument("image", nargs="?", help="NIfTI, NRRD, MHA/MHD, DICOM folder or file, MedSAM .npz, PNG/JPG/TIFF "
                     "(or -i for a batch)")
    seg.add_argument("--series", metavar="UID", help="DICOM SeriesInstanceUID, when a folder holds several series")
    seg.add_argument("-o", "--output", required=True,
                     help="label map to write: .nii.gz .nii .nrrd .mha .npz (.png for 2D), or .dcm with --format; "
                          "with -i: the output folder")
    g = seg.add_argument_group("prompt (one object; use --prompts or --prompt-from for several)")
    g.add_argument("--box", metavar="x0,y0,x1,y1", help="box corners on --slice (a box to x1 = width is clipped to the edge)")
    g.add_argument("--point", metavar="x,y[,1|0]", action="append", default=[],
                   help="a point on --slice: 1 (default) inside the object, 0 outside; repeatable")
    g.add_argument("--line", metavar="x0,y0,x1,y1", help="a line across the object (e.g. RECIST long axis), turned into a box")
    g.add_argument("--slice", type=int, metavar="Z", help="slice of the prompt (default 0 for 2D images)")
    g.add_argument("--box3d", metavar="x0,y0,z0,x1,y1,z1", help="3D box: 2D box on the middle slice, propagation limited to z0..z1")
    g.add_argument("--key-box", metavar="Z:x0,y0,x1,y1", action="append", default=[],
                   help="a box on key slice Z; two or more are interpolated on the slices between them")
    g.add_argument("--label", type=int, default=1, help="label value of the object (default 1)")
    g.add_argument("--name", help="name of the object (shown in the summary)")
    g.add_argument("--prompts", metavar="FILE",
                   help="several objects from a JSON prompt file (IJK voxels, or RAS/LPS mm; docs/prompts.md) or a "
                        "3D Slicer markups file (.mrk.json: ROI -> box, line -> line, point lists -> +/- points); "
                        "with -i a folder of <case>.json / <case>.mrk.json")
    g.add_argument("--prompt-from", metavar="LABELS",
                   help="prompts from a label map or mask on the image's grid (NIfTI/NRRD/..., Slicer .seg.nrrd, "
                        "RTSTRUCT/SEG): per label, a box on the slice where it is largest; with -i a folder of "
                        "<case>.<suffix>")
    g.add_argument("--labels", metavar="1,3", help="with --prompt-from: only these label values")
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
    m.add_argument("--mask-prompt", action="store_true",
                   help="chaining: also give each slice the previous slice's mask logits as SAM's dense mask prompt "
                        "(SAM-family models; helps some cases and not others: see docs/quality.md)")
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
    out.add_argument("--overlay", metavar="OUT.png",
                     help="write a montage of the segmented slices with masks and prompts (radiological orientation)")
    out.add_argument("--probabilities", metavar="OUT", nargs="?", const="",
                     help="also write the probability map (float32 on the input grid, .nii.gz/.nrrd/.mha; one file "
                          "per label when there are several: OUT_label<N>...); with -i give no value: "
                          "<case>_probabilities.nii.gz")
    out.add_argument("--reference", metavar="LABELS", help="a reference label map on the same grid: print the Dice per label")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    b = seg.add_argument_group("batch (many cases, one model per process)")
    b.add_argument("-i", "--input", metavar="DIR|MANIFEST",
                   help="a folder of images / DICOM series folders, or a CSV/JSON manifest (see above); -o is then a folder")
    b.add_argument("--shard", metavar="i/n", help="take cases i, i+n, i+2n, ... (0-based); under torchrun each rank "
                   "takes its share by itself")
    b.add_argument("--overwrite", action="store_true", help="redo cases that a previous run finished")
    b.add_argument("--summary", metavar="CSV", help="the summary to write (default OUT_DIR/summary.csv)")
    add_dicom_args(seg)
    seg.set_defaults(func=run)


log = logging.getLogger(__name__)


def _source(args):
    from ..prompts.source import PromptSource, parse_label_list, single_options

    options = single_options(box=args.box, points=args.point, line=args.line, slice=args.slice, box3d=args.box3d,
                             key_boxes=args.key_box, z_range=args.z_range, label=args.label, name=args.name)
    return PromptSource(options=options, prompt_file=args.prompts, label_map=args.prompt_from,
                        labels=parse_label_list(args.labels))


def _settings(args):
    """Memory options and the stop rule, checked (before any work)."""
    from ..inference import StopRule
    from ..models import Capability, require

    if args.propagation == "memory":
        require(args.model, Capability.MEMORY_PROPAGATION, "use --propagation chain or a SAM2-family model")
        memory_options = {"stop_after": args.memory_stop_after, "largest_component": args.largest_component}
    else:
        memory_options = {"stop_after": args.memory_stop_after} if args.memory_stop_after != 1 else {}
        if args.largest_component:
            memory_options["largest_component"] = True
    rule = StopRule(extent_factor=args.stop_extent, continuity_iou=args.stop_iou,
                    min_object_fraction=args.stop_appearance)
    return memory_options or None, rule


def _check_probability_path(path, inputs) -> None:
    from ..errors import ImageWriteError
    from ..inference.results import PROBABILITY_SUFFIXES
    from ..io import check_output_path

    suffix = check_output_path(path, inputs=inputs)
    if suffix not in PROBABILITY_SUFFIXES:
        raise ImageWriteError(f"cannot write {path}: probabilities are float32 images; name them "
                              + " / ".join(PROBABILITY_SUFFIXES))


def _describe_prompt(prompt) -> str:
    parts = []
    for z, sp in sorted(prompt.slices.items()):
        if sp.line is not None:
            parts.append("line " + ",".join(f"{v:g}" for v in sp.line) + f" on slice {z}")
        elif sp.box is not None:
            parts.append("box " + ",".join(f"{v:g}" for v in sp.box) + f" on slice {z}")
        if sp.points:
            parts.append(f"{len(sp.points)} point(s) on slice {z}")
    if prompt.z_range is not None:
        parts.append(f"z-range {prompt.z_range[0]}..{prompt.z_range[1]}")
    return f"{prompt.display_name}: " + ", ".join(parts)


def _log_run(result) -> None:
    from ..inference.provenance import describe_intensity

    info = result.provenance
    log.info("intensity: %s", describe_intensity(info["intensity"]))
    model = info["model"]
    log.info("model: %s (weights sha256 %s, device %s), encoder runtime %s, precision %s%s", model["name"],
             model.get("weights_sha256_16") or "none", model["device"], model.get("runtime") or "none",
             model.get("precision") or "none",
             f" ({model['precision_reason']})" if model.get("precision_reason") else "")
    log.info("%d slice(s) encoded in %.1f s", info["encoded_slices"], info["seconds"])


def run(args) -> int:
    if args.input:
        return run_batch(args)
    from ..errors import PromptError

    if not args.image:
        raise PromptError("give an image (promptseg segment IMAGE -o OUT ...) or a batch (-i DIR|MANIFEST -o OUT_DIR)")
    for option, given in (("--shard", args.shard), ("--overwrite", args.overwrite), ("--summary", args.summary)):
        if given:
            raise PromptError(f"{option} belongs to batch runs (-i DIR|MANIFEST)")
    return run_single(args)


def run_single(args) -> int:
    from ..device import check_device_name
    from ..errors import PromptError
    from ..evaluation.metrics import dice
    from ..inference import segment
    from ..inference.provenance import sidecar_path
    from ..intensity import resolve_window
    from ..io import check_destination, check_output_path, load_labels
    from ..io.guard import check_distinct
    from ..models import build_segmenter
    from ..reporting.overlay import check_overlay_path, save_overlay

    # before any work: prompt options that clash, a path that cannot be written, a bad device or option fail now
    source = _source(args)
    inputs = (args.image, args.reference, args.prompts, args.prompt_from, args.checkpoint, args.add_to, args.rtstruct)
    if args.format or str(args.output).lower().endswith(".dcm"):
        check_destination(args.output, inputs=inputs)  # the DICOM object is checked with the volume below
    else:
        check_output_path(args.output, inputs=inputs)
    sidecar = sidecar_path(args.output)
    check_destination(sidecar, inputs=inputs)
    if args.overlay:
        check_overlay_path(args.overlay, inputs=inputs)
    if args.probabilities == "":
        raise PromptError("--probabilities needs a file name (e.g. --probabilities prob.nii.gz) for one image")
    if args.probabilities:
        _check_probability_path(args.probabilities, inputs)
    check_distinct(args.output, sidecar, args.overlay, args.probabilities)
    check_device_name(args.device)
    memory_options, rule = _settings(args)
    window = resolve_window(args.window) if args.window else None
    volume = load_image(args)
    check_dicom_output(args, volume)
    roi = roi_prompts(args, volume)
    if roi:
        prompts, notes = roi, []
    else:
        prompts, notes = source.resolve(volume)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for prompt in prompts:
        log.info("prompt: %s", _describe_prompt(prompt))
    reference = load_labels(args.reference, reference=volume) if args.reference else None
    segmenter = build_segmenter(args.model, checkpoint=args.checkpoint, device=args.device, runtime=args.runtime,
                                precision=args.precision)
    result = segment(volume, prompts, segmenter, mode=args.mode or "auto", modality=args.modality,
                     window=window, stop_rule=rule, progress=not args.no_progress, propagation=args.propagation,
                     memory_options=memory_options, refine_prompt=args.refine_prompt,
                     mask_prompt=args.mask_prompt)
    _log_run(result)
    if args.probabilities:
        paths = result.probability_paths(args.probabilities)
        check_distinct(args.output, sidecar, args.overlay, *paths)
        for path in paths:
            _check_probability_path(path, inputs)
    extra = {"command": shlex.join(["promptseg", *getattr(args, "command_line", [])]),
             "prompt_source": f"RTSTRUCT ROI matching {args.prompt_roi!r}" if roi else source.description,
             "notes": notes}
    if args.format:
        path = save_dicom(args, result, volume)
        maps = result.save_probabilities(args.probabilities) if args.probabilities else []
        result.write_provenance(path, probabilities=maps, extra=extra)
    else:
        path = result.save(args.output, probabilities=args.probabilities or None, extra=extra)
        maps = result.probability_paths(args.probabilities) if args.probabilities else []
    for line, obj in zip(result.summary_lines(), result.objects):
        print(line)
        if reference is not None:
            label = obj.prompt.label
            print(f"  Dice vs reference label {label}: {dice(result.mask(label), reference.array == label):.4f}")
    print(f"wrote {path}")
    for written in maps:
        print(f"wrote {written}")
    print(f"wrote {sidecar}")
    if args.overlay:
        ov = save_overlay(args.overlay, result.image, result.labels.array, prompts,
                          reference=None if reference is None else reference.array > 0, direction=volume.direction)
        print(f"wrote {ov}")
    return 0


def run_batch(args) -> int:
    from dataclasses import replace
    from pathlib import Path

    from tqdm.auto import tqdm

    from ..batch import BatchSettings, choose_shard, load_cases
    from ..batch import run_batch as run_cases
    from ..batch.engine import check_cases, summary_name
    from ..device import check_device_name
    from ..errors import PromptError
    from ..intensity import resolve_window
    from ..io.guard import check_output_folder
    from ..models import build_segmenter
    from ..prompts.source import PromptSource

    if args.image:
        raise PromptError("give either an image or -i DIR|MANIFEST, not both")
    for option, given in (("--reference", args.reference), ("--overlay", args.overlay), ("--format", args.format),
                          ("--add-to", args.add_to), ("--prompt-roi", args.prompt_roi), ("--series", args.series)):
        if given:
            raise PromptError(f"{option} applies to one image; batch runs write label maps (a manifest may name "
                              "each case's series)")
    if args.probabilities not in (None, ""):
        raise PromptError("with -i, --probabilities takes no file name: each case gets <case>_probabilities.nii.gz")
    shard = choose_shard(args.shard)
    base = _source(args)  # one prompt for every case, or per-case files from folders
    prompts_dir = args.prompts if args.prompts and Path(args.prompts).is_dir() else None
    masks_dir = args.prompt_from if args.prompt_from and Path(args.prompt_from).is_dir() else None
    if prompts_dir or masks_dir:
        base = PromptSource()
    out_dir = check_output_folder(args.output, inputs=[args.input, args.checkpoint, args.prompts, args.prompt_from])
    cases = load_cases(args.input, out_dir, prompts_dir=prompts_dir, masks_dir=masks_dir)
    if masks_dir and args.labels:
        labels = _source(args).labels
        cases = [replace(case, labels=labels) for case in cases]
    unprompted = [case.case_id for case in cases if case.prompt_file is None and case.label_map is None]
    if base.empty and unprompted:
        raise PromptError(f"no prompt for case {unprompted[0]}: give --box, --point, --line, --box3d, --key-box, "
                          "--prompts (a file or a folder of <case>.json) or --prompt-from (a file or a folder), "
                          "or prompts / prompt_mask columns in the manifest")
    check_device_name(args.device)
    memory_options, rule = _settings(args)
    settings = BatchSettings(
        prompt=base, mode=args.mode or "auto", modality=args.modality,
        window=resolve_window(args.window) if args.window else None, stop_rule=rule,
        propagation=args.propagation, memory_options=memory_options, refine_prompt=args.refine_prompt,
        mask_prompt=args.mask_prompt,
        probabilities=args.probabilities == "",
        model={"name": args.model, "checkpoint": str(args.checkpoint) if args.checkpoint else None,
               "precision": args.precision, "runtime": args.runtime},
    )
    check_cases(shard.take(cases, key=lambda c: c.case_id), settings, extra_inputs=base.inputs())
    summary = Path(args.summary) if args.summary else out_dir / summary_name(shard)
    segmenter = build_segmenter(args.model, checkpoint=args.checkpoint, device=args.device, runtime=args.runtime,
                                precision=args.precision)

    def report(outcome) -> None:
        if outcome.status == "failed":
            tqdm.write(f"case {outcome.case}: failed: {outcome.reason}", file=sys.stderr)

    outcomes = run_cases(cases, segmenter, settings, summary=summary, shard=shard, overwrite=args.overwrite,
                         progress=not args.no_progress, on_case=report)
    if shard.distributed and shard.index != 0:
        return 1 if any(o.status == "failed" for o in outcomes) else 0
    counts = {status: sum(o.status == status for o in outcomes) for status in ("done", "skipped", "failed")}
    where = f" (shard {shard.label})" if shard.count > 1 and not shard.distributed else ""
    print(f"{len(outcomes)} case(s){where}: {counts['done']} segmented, {counts['skipped']} finished earlier, "
          f"{counts['failed']} failed")
    print(f"wrote {summary}")
    return 1 if counts["failed"] else 0
