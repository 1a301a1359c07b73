"""The exported box decoder (promptseg.runtimes.decoder): masks identical to eager PyTorch on real slices."""

from __future__ import annotations

import numpy as np
import pytest

from promptseg.runtimes import decoder as rt_decoder
from promptseg.runtimes.build import missing_packages
from promptseg.runtimes.real_slices import gate_slices

from model_cache import litemedsam

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(missing_packages("openvino")), reason="openvino / onnx not installed"),
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = litemedsam()
    cache = tmp_path_factory.mktemp("decoder-cache")
    decoder = rt_decoder.build_box_decoder(model.net, (1, 256, 64, 64),
                                           cache_key=f"litemedsam-{model.weights_digest}", cache_dir=cache)
    return model, decoder, cache


def test_exported_decoder_masks_equal_eager_on_the_lesion_slices(exported):
    model, decoder, _ = exported
    for item in gate_slices():  # 512 x 512 CT, 256 x 256 and 45 x 120 MR: three crops and slice sizes
        embedding = model.embed(item.image)
        eager = model.decode(embedding, box=item.box)
        scale = 256 / max(item.image.shape)
        box = np.floor(np.asarray(item.box) * scale + 1e-6)
        logits, iou = decoder(embedding.features, box, embedding.input_size, embedding.original_size)
        assert logits.shape == item.image.shape
        np.testing.assert_array_equal(logits > 0, eager.mask, err_msg=f"{item.case} z={item.z}")
        assert eager.mask.sum() > 0
        np.testing.assert_allclose(logits, eager.logits, atol=1e-3, rtol=0)
        assert iou == pytest.approx(eager.score, abs=1e-4)


def test_the_decoder_export_is_cached(exported, monkeypatch):
    model, _, cache = exported
    (onnx_file,) = cache.glob("decoder-*.onnx")
    before = onnx_file.stat().st_mtime_ns

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    def no_network():
        raise AssertionError("the network was needed")

    monkeypatch.setattr(rt_decoder, "export_decoder", no_export)
    rt_decoder.build_box_decoder(no_network, (1, 256, 64, 64),
                                 cache_key=f"litemedsam-{model.weights_digest}", cache_dir=cache)
    assert onnx_file.stat().st_mtime_ns == before
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_litemedsam_decodes_boxes_through_the_export_until_its_decoder_weights_change(monkeypatch):
    from promptseg.models.litemedsam import LiteMedSAM

    model = LiteMedSAM()
    assert "net" not in model.__dict__  # nothing needed the PyTorch network yet
    item = gate_slices()[1]
    embedding = model.embed(item.image)
    calls = []
    exported = model.box_decoder
    assert exported is not None
    monkeypatch.setattr(model, "box_decoder", lambda *args: (calls.append(1), exported(*args))[1])
    first = model.decode(embedding, box=item.box)
    assert calls == [1]
    model.decode(embedding, box=item.box, points=np.array([[217.0, 357.0]]))  # points: eager
    assert calls == [1]
    import torch

    with torch.no_grad():  # as an optimiser step would
        next(model.net.mask_decoder.parameters()).mul_(1.0)
    again = model.decode(embedding, box=item.box)
    assert calls == [1]  # the export no longer matches the weights: eager
    np.testing.assert_array_equal(again.mask, first.mask)


# ---------------------------------------------------------------- the interactive decoder's precision gate
class _FakeDecoder:
    """Logits from a fixed mask per input; ``pause`` seconds a call."""

    def __init__(self, precision, masks, pause):
        self.precision, self.masks, self.pause, self.calls = precision, masks, pause, 0
        self.precision_reason = ""

    def __call__(self, features, box, crop, size):
        import time

        self.calls += 1
        time.sleep(self.pause)
        return np.where(self.masks[int(features)], 1.0, -1.0), 0.9


def _square(shift=0):
    mask = np.zeros((40, 40), bool)
    mask[10 + shift : 30 + shift, 10:30] = True
    return mask


