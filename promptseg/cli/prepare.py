"""``promptseg prepare``: a labelled dataset -> training samples at the model's input size."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "prepare", help="turn a labelled dataset into training samples",
        description="Volumes + label maps -> one 2D sample per object and slice, resized to the model's input, "
        "with MedSAM's clean-up (small 3D / 2D objects dropped). See docs/training.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  promptseg prepare examples/datasets/radiomics.csv -o prepared/ "
        "--min-object-voxels 100 --min-object-pixels 10 --empty-fraction 0.5",
    )
    p.add_argument("dataset", help="images/ + labels/ folder, CSV/JSON manifest, or a folder of MedSAM .npz")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--model", default="litemedsam", help="backend whose input size the samples follow")
    p.add_argument("--labels", metavar="1,2,...", help="keep only these label values")
    p.add_argument("--rename", metavar="OLD:NEW,...", help="map label values, e.g. 2:1,3:1 merges 2 and 3 into 1")
    p.add_argument("--min-object-voxels", type=int, default=1000, help="drop 3D components smaller than this (default 1000)")
    p.add_argument("--min-object-pixels", type=int, default=100, help="drop 2D components smaller than this (default 100)")
    p.add_argument("--empty-fraction", type=float, default=0.0,
                   help="also keep empty slices, as this share of the labelled slices (default 0)")
    p.add_argument("--modality", choices=["ct", "mr", "other"], help="override the detected modality")
    p.add_argument("--window", metavar="L,W|PRESET", help="CT window (default soft tissue 40,400)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def _int_list(text):
    from ..errors import PromptsegError

    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise PromptsegError(f"--labels {text!r}: expected comma-separated integers") from None


def _rename(text):
    from ..errors import PromptsegError

    out = {}
    for part in filter(None, (t.strip() for t in text.split(","))):
        old, sep, new = part.partition(":")
        if not sep or not old.strip().isdigit() or not new.strip().isdigit():
            raise PromptsegError(f"--rename {text!r}: expected OLD:NEW pairs such as 2:1,3:1")
        out[int(old)] = int(new)
    return out


def run(args) -> int:
    from ..intensity import resolve_window
    from ..training.prepare import PrepareSettings, prepare, read_manifest

    settings = PrepareSettings(
        labels=_int_list(args.labels) if args.labels else None,
        rename=_rename(args.rename) if args.rename else {},
        min_object_voxels=args.min_object_voxels, min_object_pixels=args.min_object_pixels,
        empty_fraction=args.empty_fraction, modality=args.modality,
        window=resolve_window(args.window) if args.window else None, seed=args.seed,
    )
    out = prepare(args.dataset, args.output, model=args.model, settings=settings)
    info, _ = read_manifest(out)
    c = info["counts"]
    print(f"{c['cases']} cases, {c['slices']} slices, {c['samples']} samples ({c['empty_samples']} empty) -> {out}")
    return 0
