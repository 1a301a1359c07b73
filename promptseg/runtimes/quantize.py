"""int8 encoder: NNCF post-training quantisation of the exported encoder, calibrated on real slices.

The fp32 ONNX export (:mod:`.onnx_export`) is read by OpenVINO and quantised by
``nncf.quantize`` (transformer preset, so attention and LayerNorm stay accurate),
with the encoder inputs of real lesion-free slices as calibration data
(:func:`.real_slices.calibration_slices`). The result is an OpenVINO IR
(``.xml`` + ``.bin``) kept next to the ONNX file under the same stem with an
``-int8-n<count>`` suffix, and a ``.json`` marker written last holding both
files' SHA-256: an entry without a valid marker is quantised again.
Quantising costs minutes (two statistics passes over the calibration slices), once.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..io.atomic import atomic_path
from ..io.digest import sha256_file

logger = logging.getLogger(__name__)

#: calibration slices used when the caller does not say
CALIBRATION_SLICES = 12


def quantize_to(onnx_path: Path, calibration: list[np.ndarray], xml_path: Path) -> None:
    """Quantise the ONNX model to int8 and save the IR as ``xml_path`` (+ ``.bin`` beside it)."""
    import nncf
    import openvino as ov

    nncf.set_log_level(logging.ERROR)  # no progress bars on a user's terminal; promptseg logs the outcome
    model = ov.Core().read_model(str(onnx_path))
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = nncf.quantize(
            model,
            nncf.Dataset([np.ascontiguousarray(x, dtype=np.float32) for x in calibration]),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(calibration),
        )
    ov.save_model(quantized, str(xml_path), compress_to_fp16=False)
    logger.info("quantised the image encoder to int8 with NNCF on %d real slices in %.0f s",
                len(calibration), time.perf_counter() - start)


def _marker(xml_path: Path) -> Path:
    return xml_path.with_suffix(".json")


def _valid(xml_path: Path) -> bool:
    try:
        recorded = json.loads(_marker(xml_path).read_text(encoding="utf-8"))
        return (recorded.get("xml") == sha256_file(xml_path)
                and recorded.get("bin") == sha256_file(xml_path.with_suffix(".bin")))
    except (OSError, ValueError, AttributeError):
        return False


def int8_model(
    onnx_path: Path,
    calibration: Callable[[int], list[np.ndarray]],
    cache_dir: Optional[Path],
    count: int = CALIBRATION_SLICES,
) -> tuple[Path, Optional[tempfile.TemporaryDirectory]]:
    """The int8 IR of the encoder in ``onnx_path``, quantised at most once per cache entry.

    Args:
        onnx_path: the fp32 export; a cached one (in ``cache_dir``) names the int8 entry.
        calibration: ``calibration(count)`` -> encoder inputs of real slices.
        cache_dir: where the IR is kept; None: a temporary folder the caller removes.
        count: calibration slices.

    Returns:
        the ``.xml`` path and the temporary folder holding it (None when cached).
    """
    if cache_dir is not None and onnx_path.parent == cache_dir:
        xml_path = cache_dir / f"{onnx_path.stem}-int8-n{count}.xml"
        if xml_path.exists() and _valid(xml_path):
            return xml_path, None
        for stale in (_marker(xml_path), xml_path, xml_path.with_suffix(".bin")):
            stale.unlink(missing_ok=True)
        with tempfile.TemporaryDirectory(prefix=".int8-", dir=cache_dir) as work:
            staged = Path(work) / "model.xml"
            quantize_to(onnx_path, calibration(count), staged)
            os.replace(staged.with_suffix(".bin"), xml_path.with_suffix(".bin"))
            os.replace(staged, xml_path)
        with atomic_path(_marker(xml_path)) as tmp:  # last: the entry is complete only now
            digests = {"xml": sha256_file(xml_path), "bin": sha256_file(xml_path.with_suffix(".bin"))}
            Path(tmp).write_text(json.dumps(digests) + "\n", encoding="utf-8")
        return xml_path, None
    work = tempfile.TemporaryDirectory(prefix="promptseg-int8-")
    xml_path = Path(work.name) / "encoder-int8.xml"
    try:
        quantize_to(onnx_path, calibration(count), xml_path)
    except BaseException:
        shutil.rmtree(work.name, ignore_errors=True)
        raise
    return xml_path, work
