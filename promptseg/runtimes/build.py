"""Choose and build an encoder runtime: :func:`build_encoder_runtime`."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from ..errors import ImageWriteError, ModelError
from ..io.atomic import atomic_path
from . import cpu, onnx_export, onnxruntime_backend, openvino_backend, precision as prec, quantize
from .base import EncoderRuntime, PerSliceRuntime, default_num_threads, one_line, verify

if TYPE_CHECKING:  # the torch runtimes import it; a cached OpenVINO / ONNX Runtime build never does
    import torch

logger = logging.getLogger(__name__)

#: every runtime name :func:`build_encoder_runtime` accepts, besides ``"auto"``
KINDS = ("openvino", "onnxruntime", "torch-jit", "torch")
#: the order ``"auto"`` tries on CPU: fastest measured first (docs/benchmarks.md)
CPU_AUTO_ORDER = ("openvino", "onnxruntime", "torch-jit", "torch")
#: precisions each runtime can run (``"torch"``: bf16 / fp16 through ``torch.autocast``)
SUPPORTED_PRECISIONS = {
    "openvino": ("fp32", "bf16", "int8"),
    "onnxruntime": ("fp32",),
    "torch-jit": ("fp32",),
    "torch": ("fp32", "bf16", "fp16"),
}

#: exported runtimes: ``load(model_path, num_threads, precision=, cache_dir=) -> run_one``
LOADERS: dict[str, Callable[..., Callable[[np.ndarray], np.ndarray]]] = {
    "onnxruntime": onnxruntime_backend.load,
    "openvino": openvino_backend.load,
}


def try_import(module: str):
    """The module's import spec, or None when it is not installed (tests patch this).

    Found without importing it: onnx alone takes a second to import, and a warm
    start with cached exports never needs it. A package that is installed but fails
    to load fails at build time instead, and ``"auto"`` moves on.
    """
    try:
        return importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None


def missing_packages(kind: str, precision: str = "fp32") -> list[str]:
    """Packages runtime ``kind`` needs that do not import here (the ONNX export needs ``onnx`` too)."""
    needed = {"openvino": ["onnx", "openvino"], "onnxruntime": ["onnx", "onnxruntime"]}.get(kind, [])
    if precision == "int8":
        needed = needed + ["nncf"]
    return [name for name in needed if try_import(name) is None]


def available_runtimes() -> list[str]:
    """Runtimes whose packages import here, in the CPU preference order of ``"auto"``.

    ``"torch-jit"`` and ``"torch"`` are always listed. Being listed does not
    promise that the export / compile will succeed; ``"auto"`` falls back if not.
    """
    return [kind for kind in CPU_AUTO_ORDER if not missing_packages(kind)]


def device_type(device) -> str:
    """``"cpu"``, ``"cuda"``, ... of a ``torch.device`` or a device name (no torch import for a name)."""
    return getattr(device, "type", None) or str(device).split(":")[0]


def native_candidates(kind: str, device: str | torch.device) -> dict[str, str]:
    """Reduced precisions ``"auto"`` may try for runtime ``kind`` on ``device``, with the evidence."""
    if device_type(device) == "cuda" and kind == "torch":
        import torch

        if torch.cuda.is_bf16_supported():
            return {"bf16": f"CUDA device {torch.cuda.get_device_name(device)} supports bf16"}
        return {"fp16": f"CUDA device {torch.cuda.get_device_name(device)}"}
    if device_type(device) == "cpu" and kind == "openvino":
        return {p: why for p, why in cpu.native_precisions().items() if p in SUPPORTED_PRECISIONS[kind]}
    return {}


class _Builder:
    """Builds runtime ``kind`` at a given precision; owns the temporary files of one build call."""

    def __init__(self, encoder, input_size, device, num_threads, artefact, cache_dir, check):
        self._encoder, self.input_size, self.device = encoder, input_size, device
        self.num_threads = num_threads
        self.threads = num_threads if num_threads is not None else default_num_threads()
        self.artefact: onnx_export.OnnxArtefact = artefact
        self.cache_dir: Optional[Path] = cache_dir
        self.check: Optional[prec.RealSliceCheck] = check
        self._temporary = []

    @property
    def encoder(self) -> torch.nn.Module:
        return onnx_export.resolve_module(self._encoder)

    def build(self, kind: str, precision: str) -> EncoderRuntime:
        if precision not in SUPPORTED_PRECISIONS[kind]:
            raise ModelError(f"encoder runtime {kind!r} runs {', '.join(SUPPORTED_PRECISIONS[kind])}, not {precision}")
        if kind in ("torch", "torch-jit"):
            import torch

            from . import eager

            device = torch.device(self.device)
        if kind == "torch":
            runtime = eager.TorchRuntime(self.encoder, self.input_size, device, self.num_threads,
                                         autocast=None if precision == "fp32" else precision)
        elif kind == "torch-jit":
            runtime = eager.build_torch_jit(self.encoder, self.input_size, device, self.num_threads)
        else:
            runtime = self._exported(kind, precision)
        runtime.precision = precision
        return runtime

    def _exported(self, kind: str, precision: str) -> PerSliceRuntime:
        missing = missing_packages(kind, precision)
        if missing:
            raise ModelError(f"encoder runtime {kind!r} at {precision} needs the package(s) {', '.join(missing)} "
                             f"(pip install {' '.join(missing)})")
        onnx_path, probe_in, expected = self.artefact.get()
        model_path = onnx_path
        if precision == "int8":
            assert self.check is not None, "int8 needs real calibration slices"
            cached_export = self.artefact.cache_key is not None and onnx_path.parent == self.artefact.cache_dir
            model_path, tmp = quantize.int8_model(onnx_path, self.check.calibration_inputs,
                                                  self.artefact.cache_dir if cached_export else None)
            if tmp is not None:
                self._temporary.append(tmp)
        # one model-cache folder per precision: OpenVINO's cache key ignores INFERENCE_PRECISION_HINT,
        # and importing an f32 blob under a bf16 hint crashed the CPU plugin (OpenVINO 2026.4)
        compiled_cache = (self.cache_dir / "openvino" / precision
                          if self.cache_dir is not None and kind == "openvino" else None)
        run_one = LOADERS[kind](model_path, self.threads, precision=precision, cache_dir=compiled_cache)
        if precision == "fp32":
            self._verify_once(kind, run_one, probe_in, expected)
        else:
            run_one(probe_in)  # warm-up; the mask-level gate judges reduced precision
        return PerSliceRuntime(kind, run_one, self.input_size)

    def _verify_once(self, kind, run_one, probe_in, expected) -> None:
        """The probe check, run once per cached export, runtime version and CPU (a marker file records it)."""
        marker = None
        if self.cache_dir is not None and self.artefact.sha256 is not None:
            from importlib.metadata import version

            info = cpu.cpu_info()
            key = {"onnx": self.artefact.sha256, "runtime": kind, "version": version(kind),
                   "cpu": info.model, "flags": info.reported_flags(), "threads": self.threads}
            digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
            marker = self.cache_dir / f"verified-{digest}.json"
            if marker.is_file():
                logger.debug("%s fp32 passed the probe check before (%s)", kind, marker.name)
                return
        verify(kind, run_one, probe_in, expected)
        if marker is not None:
            try:
                with atomic_path(marker) as tmp:
                    Path(tmp).write_text(json.dumps(key) + "\n", encoding="utf-8")
            except (OSError, ImageWriteError) as exc:
                logger.warning("could not record the probe check in %s (%s)", marker, exc)

    def close(self) -> None:
        self.artefact.close()
        for tmp in self._temporary:
            tmp.cleanup()
        self._temporary = []


def _verdict_key(cache_key: str, kind: str, device: str | torch.device, requested: str, candidates) -> dict:
    from importlib.metadata import version

    info = cpu.cpu_info()
    versions = {"torch": version("torch")}  # read without importing torch (the exports came from this torch)
    if kind == "openvino":
        versions["openvino"] = openvino_backend.version()
        if "int8" in candidates:
            from importlib.metadata import PackageNotFoundError, version

            try:
                versions["nncf"] = version("nncf")
            except PackageNotFoundError:
                versions["nncf"] = None
    return {
        "model": cache_key,
        "cpu": info.model,
        "cpu_flags": info.reported_flags(),
        "device": str(device) if device_type(device) != "cpu" else "cpu",
        "runtime": kind,
        "versions": versions,
        "requested": requested,
        "candidates": sorted(candidates),
    }


def decoder_verdict_key(cache_key: str, candidates) -> dict:
    """What the box decoder's precision verdict depends on (model, CPU, OpenVINO), for its cache."""
    return {**_verdict_key(cache_key, "openvino", "cpu", "auto", candidates), "part": "box decoder"}


