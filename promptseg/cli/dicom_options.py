"""``promptseg segment``'s DICOM options: RTSTRUCT/SEG output and prompts from an existing ROI."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG_DICOM = """\
  # DICOM in, DICOM out: an RTSTRUCT (or --format seg) that references the input series
  promptseg segment ct_series/ -o gtv_rs.dcm --format rtstruct --box 206,347,229,368 --slice 33 --name GTV_auto

  # prompt from the GTV already drawn (the RTSTRUCT next to the series, or --rtstruct FILE);
  # the new ROI is added to a copy of that RTSTRUCT
  promptseg segment ct_series/ -o rs_plus.dcm --format rtstruct --prompt-roi "GTV.*" --add-to ct_series/rs.dcm
"""


def add_dicom_args(parser: argparse.ArgumentParser) -> None:
    """The ``DICOM`` option group of ``promptseg segment``."""
    g = parser.add_argument_group("DICOM (input: a DICOM series folder)")
    g.add_argument("--format", choices=["rtstruct", "seg"],
                   help="write -o as a DICOM RTSTRUCT or SEG that references the input series "
                        "(default: a label map, format from the suffix of -o)")
    g.add_argument("--seg-type", choices=["labelmap", "binary"], default="labelmap",
                   help="--format seg: LABELMAP (default; labels never overlap) or BINARY (one bit plane per segment)")
    g.add_argument("--add-to", metavar="RTSTRUCT",
                   help="--format rtstruct: add the new ROIs to a copy of this RTSTRUCT (the file itself is never changed)")
    g.add_argument("--prompt-roi", metavar="REGEX",
                   help="prompt with a box on the largest slice of the ROI whose whole name matches REGEX "
                        "(case-insensitive, e.g. 'GTV.*') instead of --box/--point/...")
    g.add_argument("--rtstruct", metavar="FILE",
                   help="the RTSTRUCT holding the --prompt-roi ROI (default: the one in the series folder or the folder above)")


def check_dicom_output(args, volume) -> None:
    """Fail before any model work when the DICOM options cannot be honoured.

    Raises:
        DicomError / ImageWriteError / PromptError: with one line saying what to change.
    """
    from ..errors import DicomError, ImageWriteError, PromptError

    if args.format is None:
        if args.add_to or args.seg_type != "labelmap":
            raise PromptError("--add-to and --seg-type apply to DICOM output: add --format rtstruct or --format seg")
        if str(args.output).lower().endswith(".dcm"):
            raise ImageWriteError(f"-o {args.output}: say which DICOM object to write: --format rtstruct or --format seg")
        return
    if volume.dicom is None:
        raise DicomError(f"--format {args.format} needs a DICOM series as input; {args.image} is not one "
                         "(write a label map instead: -o labels.nii.gz)")
    if args.add_to and args.format != "rtstruct":
        raise PromptError("--add-to works with --format rtstruct only")


def roi_prompts(args, volume):
    """``[prompt]`` from ``--prompt-roi`` (printing where it came from), or None without that option."""
    from ..errors import PromptError

    if not args.prompt_roi:
        if args.rtstruct:
            raise PromptError("--rtstruct names the RTSTRUCT for --prompt-roi: give --prompt-roi too")
        return None
    if any([args.box, args.point, args.line, args.box3d, args.key_box, args.prompts, args.prompt_from,
            args.slice is not None]):
        raise PromptError("--prompt-roi makes the prompt: do not combine it with --box/--point/--line/--box3d/"
                          "--key-box/--prompts/--prompt-from/--slice")
    from ..prompts.roi import prompt_from_roi  # the DICOM readers (pydicom): only with --prompt-roi
    prompt, roi, path = prompt_from_roi(volume, args.prompt_roi, args.rtstruct, label=args.label, name=args.name)
    z = prompt.start_slice
    box = prompt.slices[z].box
    print(f"prompt from ROI '{roi.name}' of {Path(path).name}: box {','.join(f'{v:g}' for v in box)} on slice {z}")
    return [prompt]


def save_dicom(args, result, volume) -> Path:
    """Write the segmentation as ``args.format`` (RTSTRUCT/SEG) on the input series."""
    from ..io.dicom import write_dicom_labels

    names = {obj.prompt.label: obj.prompt.name for obj in result.objects if obj.prompt.name}
    return write_dicom_labels(result.labels, volume, args.output, args.format, names=names, add_to=args.add_to,
                              seg_type=args.seg_type.upper(), algorithm=f"promptseg {args.model}")
