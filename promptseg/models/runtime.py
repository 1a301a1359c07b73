"""Fast runtimes for the image encoder (the one expensive step of a slice).

The encoder of LiteMedSAM (TinyViT, ~75 GFLOP per 256 px slice) dominates the
cost of segmenting a slice; the prompt encoder and mask decoder are cheap.
:func:`build_encoder_runtime` wraps an encoder ``nn.Module`` into a callable
``(N, 3, S, S) float32 -> (N, C, h, w) float32`` (numpy in, numpy out) that runs
on one of these runtimes:

``"openvino"``
    the encoder exported to ONNX, compiled by OpenVINO's CPU plugin (fp32:
    ``INFERENCE_PRECISION_HINT=f32`` is forced, as OpenVINO would otherwise
    pick bf16 on CPUs that have it).
``"onnxruntime"``
    the same ONNX file on ONNX Runtime's CPU execution provider, all graph
    optimisations on, no busy-waiting threads between runs.
``"torch-jit"``
    ``torch.jit.trace`` + ``torch.jit.freeze`` (folds the BatchNorms) of a
    channels-last copy of the encoder on CPU.
``"torch"``
    plain eager PyTorch under ``torch.inference_mode()``; always available, and
    what ``"auto"`` uses on CUDA (and any non-CPU device).

``"auto"`` on CPU tries them in the order of :data:`CPU_AUTO_ORDER` (fastest
measured first) and falls back to the next one, with a one-line ``logging``
warning, when a package is missing or an export / compile / check fails.
Asking for one runtime by name raises :class:`~promptseg.errors.ModelError` if
it cannot be built. ``openvino`` is an optional package: without it ``"auto"``
uses ONNX Runtime.

Measured on the development machine (2 AMD EPYC cores, AVX2, no AVX-512, a
shared and noisy host; torch 2.14.1, onnxruntime 1.32.0, openvino 2026.4.1),
LiteMedSAM encoder, batch 1, real lung1 CT slices z = 24 and 33, median of 18
interleaved calls (``bench_encoders.py``; the speed-up range is over 3 runs):

=============  =======  ==================  ================  ===============
runtime        median   vs eager            max abs diff      build, warm
                                            (features ~0.9)   cache
=============  =======  ==================  ================  ===============
openvino       1.67 s   1.51x (1.49-1.55)   3.3e-6            2.7-3.7 s
onnxruntime    1.87 s   1.35x (1.22-1.46)   2.8e-6            2.0-3.1 s
torch-jit      2.08 s   1.21x (1.17-1.32)   2.8e-6            9.7-11.8 s
torch (eager)  2.52 s   1.00x               0                 0
=============  =======  ==================  ================  ===============

(relative error ``||x - eager|| / ||eager||`` <= 3.1e-6 for all; the decoded
tumour mask is identical. Build times include the probe check, i.e. one encoder
run. For reference: prompt encoder + mask decoder with a box, eager, 0.14-0.19
s; ``torch.compile`` reached 1.44x after a 116 s compile, so it is not offered.)

Exported runtimes (ONNX) are fp32 throughout; no fp16 / int8 / bf16 anywhere.

Export and cache
----------------
The ONNX file is written by the TorchScript-based exporter
(``torch.onnx.export(..., dynamo=False)``, opset :data:`ONNX_OPSET`): the
``dynamo=True`` exporter of torch 2.14 needs the extra ``onnxscript`` package.
The export takes 4-7 s once (9-12 s for the first build with an empty cache:
export, eager probe reference, load, check). With a ``cache_key`` (the caller passes a
digest of the weights and the input size) the file is kept in ``cache_dir``
(default ``$PROMPTSEG_CACHE_DIR`` or ``~/.cache/promptseg``) as
``encoder-<key>-<hash>.onnx`` next to ``encoder-<key>-<hash>.npz``, which holds the
file's SHA-256 and a probe: a fixed input and the eager-PyTorch output for it.
Both are written atomically (temporary file in the same folder, then
``os.replace``; the ``.npz`` last, so it marks a complete entry). On later
builds a missing/unreadable ``.npz`` or a hash mismatch means a corrupt entry:
it is deleted and exported again. Every built runtime is checked on the probe
(the check doubles as the warm-up run): a runtime whose output differs from
eager PyTorch by more than :data:`VERIFY_TOLERANCE` (relative to the output's
largest magnitude) is rejected. Without ``cache_key`` the export goes to a
temporary folder that is removed after loading.

Batch: the encoder's traced graph has the batch size baked in (TinyViT's
``PatchMerging`` takes ``len(x)``), so the exported and traced runtimes are
built for batch 1 and run ``N > 1`` slice by slice; eager torch takes any batch.

Threads: ONNX Runtime and OpenVINO use ``num_threads`` or, by default, every
core this process may run on (``os.sched_getaffinity``, else ``os.cpu_count``).
The torch runtimes use torch's own thread pool (``torch.get_num_threads()``,
physical cores by default) unless ``num_threads`` is given, which then applies
during each call only.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib
import logging
import os
import re
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Callable, Optional, Protocol, runtime_checkable

import numpy as np
import torch

from ..errors import ModelError

logger = logging.getLogger(__name__)

#: every runtime name :func:`build_encoder_runtime` accepts, besides ``"auto"``
KINDS = ("openvino", "onnxruntime", "torch-jit", "torch")
#: the order ``"auto"`` tries on CPU: fastest measured first (see module docstring)
CPU_AUTO_ORDER = ("openvino", "onnxruntime", "torch-jit", "torch")
#: ONNX opset of the export (17: native LayerNormalization)
ONNX_OPSET = 17
#: largest accepted ``max|runtime - eager| / max(1, max|eager|)`` on the probe
VERIFY_TOLERANCE = 1e-3
#: bump when the export or the cache layout changes, to ignore older cache files
CACHE_FORMAT = 1

_INPUT_NAME = "images"
_OUTPUT_NAME = "features"
_PROBE_SEED = 20240521


@runtime_checkable
class EncoderRuntime(Protocol):
    """An image encoder ready to run.

    ``name`` is the runtime used (one of :data:`KINDS`). Calling it maps
    ``images`` ``(N, 3, S, S)`` float32 to features ``(N, C, h, w)`` float32
    (LiteMedSAM: ``S = 256``, ``(C, h, w) = (256, 64, 64)``), numpy in and out.
    """

    name: str

    def __call__(self, images: np.ndarray) -> np.ndarray: ...


# ---------------------------------------------------------------------------
# availability


def _try_import(module: str):
    """The imported module, or None when it is missing or broken (tests patch this)."""
    try:
        return importlib.import_module(module)
    except Exception:  # ImportError, or a binary wheel failing to load
        return None


def _missing_packages(kind: str) -> list[str]:
    # the TorchScript-based ONNX exporter needs the ``onnx`` package too
    needed = {"openvino": ["onnx", "openvino"], "onnxruntime": ["onnx", "onnxruntime"]}.get(kind, [])
    return [name for name in needed if _try_import(name) is None]


def available_runtimes() -> list[str]:
    """Runtimes whose packages import here, in the CPU preference order of ``"auto"``.

    ``"torch-jit"`` and ``"torch"`` are always listed. Being listed does not
    promise that the export / compile will succeed; ``"auto"`` falls back if not.
    """
    return [kind for kind in CPU_AUTO_ORDER if not _missing_packages(kind)]


def default_num_threads() -> int:
    """Cores this process may run on (CPU affinity if known, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_cache_dir() -> Path:
    """``$PROMPTSEG_CACHE_DIR``, else ``~/.cache/promptseg``."""
    env = os.environ.get("PROMPTSEG_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "promptseg"


# ---------------------------------------------------------------------------
# runtimes


def _check_images(images: np.ndarray, input_size: Optional[int]) -> np.ndarray:
    """Validate ``(N, 3, S, S)`` and return it as C-contiguous float32."""
    if not isinstance(images, np.ndarray):
        raise TypeError(f"images must be a numpy array, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[0] < 1 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (N>=1, 3, H, W), got {images.shape}")
    if input_size is not None and images.shape[2:] != (input_size, input_size):
        raise ValueError(
            f"images must be {input_size}x{input_size} for this encoder, got {images.shape[2]}x{images.shape[3]}"
        )
    return np.ascontiguousarray(images, dtype=np.float32)


class _PerSliceRuntime:
    """A batch-1 engine run slice by slice: ``(N, 3, S, S) -> (N, C, h, w)``."""

    def __init__(self, name: str, run_one: Callable[[np.ndarray], np.ndarray], input_size: int) -> None:
        self.name = name
        self.input_size = input_size
        self._run_one = run_one

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = _check_images(images, self.input_size)
        outputs = [self._run_one(images[i : i + 1]) for i in range(images.shape[0])]
        out = outputs[0] if len(outputs) == 1 else np.concatenate(outputs, axis=0)
        return np.ascontiguousarray(out, dtype=np.float32)

    def __repr__(self) -> str:
        return f"<encoder runtime {self.name} ({self.input_size} px)>"


@contextlib.contextmanager
def _torch_threads(num_threads: Optional[int]):
    """Use ``num_threads`` torch threads inside the block (no-op for None)."""
    if num_threads is None or num_threads == torch.get_num_threads():
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class TorchRuntime:
    """Eager PyTorch under ``torch.inference_mode()``; any batch ``(N, 3, S, S) -> (N, C, h, w)``."""

    name = "torch"

    def __init__(self, encoder: torch.nn.Module, input_size: int, device: torch.device, num_threads: Optional[int]):
        self.encoder = encoder
        self.input_size = input_size
        self.device = device
        self.num_threads = num_threads if device.type == "cpu" else None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = _check_images(images, self.input_size)
        with torch.inference_mode(), _torch_threads(self.num_threads):
            out = self.encoder(torch.from_numpy(images).to(self.device))
        return np.ascontiguousarray(out.float().cpu().numpy())

    def __repr__(self) -> str:
        return f"<encoder runtime torch on {self.device} ({self.input_size} px)>"


def _encoder_device(encoder: torch.nn.Module) -> torch.device:
    param = next(encoder.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _build_torch_jit(
    encoder: torch.nn.Module, input_size: int, device: torch.device, num_threads: Optional[int]
) -> _PerSliceRuntime:
    """Trace (batch 1) and freeze the encoder; checked against eager on the probe.

    On CPU the trace runs on a channels-last copy of the encoder (the caller's
    module is left untouched): measured ~1.3x over eager vs ~1.1x without.
    """
    threads = num_threads if device.type == "cpu" else None
    layout = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    probe_in = _probe_input(input_size)
    with torch.inference_mode(), _torch_threads(threads):
        expected = encoder(torch.from_numpy(probe_in).to(device)).float().cpu().numpy()
    module = copy.deepcopy(encoder).to(memory_format=layout) if layout is torch.channels_last else encoder
    x = torch.from_numpy(probe_in).to(device).contiguous(memory_format=layout)
    with warnings.catch_warnings(), _torch_threads(threads), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about shape-dependent Python code
        traced = torch.jit.freeze(torch.jit.trace(module.eval(), x, check_trace=False))

    def run_one(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), _torch_threads(threads):
            inputs = torch.from_numpy(batch).to(device).contiguous(memory_format=layout)
            return traced(inputs).float().contiguous().cpu().numpy()

    _verify("torch-jit", run_one, probe_in, expected)  # also the warm-up run
    return _PerSliceRuntime("torch-jit", run_one, input_size)


# ---------------------------------------------------------------------------
# ONNX export and cache


def _probe_input(input_size: int) -> np.ndarray:
    """A fixed ``(1, 3, S, S)`` float32 image in [0, 1] for the equivalence check."""
    rng = np.random.default_rng(_PROBE_SEED)
    return rng.random((1, 3, input_size, input_size), dtype=np.float32)


def _verify(name: str, run_one: Callable[[np.ndarray], np.ndarray], probe_in: np.ndarray, expected: np.ndarray) -> None:
    """Raise if ``run_one(probe_in)`` is not ``expected`` within :data:`VERIFY_TOLERANCE`."""
    got = np.asarray(run_one(probe_in), dtype=np.float32)
    if got.shape != expected.shape:
        raise RuntimeError(f"{name} output shape {got.shape} != eager {expected.shape}")
    scale = max(1.0, float(np.abs(expected).max()))
    diff = float(np.abs(got - expected).max()) if got.size else 0.0
    if not np.isfinite(diff) or diff > VERIFY_TOLERANCE * scale:
        tolerance = VERIFY_TOLERANCE * scale
        raise RuntimeError(f"{name} output differs from eager torch by {diff:.3g} (tolerance {tolerance:.3g})")
    logger.debug("%s matches eager torch on the probe: max abs diff %.3g", name, diff)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cache_stem(cache_key: str, input_size: int) -> str:
    """File-name stem for ``cache_key``: readable prefix + hash of everything that matters."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", cache_key)[:80]
    full = f"{cache_key}|{input_size}|opset{ONNX_OPSET}|format{CACHE_FORMAT}"
    return f"encoder-{readable}-{hashlib.sha256(full.encode()).hexdigest()[:12]}"


def _atomic_path(final: Path):
    """A temp file next to ``final`` (same filesystem, so ``os.replace`` is atomic)."""
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def _export_onnx(encoder: torch.nn.Module, input_size: int, path: Path) -> None:
    """Export ``encoder`` for input ``(1, 3, S, S)`` float32 to the ONNX file ``path``.

    Uses the TorchScript-based exporter (``dynamo=False``) on a CPU copy when the
    encoder lives elsewhere. The graph is fixed at batch 1.
    """
    module = encoder if _encoder_device(encoder).type == "cpu" else copy.deepcopy(encoder).cpu()
    dummy = torch.zeros(1, 3, input_size, input_size, dtype=torch.float32)
    was_training = module.training
    module.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TracerWarnings, exporter deprecation notices
            torch.onnx.export(
                module,
                (dummy,),
                str(path),
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=[_INPUT_NAME],
                output_names=[_OUTPUT_NAME],
                do_constant_folding=True,
            )
    finally:
        if was_training:
            module.train()


def _eager_reference(encoder: torch.nn.Module, probe_in: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        x = torch.from_numpy(probe_in).to(_encoder_device(encoder))
        return encoder(x).float().cpu().numpy()


class _OnnxArtefact:
    """The encoder's ONNX file plus its probe, exported at most once per build call.

    ``get()`` returns ``(onnx_path, probe_input, probe_expected)``.
    """

    def __init__(self, encoder: torch.nn.Module, input_size: int, cache_key: Optional[str], cache_dir: Optional[Path]):
        self.encoder = encoder
        self.input_size = input_size
        self.cache_key = cache_key
        self.cache_dir = cache_dir
        self._tmp: Optional[tempfile.TemporaryDirectory] = None
        self._result: Optional[tuple[Path, np.ndarray, np.ndarray]] = None

    def get(self) -> tuple[Path, np.ndarray, np.ndarray]:
        if self._result is None:
            result = None
            if self.cache_key is not None:
                try:
                    result = self._cached()
                except OSError as exc:  # unwritable cache folder, full disk...
                    logger.warning("encoder cache in %s unusable (%s); exporting without cache", self.cache_dir, exc)
            self._result = result if result is not None else self._uncached()
        return self._result

    def _export(self, onnx_path: Path, final_path: Optional[Path] = None) -> tuple[np.ndarray, np.ndarray]:
        start = time.perf_counter()
        _export_onnx(self.encoder, self.input_size, onnx_path)
        probe_in = _probe_input(self.input_size)
        expected = _eager_reference(self.encoder, probe_in)
        elapsed = time.perf_counter() - start
        logger.info("exported the image encoder to ONNX in %.1f s (%s)", elapsed, final_path or onnx_path)
        return probe_in, expected

    def _uncached(self) -> tuple[Path, np.ndarray, np.ndarray]:
        self._tmp = tempfile.TemporaryDirectory(prefix="promptseg-encoder-")
        onnx_path = Path(self._tmp.name) / "encoder.onnx"
        probe_in, expected = self._export(onnx_path)
        return onnx_path, probe_in, expected

    def _cached(self) -> tuple[Path, np.ndarray, np.ndarray]:
        assert self.cache_key is not None and self.cache_dir is not None
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        stem = _cache_stem(self.cache_key, self.input_size)
        onnx_path = self.cache_dir / f"{stem}.onnx"
        meta_path = self.cache_dir / f"{stem}.npz"
        if onnx_path.exists() or meta_path.exists():
            try:
                return (onnx_path, *self._load_meta(onnx_path, meta_path))
            except Exception as exc:
                logger.warning("cached encoder export %s is corrupt (%s); exporting again", onnx_path.name, exc)
                for path in (meta_path, onnx_path):
                    path.unlink(missing_ok=True)
        tmp_onnx = _atomic_path(onnx_path)
        tmp_meta = _atomic_path(meta_path)
        try:
            probe_in, expected = self._export(tmp_onnx, onnx_path)
            with open(tmp_meta, "wb") as fh:
                np.savez(
                    fh,
                    sha256=np.array(_sha256(tmp_onnx)),
                    format=np.array(CACHE_FORMAT),
                    probe_input=probe_in,
                    probe_output=expected,
                )
            os.replace(tmp_onnx, onnx_path)
            os.replace(tmp_meta, meta_path)  # last: a complete entry exists only now
        finally:
            tmp_onnx.unlink(missing_ok=True)
            tmp_meta.unlink(missing_ok=True)
        return onnx_path, probe_in, expected

    def _load_meta(self, onnx_path: Path, meta_path: Path) -> tuple[np.ndarray, np.ndarray]:
        with np.load(meta_path, allow_pickle=False) as meta:
            sha = str(meta["sha256"])
            fmt = int(meta["format"])
            probe_in = np.asarray(meta["probe_input"], dtype=np.float32)
            expected = np.asarray(meta["probe_output"], dtype=np.float32)
        if fmt != CACHE_FORMAT:
            raise ValueError(f"cache format {fmt}, expected {CACHE_FORMAT}")
        if probe_in.shape != (1, 3, self.input_size, self.input_size):
            raise ValueError(f"probe input shape {probe_in.shape}")
        if _sha256(onnx_path) != sha:
            raise ValueError("ONNX file does not match its recorded SHA-256")
        return probe_in, expected

    def close(self) -> None:
        """Remove the temporary export (a loaded runtime no longer needs the file)."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _load_onnxruntime(onnx_path: Path, num_threads: int) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    # no busy-waiting after a run: spinning threads slowed the torch decoder that
    # follows each encoder call from 0.16 s to 0.24 s, and the encoder gained nothing
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def run_one(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: batch})[0]

    return run_one


def _load_openvino(onnx_path: Path, num_threads: int) -> Callable[[np.ndarray], np.ndarray]:
    import openvino as ov

    core = ov.Core()
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",  # never bf16/fp16, whatever the CPU offers
        "INFERENCE_NUM_THREADS": int(num_threads),
    }
    compiled = core.compile_model(core.read_model(str(onnx_path)), "CPU", config)
    request = compiled.create_infer_request()
    lock = threading.Lock()  # one infer request: serialise callers

    def run_one(batch: np.ndarray) -> np.ndarray:
        with lock:
            request.infer({0: batch})
            return request.get_output_tensor(0).data.copy()

    return run_one


_LOADERS: dict[str, Callable[[Path, int], Callable[[np.ndarray], np.ndarray]]] = {
    "onnxruntime": _load_onnxruntime,
    "openvino": _load_openvino,
}


def _build_exported(kind: str, artefact: _OnnxArtefact, input_size: int, num_threads: int) -> _PerSliceRuntime:
    missing = _missing_packages(kind)
    if missing:
        raise ModelError(
            f"encoder runtime {kind!r} needs the package(s) {', '.join(missing)} (pip install {' '.join(missing)})"
        )
    onnx_path, probe_in, expected = artefact.get()
    run_one = _LOADERS[kind](onnx_path, num_threads)
    _verify(kind, run_one, probe_in, expected)  # also the warm-up run
    return _PerSliceRuntime(kind, run_one, input_size)


# ---------------------------------------------------------------------------
# entry point


def build_encoder_runtime(
    encoder: torch.nn.Module,
    input_size: int,
    kind: str = "auto",
    cache_key: Optional[str] = None,
    cache_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    num_threads: Optional[int] = None,
) -> EncoderRuntime:
    """Wrap ``encoder`` (input ``(N, 3, input_size, input_size)``) into a fast runtime.

    Args:
        encoder: the image encoder in eval mode, on ``device``; maps
            ``(N, 3, S, S)`` float32 to ``(N, C, h, w)``.
        input_size: ``S``, the square input side the encoder expects.
        kind: ``"auto"`` or one of :data:`KINDS`. ``"auto"`` picks plain torch on
            non-CPU devices and, on CPU, the first of :data:`CPU_AUTO_ORDER` that
            builds and passes the probe check (warning once per skipped runtime).
        cache_key: names the exported ONNX file in ``cache_dir`` so later builds
            skip the export; pass a digest of the weights and the input size.
            ``None``: export to a temporary folder, no caching.
        cache_dir: folder for cached exports (default :func:`default_cache_dir`).
        device: where ``encoder`` lives; the ONNX runtimes need ``"cpu"``.
        num_threads: CPU threads (default: every available core for ONNX
            Runtime / OpenVINO, torch's own setting for the torch runtimes).

    Returns:
        an :class:`EncoderRuntime`: ``runtime(images)`` with ``images``
        ``(N, 3, S, S)`` float32 returns ``(N, C, h, w)`` float32 (numpy).

    Raises:
        ModelError: unknown ``kind``, or a named runtime that cannot be built here.
    """
    if kind != "auto" and kind not in KINDS:
        raise ModelError(f"unknown encoder runtime {kind!r}; choose 'auto' or one of {', '.join(KINDS)}")
    if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
        raise ModelError(f"num_threads must be a positive integer, got {num_threads!r}")
    device = torch.device(device)
    if kind in _LOADERS and device.type != "cpu":
        raise ModelError(f"encoder runtime {kind!r} runs on CPU only; use 'torch' or 'auto' on {device}")
    if kind == "auto":
        order = CPU_AUTO_ORDER if device.type == "cpu" else ("torch",)
    else:
        order = (kind,)

    threads = num_threads if num_threads is not None else default_num_threads()
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    artefact = _OnnxArtefact(encoder, input_size, cache_key, folder)
    try:
        for position, candidate in enumerate(order):
            try:
                if candidate == "torch":
                    return TorchRuntime(encoder, input_size, device, num_threads)
                if candidate == "torch-jit":
                    return _build_torch_jit(encoder, input_size, device, num_threads)
                return _build_exported(candidate, artefact, input_size, threads)
            except Exception as exc:
                if kind != "auto":
                    if isinstance(exc, ModelError):
                        raise
                    raise ModelError(f"encoder runtime {candidate!r} could not be built: {_one_line(exc)}") from exc
                following = order[position + 1] if position + 1 < len(order) else None
                logger.warning(
                    "encoder runtime %r unavailable (%s); trying %r", candidate, _one_line(exc), following
                )
        raise ModelError("no encoder runtime could be built")  # pragma: no cover - "torch" cannot fail
    finally:
        artefact.close()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