def _gated(builder: _Builder, kind: str, requested: str, candidates: dict[str, str], cache_key, cache_dir):
    """Build ``kind`` at the precision the gate allows (``requested`` "auto" or one reduced precision)."""
    key = _verdict_key(cache_key, kind, builder.device, requested, candidates) if cache_key else None
    path = prec.verdict_path(cache_dir, key) if key is not None and cache_dir is not None else None
    verdict = prec.load_verdict(path, key) if path is not None else None
    if verdict is not None:
        logger.info("encoder precision %s on %s (cached verdict: %s)", verdict.precision, kind, verdict.reason)
        runtime = builder.build(kind, verdict.precision)
    else:
        logger.info("judging encoder precision %s on %s against fp32 on real slices (once per model, CPU and "
                    "runtime version)", "/".join(candidates), kind)
        verdict, built = prec.decide(candidates, lambda p: builder.build(kind, p), builder.check,
                                     min_speedup=None if requested == "auto" else 0.0)
        logger.info("encoder precision %s on %s: %s", verdict.precision, kind, verdict.reason)
        if path is not None:
            prec.save_verdict(path, key, verdict)
        runtime = built[verdict.precision]
    runtime.precision_reason = verdict.reason
    return runtime, verdict


def _build_at(builder: _Builder, kind: str, precision: str, cache_key, cache_dir) -> EncoderRuntime:
    """One runtime kind at the requested precision (``"auto"`` or explicit)."""
    if precision == "fp32":
        runtime = builder.build(kind, "fp32")
        runtime.precision_reason = "fp32 requested"
        return runtime
    if precision == "auto":
        candidates = native_candidates(kind, builder.device)
        if not candidates:
            runtime = builder.build(kind, "fp32")
            runtime.precision_reason = ("fp32: no reduced precision runs natively here" if kind in ("openvino", "torch")
                                        else f"fp32: {kind} runs fp32 only")
            logger.info("encoder precision fp32 on %s (%s)", kind, runtime.precision_reason)
            return runtime
        if builder.check is None:
            runtime = builder.build(kind, "fp32")
            runtime.precision_reason = "fp32: this model has no real-slice accuracy check"
            return runtime
        return _gated(builder, kind, "auto", candidates, cache_key, cache_dir)[0]
    # an explicit reduced precision
    native = native_candidates(kind, builder.device)
    if device_type(builder.device) == "cpu" and precision not in cpu.native_precisions():
        logger.warning("%s is not native on this CPU (%s); it is emulated and likely slower than fp32",
                       precision, cpu.cpu_info().model)
    if builder.check is None:
        if precision == "int8":
            raise ModelError("int8 needs real calibration slices, which this model does not provide")
        logger.warning("%s is not checked against fp32: this model has no real-slice accuracy check", precision)
        runtime = builder.build(kind, precision)
        runtime.precision_reason = f"{precision} requested (unchecked)"
        return runtime
    runtime, verdict = _gated(builder, kind, precision, {precision: native.get(precision, "requested")},
                              cache_key, cache_dir)
    if verdict.precision != precision:
        trial = verdict.trials.get(precision)
        detail = trial.summary() if trial is not None else verdict.reason
        raise ModelError(f"{precision} is not accurate enough here: {detail} (the gate needs mean Dice >= "
                         f"{prec.GATE_MIN_MEAN_DICE}); use precision 'auto' or 'fp32'")
    return runtime


