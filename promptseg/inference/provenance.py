"""Where a segmentation came from: the JSON sidecar written next to every output.

``tumour.nii.gz`` gets ``tumour.provenance.json`` (:func:`sidecar_path`)::

    {
      "promptseg": "0.1.0",                      # version that wrote it
      "created": "2025-01-31T10:12:03+01:00",
      "input": {"path": ..., "sha256": ..., "size_xyz": [...], "spacing": [...], "origin": [...],
                "direction": [...], "series_uid": ...},
      "outputs": {"labels": "tumour.nii.gz", "probabilities": [...]},
      "model": {"name": "litemedsam", "checkpoint": ..., "weights_sha256_16": "…", "device": "cpu",
                "runtime": "openvino", "precision": "fp32", "precision_reason": "…"},
      "intensity": {"modality": "mr", "modality_from": "guessed", "rule": "percentiles", "lower": …, "upper": …},
      "settings": {"mode": "3d", "propagation": "chain", "stop_rule": {...}},
      "prompts": [ {... prompt file form, voxel indices ...} ],
      "prompt_source": "…",                      # e.g. a Slicer markups file, a label map
      "objects": [{"label": 1, "name": …, "slices": [8, 10], "voxels": 260, "volume_ml": 1.03,
                   "stops": {"up": {"reason": "BEYOND_REACH", "slice": 11, "text": "slice 11: …"}}}],
      "seconds": 4.2
    }

``reason`` is :class:`~promptseg.stops.StopReason`'s name (for programs), ``text``
is ``str(stop)`` (for people).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..intensity import IntensityMapping, resolve_modality, resolve_window
from ..io.common import format_suffix
from ..volume import Volume

#: what :func:`sidecar_path` appends to an output's name (without its format suffix)
SIDECAR_SUFFIX = ".provenance.json"


def sidecar_path(output) -> Path:
    """``out/tumour.nii.gz`` -> ``out/tumour.provenance.json`` (``rs.dcm`` -> ``rs.provenance.json``)."""
    output = Path(output)
    suffix = format_suffix(output) or output.suffix
    stem = output.name[: len(output.name) - len(suffix)] if suffix else output.name
    return output.with_name(stem + SIDECAR_SUFFIX)


def model_record(segmenter) -> dict:
    """Name, weights (path and SHA-256 prefix), device, and the encoder runtime and precision that ran.

    The runtime is known once the encoder was built (after the first slice was
    encoded); before that, ``runtime`` is the one requested.
    """
    encoder = getattr(segmenter, "__dict__", {}).get("encoder")
    checkpoint = getattr(segmenter, "checkpoint", None)
    record: dict[str, Any] = {
        "name": getattr(segmenter, "name", type(segmenter).__name__),
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "weights_sha256_16": getattr(segmenter, "weights_digest", None),
        # device_name where a backend has it: reading LiteMedSAM's torch.device would import torch
        "device": getattr(segmenter, "device_name", None) or str(getattr(segmenter, "device", "cpu")),
        "runtime": getattr(encoder, "name", None) or getattr(segmenter, "runtime_kind", None),
        "precision": getattr(encoder, "precision", None) or getattr(segmenter, "precision", None),
    }
    reason = getattr(encoder, "precision_reason", "")
    if reason:
        record["precision_reason"] = reason
    return record


def intensity_record(volume: Volume, modality: Optional[str] = None, window=None,
                     mapping: Optional[IntensityMapping] = None) -> dict:
    """How intensities became the model's uint8: the modality rule used and where it came from, and the
    window or percentile bounds.

    A guessed modality is read off ``mapping`` (the guess itself scans the whole volume); with an
    explicit window and nothing saying the modality, ``modality`` is None (the window decides).
    """
    resolved = resolve_window(window)
    if modality not in (None, "auto") or volume.modality:
        name, source = resolve_modality(volume, modality), ("option" if modality not in (None, "auto") else "file")
    elif mapping is not None or resolved is not None:
        source = "guessed"
        if resolved is not None:
            name = None
        elif mapping.lower is None:
            name = "other"
        else:
            name = "mr" if mapping.zero_nonpositive else "ct"
    else:
        name, source = resolve_modality(volume), "guessed"
    record: dict[str, Any] = {"modality": name, "modality_from": source}
    if resolved is not None:
        record.update(rule="window", level=resolved[0], width=resolved[1])
    elif mapping is not None and mapping.lower is None:
        record.update(rule="uint8 as stored")
    elif mapping is not None:
        rule = "percentiles of voxels > 0" if mapping.zero_nonpositive else "default CT window"
        record.update(rule=rule, lower=float(mapping.lower), upper=float(mapping.upper))
    return record


def describe_intensity(record: dict) -> str:
    """One line for ``-v``: ``MR (guessed from intensities), percentiles of voxels > 0 -> [12, 3400]``."""
    where = {"file": "from the file", "guessed": "guessed from intensities", "option": "--modality"}
    if record["modality"]:
        text = f"{record['modality'].upper()} ({where.get(record['modality_from'], record['modality_from'])})"
    else:
        text = "modality not used"
    if "level" in record:
        text += f", window L{record['level']:g}/W{record['width']:g}"
    elif "lower" in record:
        text += f", {record['rule']} -> [{record['lower']:.6g}, {record['upper']:.6g}] to 0-255"
    elif "rule" in record:
        text += f", {record['rule']}"
    return text


def volume_record(volume: Volume, path=None) -> dict:
    """The input: path, grid and DICOM series (:func:`provenance_document` adds the file's SHA-256)."""
    source = path if path is not None else volume.metadata.get("source")
    record: dict[str, Any] = {"path": str(source) if source is not None else None}
    z, y, x = volume.shape
    record.update(size_xyz=[x, y, z], spacing=[float(v) for v in volume.spacing],
                  origin=[float(v) for v in volume.origin],
                  direction=[float(v) for v in np.asarray(volume.direction).ravel()])
    if volume.metadata.get("series_uid"):
        record["series_uid"] = volume.metadata["series_uid"]
    return record


def objects_record(result) -> list[dict]:
    """Per object: label, name, slices, voxels, ml, and why each direction stopped."""
    out = []
    for obj in result.objects:
        label = obj.prompt.label
        voxels = int(np.count_nonzero(result.labels.array == label))
        zs = obj.slices
        out.append({
            "label": label,
            "name": obj.prompt.name,
            "slices": [zs[0], zs[-1]] if zs else None,
            "voxels": voxels,
            "volume_ml": round(voxels * result.labels.voxel_volume_ml, 6),
            "stops": {direction: {"reason": stop.reason.name, "slice": stop.slice, "text": str(stop)}
                      for direction, stop in obj.stops.items()},
        })
    return out


def provenance_document(result, *, outputs: dict, extra: Optional[dict] = None) -> dict:
    """The sidecar of ``result`` (see the module docstring): :attr:`SegmentationResult.provenance`
    (filled by :func:`promptseg.segment`), the outputs written, and per-object outcomes."""
    from .. import __version__
    from ..prompts import prompt_to_dict

    base = dict(result.provenance or {})
    doc: dict[str, Any] = {
        "promptseg": __version__,
        "created": dt.datetime.now().astimezone().replace(microsecond=0).isoformat(),
    }
    doc.update(base)
    source = (doc.get("input") or {}).get("path")
    if source and "sha256" not in doc["input"] and Path(source).is_file():
        from ..io.digest import sha256_file

        doc["input"] = {**doc["input"], "sha256": sha256_file(source)}
    doc["outputs"] = {key: (str(value) if isinstance(value, (str, Path)) else [str(v) for v in value])
                      for key, value in outputs.items()}
    doc["prompts"] = [prompt_to_dict(obj.prompt) for obj in result.objects]
    doc["objects"] = objects_record(result)
    if extra:
        doc.update(extra)
    return doc


def write_provenance(path, document: dict) -> Path:
    """Write a provenance document as indented JSON, atomically."""
    from ..io.jsonfile import write_json

    return write_json(path, document)
