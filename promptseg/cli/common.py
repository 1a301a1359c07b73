"""Pieces shared by the subcommands."""

from __future__ import annotations

import argparse


def add_image_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="NIfTI, NRRD, MHA/MHD, DICOM folder or file, MedSAM .npz, PNG/JPG/TIFF")
    p.add_argument("--series", metavar="UID", help="DICOM SeriesInstanceUID, when a folder holds several series")


def load_image(args):
    from ..io import load_volume

    return load_volume(args.image, series_uid=args.series)


def add_model_args(p: argparse.ArgumentParser, model_help: str, checkpoint_help: str,
                   default_model: str = "litemedsam"):
    """The ``model`` option group: ``--model``, ``--checkpoint``, ``--device``, ``--runtime``, ``--precision``."""
    md = p.add_argument_group("model")
    md.add_argument("--model", default=default_model, help=model_help)
    md.add_argument("--checkpoint", metavar="PATH", help=checkpoint_help)
    md.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    md.add_argument("--runtime", default="auto", help="image-encoder runtime: auto, torch, torch-jit, onnxruntime, openvino")
    md.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16", "int8"],
                    help="image-encoder precision (default $PROMPTSEG_PRECISION, else auto: bf16/int8 only where the "
                         "CPU runs them natively and their masks agree with fp32 on real slices; -v says what was "
                         "chosen and why; docs/speed.md)")
    return md


def add_intensity_args(p: argparse.ArgumentParser) -> None:
    """The ``intensity`` option group: ``--window`` or ``--modality``."""
    it = p.add_argument_group("intensity")
    ix = it.add_mutually_exclusive_group()
    ix.add_argument("--window", metavar="L,W|PRESET",
                    help="CT window level,width or a preset: soft-tissue (default for CT), lung, brain, bone")
    ix.add_argument("--modality", choices=["ct", "mr", "other"], help="override the detected modality")
