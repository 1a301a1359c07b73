"""The fuzz targets: which promptseg call reads an input, and how its result is judged.

Each target runs inside the worker process (:mod:`tests.fuzz.worker`) and
returns ``None`` when the input was accepted and is sound, or a string saying
why the accepted result is garbage (see :mod:`tests.fuzz.oracle`). Typed
errors (:class:`promptseg.errors.PromptsegError`) propagate to the worker,
which classifies them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

#: image shape (z, y, x) the prompt documents are validated against (the seeds' crop)
PROMPT_IMAGE_SHAPE = (5, 20, 24)


def _image(path: Path, labels: bool) -> Optional[str]:
    from promptseg.io import load_labels, load_volume

    from .oracle import file_problem

    volume = load_labels(path) if labels else load_volume(path)
    if labels and volume.array.dtype.kind != "u":
        return f"labels of dtype {volume.array.dtype}"
    return file_problem(path, volume, labels)


def _dicom_series(path: Path, labels: bool) -> Optional[str]:
    from promptseg.io import load_volume

    from .oracle import dicom_series_problem

    return dicom_series_problem(path.parent, load_volume(path.parent))


def _rtstruct(path: Path, labels: bool) -> Optional[str]:
    """An RTSTRUCT (or whatever the mutation made of it) read onto the unmutated series in ``ref/``."""
    from promptseg.io import load_volume
    from promptseg.io.dicom import list_rois, read_dicom_labels

    from .oracle import roi_labels_problem

    reference = load_volume(path.parent / "ref" if (path.parent / "ref").is_dir() else path.parent)
    rois = list_rois(path) if labels else None
    result = read_dicom_labels(path, reference)
    return roi_labels_problem(path, result, reference, rois)


def _http(path: Path, labels: bool) -> Optional[str]:
    from .http_api import call

    return call(path, labels)


def _node(path: Path, labels: bool) -> Optional[str]:
    from .dicom_node import call

    return call(path, labels)


def _prompts(path: Path, labels: bool) -> Optional[str]:
    from promptseg.prompts import load_prompt_file, validate

    from .oracle import prompts_problem

    objects = load_prompt_file(path, image_shape=PROMPT_IMAGE_SHAPE[1:])
    for obj in objects:
        validate(obj, PROMPT_IMAGE_SHAPE)
    return prompts_problem(objects, PROMPT_IMAGE_SHAPE)


def _config(path: Path, labels: bool) -> Optional[str]:
    from promptseg.training.config import load_config

    cfg = load_config(path)
    if cfg.train.epochs < 1 or cfg.train.batch_size < 1:
        return f"epochs {cfg.train.epochs}, batch size {cfg.train.batch_size}"
    return None


@dataclass(frozen=True)
class Target:
    """A fuzz target: its mutation style and the call that reads one input."""

    kind: str  # "binary", "text-header", "document", "request" or "file-set" (see tests.fuzz.mutate.Mutator)
    call: Callable[[Path, bool], Optional[str]]
    #: also read inputs as label maps (every other input; for RTSTRUCT: also list its ROIs)
    labels: bool = False
    #: mutate only the input's first file (the others are fixed companions)
    mutate_first_only: bool = False
    #: what the worker's 3 GiB cap limits: "address-space", or "data" for targets that import torch
    memory_limit: str = "address-space"


TARGETS: dict[str, Target] = {
    "nifti": Target("binary", _image, labels=True),
    "nrrd": Target("text-header", _image, labels=True),
    "metaimage": Target("text-header", _image),
    "npz": Target("binary", _image, labels=True),
    "raster": Target("binary", _image, labels=True),
    "dicom": Target("binary", _image),
    "dicom-series": Target("file-set", _dicom_series),
    "rtstruct": Target("binary", _rtstruct, labels=True, mutate_first_only=True),
    "http": Target("request", _http, memory_limit="data"),
    "node": Target("file-set", _node, memory_limit="data"),
    "prompts": Target("document", _prompts),
    "config": Target("document", _config),
}
