"""Reduced precision (promptseg.runtimes.precision / cpu / build): capability detection with mocked CPUs,
the mask-level gate, the verdict cache and its invalidation.

Fast tests use the toy encoder of test_runtime and a fake real-slice check whose
"masks" are thresholded encoder features; the slow test runs the real gate on the
bundled lesion slices.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from promptseg.errors import ModelError
from promptseg import runtimes as rt
from promptseg.runtimes import build as rt_build
from promptseg.runtimes import cpu as rt_cpu
from promptseg.runtimes import precision as prec
from promptseg.runtimes.eager import TorchRuntime

from test_runtime import EXPORTED, TOY_SIZE, ToyEncoder, eager

AVX2_ONLY = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse sse2 avx avx2 fma f16c bmi2
"""
SAPPHIRE = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu avx avx2 avx512f avx512_bf16 avx512_vnni amx_bf16 amx_int8 amx_tile
processor\t: 1
model name\t: ignored second core
flags\t\t: fpu
"""
CASCADE = """model name\t: Intel(R) Xeon(R) Gold 6248
flags\t\t: avx avx2 avx512f avx512_vnni
"""
OV_BF16 = frozenset({"FP32", "BF16", "INT8", "EXPORT_IMPORT"})
OV_PLAIN = frozenset({"FP32", "INT8", "EXPORT_IMPORT"})


# ---------------------------------------------------------------------------
# what the CPU runs natively


def test_parse_cpuinfo_takes_the_first_processor():
    info = rt_cpu.parse_cpuinfo(SAPPHIRE)
    assert info.model == "Intel(R) Xeon(R) Platinum 8480+"
    assert {"avx512_bf16", "amx_int8"} <= info.flags
    assert info.reported_flags() == ["avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile"]


@pytest.mark.parametrize("text, capabilities, expected", [
    (AVX2_ONLY, OV_PLAIN, set()),                 # AVX2 only: nothing native (int8 listed by OpenVINO, no VNNI)
    (AVX2_ONLY, None, set()),                     # ... also without OpenVINO
    (SAPPHIRE, OV_BF16, {"bf16", "int8"}),
    (SAPPHIRE, None, {"bf16", "int8"}),           # flags alone
    (SAPPHIRE, OV_PLAIN, {"int8"}),               # the runtime does not list BF16: not native for it
    (CASCADE, OV_PLAIN, {"int8"}),                # VNNI without bf16
])
def test_native_precisions_from_flags_and_openvino(text, capabilities, expected):
    found = rt_cpu.native_precisions(rt_cpu.parse_cpuinfo(text), capabilities)
    assert set(found) == expected
    if "bf16" in found:
        assert "avx512_bf16" in found["bf16"]


def test_without_cpu_flags_openvino_decides_bf16_and_int8_is_not_assumed():
    unknown = rt_cpu.CpuInfo(model="Apple M2", flags=None)
    assert set(rt_cpu.native_precisions(unknown, OV_BF16)) == {"bf16"}
    assert rt_cpu.native_precisions(unknown, OV_PLAIN) == {}
    assert rt_cpu.native_precisions(unknown, frozenset()) == {}


def test_this_machine_is_described():
    info = rt_cpu.cpu_info()
    assert info.model
    assert set(rt_cpu.native_precisions()) <= {"bf16", "int8"}


# ---------------------------------------------------------------------------
# the gate's decision, with fake runtimes


class FakeRuntime:
    def __init__(self, precision):
        self.precision = precision


def fake_check(masks_by_precision, calls):
    def masks(encoder):
        calls.append(encoder.precision)
        return masks_by_precision[encoder.precision]

    return prec.RealSliceCheck(masks=masks, calibration_inputs=lambda n: [])


def _masks(n_differing, n=9, size=20):
    """n masks of a 10x10 square; the first ``n_differing`` lose one row (Dice 0.947)."""
    out = []
    for i in range(n):
        m = np.zeros((size, size), bool)
        m[5:15, 5:15] = True
        if i < n_differing:
            m[14] = False
        out.append(m)
    return out


@pytest.mark.parametrize("candidates, bf16_diff, int8_diff, chosen, tried", [
    (("bf16", "int8"), 0, 0, "bf16", ["fp32", "bf16"]),  # bf16 passes
    (("bf16", "int8"), 4, 0, "fp32", ["fp32", "bf16"]),  # bf16 fails: mean (5 + 4 x 0.947) / 9 = 0.977; int8 not
                                                         # tried where bf16 is native (it was slower than bf16)
    (("int8",), 0, 0, "int8", ["fp32", "int8"]),         # VNNI without bf16: int8
    (("int8",), 0, 9, "fp32", ["fp32", "int8"]),         # ... unless it fails
])
def test_decide_tries_bf16_then_int8(candidates, bf16_diff, int8_diff, chosen, tried, monkeypatch):
    calls = []
    check = fake_check({"fp32": _masks(0), "bf16": _masks(bf16_diff), "int8": _masks(int8_diff)}, calls)
    clock = {"t": 0.0}  # fp32 takes 4 s on the gate slices, every other precision 1 s

    def masks_timed(encoder):
        clock["t"] += 4.0 if encoder.precision == "fp32" else 1.0
        return check.masks(encoder)

    monkeypatch.setattr(prec.time, "perf_counter", lambda: clock["t"])
    timed = prec.RealSliceCheck(masks=masks_timed, calibration_inputs=check.calibration_inputs)
    verdict, built = prec.decide({c: "flags" for c in candidates}, FakeRuntime, timed)
    assert verdict.precision == chosen
    assert calls == tried
    assert chosen in built
    assert verdict.trials["fp32"].seconds == 4.0
    if chosen != "fp32":
        assert f"{chosen} is native (flags), passes the gate" in verdict.reason
        assert "4.00x the speed of fp32" in verdict.reason


def test_gate_threshold_is_mean_dice_098():
    assert prec.GATE_MIN_MEAN_DICE == 0.98
    assert prec.Trial("bf16", 1.0, [0.98] * 9).passed
    assert not prec.Trial("bf16", 1.0, [1.0] * 8 + [0.819]).passed  # mean 0.9799
    assert prec.Trial("bf16", 1.0, [1.0] * 8 + [0.83]).passed  # a poor slice is allowed if the mean holds


def test_a_passing_but_slow_precision_is_not_chosen(monkeypatch):
    clock = {"t": 0.0}
    monkeypatch.setattr(prec.time, "perf_counter", lambda: clock["t"])

    def masks(encoder):
        clock["t"] += 1.0  # every precision as fast as fp32
        return _masks(0)

    verdict, _ = prec.decide({"bf16": "flags"}, FakeRuntime, prec.RealSliceCheck(masks, lambda n: []))
    assert verdict.precision == "fp32"
    assert "passed the gate but is only 1.00x the speed of fp32" in verdict.reason


def test_a_precision_that_cannot_be_built_is_skipped():
    def build(precision):
        if precision == "bf16":
            raise RuntimeError("plugin refused bf16")
        return FakeRuntime(precision)

    verdict, built = prec.decide({"bf16": "flags"}, build, fake_check({"fp32": _masks(0)}, []))
    assert verdict.precision == "fp32" and set(built) == {"fp32"}
    assert "bf16 could not be built (RuntimeError: plugin refused bf16)" in verdict.reason


def test_mask_dice():
    a = np.zeros((4, 4), bool)
    assert prec.mask_dice(a, a) == 1.0
    b = a.copy()
    b[0, 0] = True
    assert prec.mask_dice(a, b) == 0.0
    c = b.copy()
    c[0, 1] = True
    assert prec.mask_dice(b, c) == pytest.approx(2 / 3)


# ---------------------------------------------------------------------------
# build_encoder_runtime with precision, on the toy encoder


@pytest.fixture()
def toy():
    return ToyEncoder().eval()


PROBES = np.random.default_rng(5).random((4, 3, TOY_SIZE, TOY_SIZE), dtype=np.float32)


class ToyCheck:
    """Gate 'masks' = toy features > their fp32 median, on fixed inputs; counts the runs."""

    def __init__(self, toy):
        self.runs = []
        feats = eager(toy, PROBES)
        self.threshold = float(np.median(feats))

    def masks(self, encoder):
        self.runs.append(getattr(encoder, "precision", "?"))
        return [encoder(PROBES[i : i + 1])[0] > self.threshold for i in range(len(PROBES))]

    def calibration_inputs(self, count):
        return [PROBES[i % len(PROBES)][None] for i in range(count)]

    @property
    def check(self):
        return prec.RealSliceCheck(self.masks, self.calibration_inputs)


def mock_cpu(monkeypatch, text, capabilities):
    monkeypatch.setattr(rt_cpu, "cpu_info", lambda: rt_cpu.parse_cpuinfo(text))
    monkeypatch.setattr(rt_cpu, "openvino_capabilities", lambda: capabilities)


needs_openvino = pytest.mark.skipif("openvino" not in EXPORTED, reason="openvino is not installed")


@needs_openvino
def test_auto_on_an_avx2_only_cpu_is_fp32_without_running_the_gate(toy, tmp_path, monkeypatch, caplog):
    mock_cpu(monkeypatch, AVX2_ONLY, OV_PLAIN)
    gate = ToyCheck(toy)
    with caplog.at_level(logging.INFO, logger=rt.__name__):
        runtime = rt.build_encoder_runtime(toy, TOY_SIZE, kind="openvino", precision="auto", check=gate.check,
                                           cache_key="toy", cache_dir=tmp_path)
    assert runtime.precision == "fp32"
    assert gate.runs == []
    assert "no reduced precision runs natively here" in runtime.precision_reason
    assert "encoder precision fp32 on openvino" in caplog.text
    assert not list(tmp_path.glob("precision-*.json"))  # nothing to remember
    np.testing.assert_allclose(runtime(PROBES), eager(toy, PROBES), atol=1e-5, rtol=0)


@needs_openvino
def test_auto_with_native_bf16_runs_the_gate_once_and_caches_the_verdict(toy, tmp_path, monkeypatch, caplog):
    mock_cpu(monkeypatch, SAPPHIRE, OV_BF16)
    monkeypatch.setattr(prec, "MIN_SPEEDUP", 0.0)  # the toy is too small to be faster in bf16
    gate = ToyCheck(toy)
    with caplog.at_level(logging.INFO, logger=rt.__name__):
        first = rt.build_encoder_runtime(toy, TOY_SIZE, kind="openvino", precision="auto", check=gate.check,
                                         cache_key="toy", cache_dir=tmp_path)
    assert first.precision == "bf16"
    assert gate.runs == ["fp32", "bf16"]  # int8 is not tried once bf16 passed
    assert "bf16 is native (CPU flags amx_bf16, avx512_bf16; OpenVINO lists BF16)" in first.precision_reason
    assert "judging encoder precision" in caplog.text
    (verdict_file,) = tmp_path.glob("precision-*.json")
    doc = json.loads(verdict_file.read_text())
    assert doc["precision"] == "bf16" and doc["key"]["cpu"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert doc["key"]["versions"]["openvino"] and doc["gate"]["min_mean_dice"] == 0.98
    assert len(doc["trials"]["bf16"]["dice"]) == len(PROBES)
    # bf16 on the toy: close to fp32 but not within the fp32 probe tolerance's reach of exactness
    out = first(PROBES)
    np.testing.assert_allclose(out, eager(toy, PROBES), atol=0.1, rtol=0)

    caplog.clear()
    with caplog.at_level(logging.INFO, logger=rt.__name__):
        again = rt.build_encoder_runtime(toy, TOY_SIZE, kind="openvino", precision="auto", check=gate.check,
                                         cache_key="toy", cache_dir=tmp_path)
    assert again.precision == "bf16"
    assert gate.runs == ["fp32", "bf16"]  # cached: the gate did not run again
    assert "cached verdict" in caplog.text


@needs_openvino
@pytest.mark.parametrize("change", ["cpu", "runtime_version", "model", "corrupt"])
def test_the_verdict_is_per_cpu_runtime_version_and_model(toy, tmp_path, monkeypatch, caplog, change):
    mock_cpu(monkeypatch, SAPPHIRE, OV_BF16)
    monkeypatch.setattr(prec, "MIN_SPEEDUP", 0.0)
    gate = ToyCheck(toy)
    options = dict(kind="openvino", precision="auto", check=gate.check, cache_dir=tmp_path)
    rt.build_encoder_runtime(toy, TOY_SIZE, cache_key="toy", **options)
    assert len(gate.runs) == 2
    key = "toy"
    if change == "cpu":
        mock_cpu(monkeypatch, SAPPHIRE.replace("8480+", "8490H"), OV_BF16)
    elif change == "runtime_version":
        monkeypatch.setattr(rt_build.openvino_backend, "version", lambda: "2099.1.0")
    elif change == "model":
        key = "toy-other-weights"
    else:
        (verdict_file,) = tmp_path.glob("precision-*.json")
        verdict_file.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger=rt.__name__):
        runtime = rt.build_encoder_runtime(toy, TOY_SIZE, cache_key=key, **options)
    assert len(gate.runs) == 4  # judged again
    assert runtime.precision == "bf16"
    if change == "corrupt":
        assert "ignoring the unreadable precision verdict" in caplog.text
        json.loads(next(tmp_path.glob("precision-*.json")).read_text())  # rewritten whole
    else:
        assert len(list(tmp_path.glob("precision-*.json"))) == 2


@needs_openvino
def test_a_precision_that_changes_the_masks_fails_the_gate(toy, tmp_path, monkeypatch):
    mock_cpu(monkeypatch, SAPPHIRE, OV_BF16)
    monkeypatch.setattr(prec, "MIN_SPEEDUP", 0.0)
    real_load = rt_build.LOADERS["openvino"]

    def noisy(path, threads, precision="fp32", cache_dir=None):
        run = real_load(path, threads, precision=precision, cache_dir=cache_dir)
        if precision == "fp32":
            return run
        return lambda batch: run(batch) + np.random.default_rng(0).normal(0, 1.0, size=(1, 16, 8, 8)).astype(np.float32)

    monkeypatch.setitem(rt_build.LOADERS, "openvino", noisy)
    monkeypatch.setattr(rt_build, "missing_packages", lambda kind, precision="fp32": [])
    monkeypatch.setattr(rt_cpu, "native_precisions", lambda: {"bf16": "mocked"})
    gate = ToyCheck(toy)
    runtime = rt.build_encoder_runtime(toy, TOY_SIZE, kind="openvino", precision="auto", check=gate.check,
                                       cache_key="toy", cache_dir=tmp_path)
    assert runtime.precision == "fp32"
    assert "bf16 failed the gate (mean Dice" in runtime.precision_reason
    np.testing.assert_allclose(runtime(PROBES), eager(toy, PROBES), atol=1e-5, rtol=0)
    # asked for by name, the failing precision is an error that says why
    with pytest.raises(ModelError, match=r"bf16 is not accurate enough here: bf16 fails the gate: mean Dice 0\.\d+"):
        rt.build_encoder_runtime(toy, TOY_SIZE, kind="openvino", precision="bf16", check=gate.check,
                                 cache_key="toy", cache_dir=tmp_path)


def test_precision_errors(toy):
    with pytest.raises(ModelError, match="unknown precision 'fp8'; choose one of auto, fp32, bf16, fp16, int8"):
        rt.build_encoder_runtime(toy, TOY_SIZE, precision="fp8")
    with pytest.raises(ModelError, match="'onnxruntime' cannot run bf16; runtimes that can: openvino, torch"):
        rt.build_encoder_runtime(toy, TOY_SIZE, kind="onnxruntime", precision="bf16")
    with pytest.raises(ModelError, match="int8 needs real calibration slices"):
        rt.build_encoder_runtime(toy, TOY_SIZE, kind="openvino", precision="int8")


def test_auto_without_a_check_stays_fp32(toy, monkeypatch):
    mock_cpu(monkeypatch, SAPPHIRE, OV_BF16)
    runtime = rt.build_encoder_runtime(toy, TOY_SIZE, kind="auto", precision="auto")
    assert runtime.precision == "fp32"


# ---------------------------------------------------------------------------
# torch autocast (the CUDA path, exercised on the CPU)


def test_torch_autocast_bf16_on_cpu(toy):
    fp32 = eager(toy, PROBES)
    runtime = TorchRuntime(toy, TOY_SIZE, torch.device("cpu"), None, autocast="bf16")
    seen = []
    handle = toy.conv2.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    try:
        out = runtime(PROBES)
    finally:
        handle.remove()
    assert seen == [torch.bfloat16]  # the convolution ran in bf16
    assert out.dtype == np.float32
    rel = np.linalg.norm(out - fp32) / np.linalg.norm(fp32)
    assert 0 < rel < 0.02


def test_explicit_bf16_on_the_torch_runtime_goes_through_the_gate(toy):
    gate = ToyCheck(toy)
    runtime = rt.build_encoder_runtime(toy, TOY_SIZE, kind="torch", precision="bf16", check=gate.check)
    assert runtime.precision == "bf16" and runtime.autocast == "bf16"
    assert gate.runs == ["fp32", "bf16"]


def test_cuda_auto_candidates_are_bf16_or_fp16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert rt_build.native_candidates("torch", torch.device("cuda")) == {"bf16": "CUDA device Fake GPU supports bf16"}
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert list(rt_build.native_candidates("torch", torch.device("cuda"))) == ["fp16"]
    assert rt_build.native_candidates("onnxruntime", torch.device("cpu")) == {}


def test_cuda_inputs_go_through_pinned_memory(monkeypatch):
    from promptseg.runtimes import eager as rt_eager

    moves = []

    class Spy:
        def pin_memory(self):
            moves.append("pin")
            return self

        def to(self, device, non_blocking=False):
            moves.append((str(device), non_blocking))
            return self

    monkeypatch.setattr(rt_eager.torch, "from_numpy", lambda array: Spy())
    rt_eager.to_device(np.zeros(3, np.float32), torch.device("cuda"))
    assert moves == ["pin", ("cuda", True)]
    moves.clear()
    rt_eager.to_device(np.zeros(3, np.float32), torch.device("cpu"))
    assert moves == [("cpu", False)]


# ---------------------------------------------------------------------------
# the real gate on the bundled lesion slices


def test_gate_and_calibration_slices_are_real_and_disjoint():
    from promptseg.runtimes.real_slices import calibration_slices, gate_slices

    gate = gate_slices()
    assert [(s.case, s.z) for s in gate] == [("lung1", 32), ("lung1", 33), ("lung1", 34), ("brain2", 8), ("brain2", 9),
                                             ("brain2", 10), ("breast1", 8), ("breast1", 9), ("breast1", 10)]
    assert gate[1].box == (206.0, 347.0, 229.0, 368.0)  # the demo's expert box on lung1 z = 33
    assert all(s.image.dtype == np.uint8 and s.image.ndim == 2 for s in gate)
    calibration = calibration_slices(12)
    assert len(calibration) == 12 and {s.case for s in calibration} == {"lung1", "brain2", "breast1"}
    assert not {(s.case, s.z) for s in gate} & {(s.case, s.z) for s in calibration}
    assert all(s.box is None and s.image.any() for s in calibration)


# ---------------------------------------------------------------------------
# build_segmenter / CLI


def test_build_segmenter_precision_per_backend(tmp_path):
    from promptseg.models.registry import MODELS, build_segmenter

    assert "bf16" in MODELS["litemedsam"].precisions and "int8" in MODELS["litemedsam"].precisions
    weights = tmp_path / "sam.pth"
    weights.write_bytes(b"x")
    with pytest.raises(ModelError, match="model sam-vit-b offers precision auto, fp32, not bf16"):
        build_segmenter("sam-vit-b", checkpoint=weights, precision="bf16")
    with pytest.raises(ModelError, match="unknown precision 'half'"):
        build_segmenter("litemedsam", precision="half")


def test_cli_precision_option(capsys):
    from promptseg.cli import main

    with pytest.raises(SystemExit) as info:
        main(["segment", "x.nii.gz", "-o", "y.nii.gz", "--box", "1,1,5,5", "--precision", "fp8"])
    assert info.value.code == 2
    assert "invalid choice: 'fp8'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["segment", "--help"])
    assert "--precision {auto,fp32,bf16,fp16,int8}" in capsys.readouterr().out


def test_default_precision_from_the_environment(monkeypatch):
    monkeypatch.delenv(prec.PRECISION_ENV, raising=False)
    assert prec.default_precision() == "auto"
    monkeypatch.setenv(prec.PRECISION_ENV, "bf16")
    assert prec.default_precision() == "bf16"
    monkeypatch.setenv(prec.PRECISION_ENV, "double")
    with pytest.raises(ModelError, match="unknown precision 'double'"):
        prec.default_precision()


@pytest.mark.slow
@pytest.mark.skipif("openvino" not in EXPORTED, reason="openvino is not installed")
def test_the_real_gate_on_the_bundled_lesion_slices(tmp_path):
    """precision auto on this machine's CPU: the verdict holds the 9 real slices' Dice, and a reduced
    precision is chosen only if it is native and passes (mean >= 0.98)."""
    from promptseg.models.litemedsam import LiteMedSAM
    from promptseg.models.litemedsam import real_slice_check

    model = LiteMedSAM(precision="fp32")
    runtime = rt.build_encoder_runtime(lambda: model.net.image_encoder, 256, kind="openvino", precision="auto",
                                       check=real_slice_check(model), cache_key=f"litemedsam-{model.weights_digest}-256",
                                       cache_dir=tmp_path)
    native = rt_build.native_candidates("openvino", torch.device("cpu"))
    if not native:
        assert runtime.precision == "fp32" and "no reduced precision runs natively" in runtime.precision_reason
        return
    (verdict_file,) = tmp_path.glob("precision-*.json")
    doc = json.loads(verdict_file.read_text())
    assert doc["precision"] == runtime.precision
    tried = [p for p in doc["trials"] if p != "fp32"]
    assert tried and all(p in native for p in tried)
    for name in tried:
        dice = doc["trials"][name]["dice"]
        assert len(dice) == 9 and all(0.0 <= d <= 1.0 for d in dice)
        passed = float(np.mean(dice)) >= prec.GATE_MIN_MEAN_DICE
        assert (runtime.precision == name) <= passed  # chosen implies passed
    if runtime.precision != "fp32":
        assert runtime.precision_reason.startswith(f"{runtime.precision} is native")
