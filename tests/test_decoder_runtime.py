"""LiteMedSAM's mask decoder on ONNX Runtime gives the masks eager PyTorch gives (the viewer's re-prompt path)."""

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from promptseg.intensity import NormalizedSlices  # noqa: E402
from promptseg.models.litemedsam import LiteMedSAM  # noqa: E402
from promptseg.runtimes.sam_decoder import build_mask_decoder_runtime  # noqa: E402


@pytest.mark.slow
def test_onnxruntime_decoder_matches_eager_for_boxes_points_and_single_points():
    from model_cache import case, litemedsam

    volume, _ = case("lung1")
    eager = litemedsam()
    fast = LiteMedSAM(decoder_runtime="onnxruntime")
    assert fast.decoder[0] == "onnxruntime" and eager.decoder[0] == "torch"
    embedding = eager.embed(NormalizedSlices.of(volume)[33])
    prompts = [
        dict(box=(206, 347, 229, 368)),
        dict(box=(206, 347, 229, 368), points=np.array([[217, 357], [240, 357]]), point_labels=np.array([1, 0])),
        dict(points=np.array([[217, 357]]), point_labels=np.array([1])),  # one point: best of the multi-mask outputs
    ]
    for prompt in prompts:
        a, b = eager.decode(embedding, **prompt), fast.decode(embedding, **prompt)
        assert np.array_equal(a.mask, b.mask)
        assert np.abs(a.logits - b.logits).max() < 1e-3 and b.score == pytest.approx(a.score, abs=1e-4)


def test_unknown_decoder_runtime_is_refused():
    with pytest.raises(ValueError, match="unknown mask-decoder runtime"):
        build_mask_decoder_runtime(None, None, kind="openvino")