@pytest.mark.parametrize("bf16_masks, bf16_pause, chosen, why", [
    ([_square(), _square()], 0.0, "bf16", "bf16 passes the gate (mean Dice 1.0000, min 1.0000 vs fp32 on 2 real slices)"),
    ([_square(), _square(8)], 0.0, "fp32", "bf16 failed the gate (mean Dice 0.8000 < 0.98)"),
    ([_square(), _square()], 0.02, "fp32", "bf16 passed the gate but is only"),
])
def test_the_interactive_decoder_takes_bf16_only_when_it_agrees_and_is_faster(tmp_path, bf16_masks, bf16_pause,
                                                                              chosen, why):
    fp32_masks = [_square(), _square()]
    built = []

    def build(precision):
        built.append(precision)
        return (_FakeDecoder("fp32", fp32_masks, 0.01) if precision == "fp32"
                else _FakeDecoder("bf16", bf16_masks, bf16_pause))

    key = {"model": "fake", "part": "box decoder"}
    decoder = rt_decoder.gated_box_decoder(build, lambda: [(0, None, None, None), (1, None, None, None)],
                                           key=key, cache_dir=tmp_path, rounds=2)
    assert decoder.precision == chosen and why in decoder.precision_reason
    # the verdict is cached: the next build takes it without judging (one decoder built, no gate inputs)
    built.clear()
    again = rt_decoder.gated_box_decoder(build, lambda: pytest.fail("judged again"), key=key, cache_dir=tmp_path)
    assert built == [chosen] and again.precision == chosen and again.precision_reason == decoder.precision_reason


def test_a_bf16_decoder_that_cannot_be_built_keeps_fp32(tmp_path):
    def build(precision):
        if precision == "bf16":
            raise RuntimeError("no bf16 kernels")
        return _FakeDecoder("fp32", [_square()], 0.0)

    decoder = rt_decoder.gated_box_decoder(build, lambda: pytest.fail("no gate without bf16"), cache_dir=tmp_path)
    assert decoder.precision == "fp32"
    assert decoder.precision_reason == "fp32: bf16 could not be built (RuntimeError: no bf16 kernels)"


def test_the_viewer_prompt_decodes_interactively_and_propagation_does_not():
    """Session.prompt -> decode_interactive; propagation (as segment()) -> decode."""
    from fakes import ThresholdSegmenter

    import promptseg
    from promptseg.session import Session

    calls = []

    class Recording(ThresholdSegmenter):
        def decode(self, embedding, box=None, points=None, point_labels=None):
            calls.append("decode")
            return super().decode(embedding, box=box, points=points, point_labels=point_labels)

        def decode_interactive(self, embedding, box=None, points=None, point_labels=None):
            calls.append("interactive")
            return super().decode(embedding, box=box, points=points, point_labels=point_labels)

    array = np.full((5, 40, 40), 20, np.int16)
    array[1:4, 10:30, 10:30] = 1000
    session = Session(promptseg.Volume(array), Recording(), prefetch=0)
    session.prompt(1, 2, box=(10, 10, 29, 29))
    assert calls == ["interactive"]
    calls.clear()
    list(session.propagate(1))
    assert calls and set(calls) == {"decode"}


def test_on_a_cpu_with_native_bf16_the_viewer_decoder_is_gated_and_agrees(tmp_path, monkeypatch):
    from promptseg.runtimes import cpu, onnx_export
    from promptseg.models.litemedsam import LiteMedSAM

    if "bf16" not in cpu.native_precisions():
        pytest.skip(f"bf16 is not native on this CPU ({cpu.cpu_info().model}): the interactive decoder is fp32")
    monkeypatch.setattr(onnx_export, "default_cache_dir", lambda: tmp_path)  # judged afresh, cached here
    model = LiteMedSAM(precision="auto")
    fast = model.interactive_decoder
    assert model.box_decoder.precision == "fp32"  # what segment() and propagation use
    assert fast.precision in ("fp32", "bf16") and "gate" in fast.precision_reason, fast.precision_reason
    assert list(tmp_path.glob("precision-*.json"))  # the verdict is cached
    item = gate_slices()[1]  # lung1's middle lesion slice
    embedding = model.embed(item.image)
    reference = model.decode(embedding, box=item.box).mask
    interactive = model.decode_interactive(embedding, box=item.box).mask
    dice = 2 * (reference & interactive).sum() / (reference.sum() + interactive.sum())
    assert dice >= 0.98, dice  # the gate asks mean >= 0.98 over 9 slices (0.9856 on a Sapphire Rapids Xeon)
