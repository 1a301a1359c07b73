"""The box-prompt decoder in a fast runtime: prompt encoder + mask decoder + up-sampling to the slice.

A re-prompt on an already embedded slice (a viewer dragging a box, each step of
3D chaining) runs only this part. :class:`BoxDecoderGraph` wraps a SAM-style
``prompt_encoder`` / ``mask_decoder`` pair into one graph

``(features (1, C, h, w) f32, box (1, 4) f32 on the model grid, crop (2,) i64 = (h', w'),
size (2,) i64 = (H, W)) -> (logits (1, 1, H, W) f32, iou (1, 1) f32)``

-- single-mask output, the low-resolution logits cropped to the resized slice
area ``[:h', :w']`` and bilinearly up-sampled (``align_corners=False``) to the
slice's ``H x W`` -- exported once to ONNX (dynamic crop and slice size) and
compiled by OpenVINO with its model cache. Prompts with points keep the
eager path (they are rare: LiteMedSAM was trained on boxes).

Precision: fp32, or bf16 where the CPU runs it natively and the decoder's own
gate passes (:func:`gated_box_decoder`): the same real lesion slices and mean-Dice
bar as the encoder's gate (:mod:`.precision`), the encoder's features held fixed,
so the decoder is judged on its own. On a Sapphire Rapids core the bf16 decoder
ran 2.0x faster than fp32 at mask Dice 0.996 on the bundled CT (docs/speed.md).
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from ..io.atomic import atomic_path
from .base import is_tensor
from .onnx_export import CACHE_FORMAT, ONNX_OPSET

if TYPE_CHECKING:  # an export and the eager graph need torch; a cached decoder runs without it
    import torch

    from .decoder_graph import BoxDecoderGraph

logger = logging.getLogger(__name__)

INPUT_NAMES = ["features", "box", "crop", "size"]
OUTPUT_NAMES = ["logits", "iou"]


def __getattr__(name: str):
    if name == "BoxDecoderGraph":  # defined apart: subclassing torch.nn.Module imports torch
        from .decoder_graph import BoxDecoderGraph

        return BoxDecoderGraph
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def decode_eager(graph: BoxDecoderGraph, features, box: np.ndarray, crop, size) -> tuple[np.ndarray, float]:
    """The graph in eager PyTorch: ``(H, W)`` float32 logits and the predicted IoU (``features``: tensor or numpy)."""
    import torch

    with torch.inference_mode():
        logits, iou = graph(torch.as_tensor(features), torch.as_tensor(box, dtype=torch.float32).view(1, 4),
                            torch.as_tensor(crop), torch.as_tensor(size))
    return logits[0, 0].float().cpu().numpy(), float(iou[0, 0])


def export_decoder(graph: BoxDecoderGraph, feature_shape: tuple[int, ...], path: Path) -> None:
    """Export ``graph`` to the ONNX file ``path`` (TorchScript-based exporter, crop and size dynamic)."""
    import torch

    features = torch.zeros(feature_shape, dtype=torch.float32)
    box = torch.tensor([[10.0, 10.0, 100.0, 100.0]])
    crop = torch.tensor([200, 256], dtype=torch.int64)
    size = torch.tensor([300, 384], dtype=torch.int64)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph.eval(), (features, box, crop, size), str(path), dynamo=False, opset_version=ONNX_OPSET,
            input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
            dynamic_axes={"logits": {2: "height", 3: "width"}}, do_constant_folding=True,
        )


class ExportedBoxDecoder:
    """The exported box decoder on OpenVINO: ``decoder(features, box, crop, size) -> ((H, W) logits, iou)``.

    ``features`` is ``(1, C, h, w)`` float32 (numpy or a CPU tensor), ``box`` the
    ``(x0, y0, x1, y1)`` on the model grid, ``crop`` ``(h', w')`` and ``size``
    ``(H, W)`` pixels. Built by :func:`build_box_decoder`.
    """

    name = "openvino"

    def __init__(self, compiled, precision: str = "fp32") -> None:
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()
        self.precision = precision
        #: why this precision (set by :func:`gated_box_decoder`)
        self.precision_reason = f"{precision} requested"

    def __call__(self, features, box, crop, size) -> tuple[np.ndarray, float]:
        if is_tensor(features):
            features = features.detach().cpu().numpy()
        inputs = {
            0: np.ascontiguousarray(features, dtype=np.float32),
            1: np.asarray(box, dtype=np.float32).reshape(1, 4),
            2: np.asarray(crop, dtype=np.int64).reshape(2),
            3: np.asarray(size, dtype=np.int64).reshape(2),
        }
        with self._lock:
            self._request.infer(inputs)
            logits = self._request.get_output_tensor(0).data[0, 0].copy()
            iou = float(self._request.get_output_tensor(1).data.reshape(-1)[0])
        return logits, iou


def _graph(net) -> BoxDecoderGraph:
    from .decoder_graph import BoxDecoderGraph
    from .onnx_export import resolve_module

    module = resolve_module(net)
    return BoxDecoderGraph(module.prompt_encoder, module.mask_decoder).eval()


def _stem(cache_key: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", cache_key)[:80]
    full = f"{cache_key}|decoder|opset{ONNX_OPSET}|format{CACHE_FORMAT}"
    return f"decoder-{readable}-{hashlib.sha256(full.encode()).hexdigest()[:12]}"


def build_box_decoder(
    net,
    feature_shape: tuple[int, ...],
    cache_key: Optional[str] = None,
    cache_dir: Optional[Path] = None,
    num_threads: Optional[int] = None,
    precision: str = "fp32",
) -> ExportedBoxDecoder:
    """Export (once per ``cache_key``) and compile the box decoder on OpenVINO's CPU plugin.

    Args:
        net: a SAM-style module with ``prompt_encoder`` and ``mask_decoder`` (eval mode,
            CPU), or a zero-argument function returning it, called only when the
            decoder must be exported (a warm start never builds the network).
        feature_shape: the encoder output shape, e.g. ``(1, 256, 64, 64)``.
        cache_key: names the cached ONNX file in ``cache_dir`` (a digest of the weights);
            None: export to a temporary folder.
        cache_dir: default :func:`~promptseg.runtimes.onnx_export.default_cache_dir`.
        num_threads: CPU threads (default all available cores).
        precision: ``"fp32"`` or ``"bf16"`` (OpenVINO's inference precision; unchecked
            here: :func:`gated_box_decoder` judges it).

    Raises:
        ImportError: OpenVINO or onnx is not installed; RuntimeError: export or compile failed.
    """
    from . import openvino_backend
    from .base import default_num_threads
    from .onnx_export import default_cache_dir

    threads = num_threads or default_num_threads()
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"the box decoder runs in fp32 or bf16, not {precision!r}")
    config = openvino_backend.compile_config(threads, precision,
                                             folder / "openvino" / precision if cache_key else None)
    with tempfile.TemporaryDirectory(prefix="promptseg-decoder-") as tmp:
        if cache_key is not None:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{_stem(cache_key)}.onnx"
            if not path.exists():
                start = time.perf_counter()
                with atomic_path(path) as staged:
                    export_decoder(_graph(net), feature_shape, staged)
                logger.info("exported the box decoder to ONNX in %.1f s (%s)", time.perf_counter() - start, path)
        else:
            path = Path(tmp) / "decoder.onnx"
            export_decoder(_graph(net), feature_shape, path)
        compiled = openvino_backend.core().compile_model(str(path), "CPU", config)
    return ExportedBoxDecoder(compiled, precision)


#: one decoder call of the gate: ``(features (1, C, h, w) f32, box on the model grid, crop, size)``
GateInput = tuple


def gated_box_decoder(
    build: Callable[[str], ExportedBoxDecoder],
    gate_inputs: Callable[[], list[GateInput]],
    key: Optional[dict] = None,
    cache_dir: Optional[Path] = None,
    rounds: int = 3,
) -> ExportedBoxDecoder:
    """The box decoder at bf16 when it agrees with fp32 and is faster, else at fp32.

    Call it only where bf16 is native (:func:`.cpu.native_precisions`). The verdict
    follows :func:`.precision.decide`'s rule for the encoder: bf16's masks on the gate
    inputs (the real lesion slices with their expert boxes, encoded once by the
    model's encoder) must agree with fp32's at mean Dice >=
    :data:`~.precision.GATE_MIN_MEAN_DICE`, and bf16 must be at least
    :data:`~.precision.MIN_SPEEDUP` times faster (the faster of ``rounds`` interleaved
    passes over the inputs). The verdict is cached in ``cache_dir`` under ``key``.

    Args:
        build: ``build(precision) -> decoder``; a failing bf16 build keeps fp32.
        gate_inputs: the inputs to judge on (called only when there is no cached verdict).
        key: identifies the model, CPU and runtime versions (None: no cache).
        cache_dir: where verdicts are cached.
        rounds: timed passes per precision.

    Returns:
        the chosen decoder; its ``precision_reason`` says why.
    """
    from . import precision as prec

    path = prec.verdict_path(cache_dir, key) if key is not None and cache_dir is not None else None
    verdict = prec.load_verdict(path, key) if path is not None else None
    if verdict is not None:
        decoder = build(verdict.precision)
        decoder.precision_reason = verdict.reason
        logger.info("box decoder precision %s (cached verdict: %s)", verdict.precision, verdict.reason)
        return decoder
    logger.info("judging the box decoder in bf16 against fp32 on real slices (once per model, CPU and runtime "
                "version)")
    fp32 = build("fp32")
    try:
        bf16 = build("bf16")
    except Exception as exc:  # OpenVINO or the CPU refused it: fp32 is always there
        fp32.precision_reason = f"fp32: bf16 could not be built ({type(exc).__name__}: {str(exc)[:120]})"
        return fp32
    inputs = gate_inputs()
    times = {"fp32": [], "bf16": []}
    masks: dict[str, list[np.ndarray]] = {}
    for _ in range(max(1, rounds)):  # interleaved, so a noisy host slows both alike
        for name, decoder in (("fp32", fp32), ("bf16", bf16)):
            start = time.perf_counter()
            masks[name] = [decoder(*item)[0] > 0 for item in inputs]
            times[name].append(time.perf_counter() - start)
    seconds = {name: min(values) for name, values in times.items()}
    trial = prec.Trial("bf16", seconds["bf16"], [prec.mask_dice(a, b) for a, b in zip(masks["fp32"], masks["bf16"])])
    speedup = seconds["fp32"] / max(seconds["bf16"], 1e-9)
    if not trial.passed:
        chosen, reason = "fp32", f"bf16 failed the gate (mean Dice {trial.mean_dice:.4f} < {prec.GATE_MIN_MEAN_DICE})"
    elif speedup < prec.MIN_SPEEDUP:
        chosen, reason = "fp32", f"bf16 passed the gate but is only {speedup:.2f}x the speed of fp32"
    else:
        chosen, reason = "bf16", (f"bf16 passes the gate (mean Dice {trial.mean_dice:.4f}, min {trial.min_dice:.4f} vs "
                                  f"fp32 on {len(trial.dice)} real slices) and is {speedup:.2f}x the speed of fp32")
    verdict = prec.Verdict(chosen, reason, {"fp32": prec.Trial("fp32", seconds["fp32"]), "bf16": trial})
    logger.info("box decoder precision %s: %s", chosen, reason)
    if path is not None:
        prec.save_verdict(path, key, verdict)
    decoder = bf16 if chosen == "bf16" else fp32
    decoder.precision_reason = reason
    return decoder
