"""benchmarks/mixed_precision.py cuts LiteMedSAM's encoder into stages: run in order, they are the encoder,
so what it measures per stage (docs/speed.md) is about the network promptseg runs."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

import promptseg
from datafiles import REPO
from model_cache import case, litemedsam

spec = importlib.util.spec_from_file_location("bench_mixed_precision", REPO / "benchmarks" / "mixed_precision.py")
mixed = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mixed)


def test_the_stages_in_order_are_the_encoder_on_a_real_slice():
    model = litemedsam()
    encoder = model.net.image_encoder
    volume, _ = case("lung1")
    batch, _ = model.preprocess(promptseg.normalize(volume)[33])
    x = torch.from_numpy(batch)
    stages = mixed.stage_modules(encoder)
    assert [name for name, _ in stages] == list(mixed.STAGES)
    with torch.no_grad():
        expected = encoder(x)
        for _, module in stages:
            x = module(x)
    assert x.shape == expected.shape == (1, 256, 64, 64)
    assert torch.equal(x, expected)


def test_feature_error_is_the_relative_frobenius_distance():
    reference = [np.full((1, 2, 2, 2), 2.0, np.float32)]
    assert mixed.feature_error(lambda x: x, [reference[0] * 1.1], reference) == pytest.approx(0.1, rel=1e-5)
    assert mixed.feature_error(lambda x: x, reference, reference) == 0.0
