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
