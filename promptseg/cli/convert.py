"""``promptseg convert``: label maps <-> RTSTRUCT / SEG on a DICOM series, images -> DICOM series."""

from __future__ import annotations

import argparse

EPILOG = """\
examples:
  # a label map (NIfTI/NRRD/MHA) on a DICOM series -> RTSTRUCT (or --format seg) referencing that series
  promptseg convert labels.nii.gz -o rs.dcm --reference ct_series/ --names 1=GTV,2=Heart

  # RTSTRUCT or SEG -> label map on the series grid (one label per ROI, names printed)
  promptseg convert rs.dcm -o labels.nii.gz --reference ct_series/

  # an image -> a DICOM CT/MR series (one file per slice, new UIDs)
  promptseg convert scan.nrrd -o scan_series/ --format dicom --modality mr --body-part head

conventions (contour placement, holes, what references what): docs/dicom.md
"""


def register(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="label maps <-> DICOM RTSTRUCT/SEG, images -> DICOM series",
        description="Convert between label maps (NIfTI, NRRD, MHA, ...) and DICOM RTSTRUCT or SEG on the DICOM "
        "series they belong to, or write an image as a DICOM series. Nothing is resampled: the label map must "
        "be on the series grid.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    p.add_argument("input", help="RTSTRUCT/SEG .dcm, label map, or image")
    p.add_argument("-o", "--output", required=True, help="label map file, RTSTRUCT/SEG .dcm, or a new folder for --format dicom")
    p.add_argument("--reference", metavar="SERIES_DIR", help="the DICOM series the labels belong to")
    p.add_argument("--series", metavar="UID", help="Series Instance UID, when the reference folder holds several series")
    p.add_argument("--format", choices=["rtstruct", "seg", "dicom"],
                   help="rtstruct (default with --reference) or seg for a label map; dicom for an image")
    p.add_argument("--seg-type", choices=["labelmap", "binary"], default="labelmap", help="SEG encoding (default labelmap)")
    p.add_argument("--names", metavar="1=GTV,2=Heart", help="ROI / segment names per label value")
    p.add_argument("--modality", choices=["ct", "mr"], help="--format dicom: modality of the series (default: the image's, else CT)")
    p.add_argument("--body-part", default="", metavar="PART", help="--format dicom: Body Part Examined (CHEST, HEAD, ...)")
    p.set_defaults(func=run)


def parse_names(text):
    """``"1=GTV,2=Heart"`` -> ``{1: "GTV", 2: "Heart"}``.

    Raises:
        PromptsegError: malformed pairs.
    """
    from ..errors import PromptsegError

    if not text:
        return None
    names = {}
    for part in text.split(","):
        value, sep, name = part.partition("=")
        if not sep or not value.strip().isdigit() or not name.strip():
            raise PromptsegError(f"--names {text!r}: expected LABEL=NAME pairs separated by commas, e.g. 1=GTV,2=Heart")
        names[int(value)] = name.strip()
    return names


def run(args) -> int:
    from ..io.dicom.convert import convert

    result = convert(
        args.input, args.output, reference=args.reference, series_uid=args.series, format=args.format,
        names=parse_names(args.names), seg_type=args.seg_type.upper(), modality=args.modality,
        body_part=args.body_part,
    )
    if result.kind == "dicom":
        print(f"wrote {len(result.files)} DICOM images to {result.output}")
        return 0
    for roi in result.rois:
        print(f"label {roi.label}: {roi.name}")
        for note in roi.notes:
            print(f"  note: {note}")
    print(f"wrote {result.output}")
    return 0
