"""Pieces shared by the subcommands."""

from __future__ import annotations

import argparse


def add_image_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="NIfTI, NRRD, MHA/MHD, DICOM folder or file, MedSAM .npz, PNG/JPG/TIFF")
    p.add_argument("--series", metavar="UID", help="DICOM SeriesInstanceUID, when a folder holds several series")


def load_image(args):
    from ..io import load_volume

    return load_volume(args.image, series_uid=args.series)