def build_encoder_runtime(
    encoder: torch.nn.Module | Callable[[], torch.nn.Module],
    input_size: int,
    kind: str = "auto",
    cache_key: Optional[str] = None,
    cache_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    num_threads: Optional[int] = None,
    precision: str = "fp32",
    check: Optional[prec.RealSliceCheck] = None,
) -> EncoderRuntime:
    """Wrap ``encoder`` (input ``(N, 3, input_size, input_size)``) into a fast runtime.

    Args:
        encoder: the image encoder in eval mode, on ``device``; maps
            ``(N, 3, S, S)`` float32 to ``(N, C, h, w)``. Or a zero-argument function
            returning it, called only when needed: a cached export on OpenVINO / ONNX
            Runtime never builds the PyTorch module.
        input_size: ``S``, the square input side the encoder expects.
        kind: ``"auto"`` or one of :data:`KINDS`. ``"auto"`` picks plain torch on
            non-CPU devices and, on CPU, the first of :data:`CPU_AUTO_ORDER` that
            builds and passes its check (warning once per skipped runtime).
        cache_key: names the exported ONNX file (and the precision verdict) in
            ``cache_dir`` so later builds skip the export, compile and gate; pass a
            digest of the weights and the input size. ``None``: export to a
            temporary folder, nothing cached.
        cache_dir: folder for cached exports, compiled models and verdicts (default
            :func:`~promptseg.runtimes.onnx_export.default_cache_dir`).
        device: where ``encoder`` lives; the ONNX runtimes need ``"cpu"``.
        num_threads: CPU threads (default: every available core for ONNX
            Runtime / OpenVINO, torch's own setting for the torch runtimes).
        precision: ``"fp32"`` (default), ``"auto"``, ``"bf16"``, ``"fp16"`` (torch
            runtime) or ``"int8"`` (OpenVINO); see :mod:`promptseg.runtimes.precision`.
            ``"auto"`` uses a reduced precision only where it runs natively and
            passes the mask-level gate, which needs ``check``.
        check: the model's :class:`~promptseg.runtimes.precision.RealSliceCheck`
            (gate masks and int8 calibration inputs on real slices).

    Returns:
        an :class:`~promptseg.runtimes.base.EncoderRuntime`: ``runtime(images)`` with
        ``images`` ``(N, 3, S, S)`` float32 returns ``(N, C, h, w)`` float32 (numpy);
        its ``precision`` and ``precision_reason`` say what runs and why.

    Raises:
        ModelError: unknown ``kind`` or ``precision``, a named runtime that cannot be
            built here, or a named reduced precision that fails the gate.
    """
    if kind != "auto" and kind not in KINDS:
        raise ModelError(f"unknown encoder runtime {kind!r}; choose 'auto' or one of {', '.join(KINDS)}")
    prec.check_precision(precision)
    if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
        raise ModelError(f"num_threads must be a positive integer, got {num_threads!r}")
    if str(device) == "cpu":
        device = "cpu"  # the name is enough until a torch runtime is built
    else:
        import torch

        device = torch.device(device)
    if kind in LOADERS and device_type(device) != "cpu":
        raise ModelError(f"encoder runtime {kind!r} runs on CPU only; use 'torch' or 'auto' on {device}")
    if kind == "auto":
        order = CPU_AUTO_ORDER if device_type(device) == "cpu" else ("torch",)
    else:
        order = (kind,)
    if precision not in ("auto", "fp32"):
        able = [k for k in order if precision in SUPPORTED_PRECISIONS[k]]
        if not able:
            raise ModelError(f"encoder runtime {kind!r} cannot run {precision}; runtimes that can: "
                             + ", ".join(k for k in KINDS if precision in SUPPORTED_PRECISIONS[k]))
        order = tuple(able)

    folder = Path(cache_dir).expanduser() if cache_dir is not None else onnx_export.default_cache_dir()
    artefact = onnx_export.OnnxArtefact(encoder, input_size, cache_key, folder)
    builder = _Builder(encoder, input_size, device, num_threads, artefact,
                       folder if cache_key is not None else None, check)
    try:
        for position, candidate in enumerate(order):
            try:
                return _build_at(builder, candidate, precision, cache_key, builder.cache_dir)
            except Exception as exc:
                if kind != "auto":
                    if isinstance(exc, ModelError):
                        raise
                    raise ModelError(f"encoder runtime {candidate!r} could not be built: {one_line(exc)}") from exc
                following = order[position + 1] if position + 1 < len(order) else None
                logger.warning("encoder runtime %r unavailable (%s); trying %r", candidate, one_line(exc), following)
        raise ModelError(f"no encoder runtime could run {precision}")
    finally:
        builder.close()
