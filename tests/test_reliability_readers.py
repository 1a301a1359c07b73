"""Issue 15's reader reproducers: each malformed file is a one-line typed error, never a crash,
a hang, or a volume with garbage in it.

Files that crashed (SIGSEGV) or hung native code are read in a subprocess with a
time limit, so a regression fails this test instead of killing the test run.
"""

import json
import os
import re
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from promptseg.errors import ImageReadError, PromptError
from promptseg.io import load_labels, load_volume, read_budget, set_read_budget
from promptseg.io.limits import BUDGET_ENV
from promptseg.prompts import load_prompt_file
from promptseg.training.config import ConfigError, load_config

from datafiles import REPO, label

ENV = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _image(pixel=sitk.sitkInt16):
    """The breast MR label map (real geometry, 45 x 120 x 21 voxels), as ``pixel`` type."""
    return sitk.Cast(sitk.ReadImage(str(label("breast1"))), pixel)


def _write(image, path, compress=False):
    sitk.WriteImage(image, str(path), useCompression=compress)
    return path


def _patch(path, offset, fmt, *values):
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, offset, *values)
    path.write_bytes(bytes(data))
    return path


def _cli(*args, timeout=120):
    """``promptseg ARGS`` in a subprocess: (exit status, stdout, stderr)."""
    done = subprocess.run([sys.executable, "-m", "promptseg.cli", *map(str, args)], capture_output=True,
                          text=True, env=ENV, timeout=timeout)
    return done.returncode, done.stdout, done.stderr


def _one_line_error(stderr, pattern):
    lines = [line for line in stderr.strip().splitlines() if line.startswith("promptseg: error:")]
    assert len(lines) == 1, stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in stderr


# ---------------------------------------------------------------------------
# MetaImage: NDims = -1 segfaulted MetaIO in info, segment and evaluate
def test_mha_with_negative_ndims_is_refused_by_every_command(tmp_path):
    good = _write(_image(), tmp_path / "good.mha")
    bad = tmp_path / "bad.mha"
    bad.write_bytes(good.read_bytes().replace(b"NDims = 3", b"NDims = -1"))
    message = r"invalid MetaImage header: NDims = '-1': promptseg reads 2D and 3D images"
    for args in (("info", bad),
                 ("segment", bad, "-o", tmp_path / "out.nii.gz", "--box", "1,1,5,5", "--slice", "0"),
                 ("evaluate", "--pred", bad, "--gt", good, "-o", tmp_path / "m.csv")):
        status, _, stderr = _cli(*args)
        assert status == 2, (args, stderr)
        _one_line_error(stderr, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mha", "good.mha"]


@pytest.mark.parametrize("change, reason", [
    (b"DimSize = 45 120", r"DimSize = '45 120' is not 3 positive integers"),
    (b"ElementType = MET_STRING", r"ElementType 'MET_STRING' is not supported"),
    (b"ElementSpacing = 0 1 1", r"ElementSpacing: spacing \(0, 1, 1\) mm is outside the accepted range"),
    (b"TransformMatrix = 1 0 0 1 0 0 0 0 1", r"TransformMatrix: direction .* is singular"),
    (b"CompressedDataSize = 17", r"CompressedDataSize '17' does not fit|truncated"),
])
def test_mha_header_fields_are_checked_before_metaio(tmp_path, change, reason):
    path = _write(_image(), tmp_path / "x.mha", compress=True)
    text = path.read_bytes()
    key = change.split(b" = ")[0]
    line = re.search(rb"^" + key + rb" = [^\n]*$", text, flags=re.M)
    patched = text[: line.start()] + change + text[line.end():] if line else text.replace(b"NDims = 3\n", b"NDims = 3\n" + change + b"\n")
    path.write_bytes(patched)
    with pytest.raises(ImageReadError, match=reason):
        load_volume(path)


def test_mha_without_compressed_data_size_is_refused_not_read_as_uninitialised_memory(tmp_path):
    path = _write(_image(), tmp_path / "x.mha", compress=True)
    path.write_bytes(re.sub(rb"CompressedDataSize = \d+\n", b"", path.read_bytes()))
    with pytest.raises(ImageReadError, match=r"CompressedDataSize '\(missing\)' does not fit"):
        load_volume(path)


# ---------------------------------------------------------------------------
# NIfTI
SFORM_CODE, SROW_X, SROW_Y, SROW_Z = 254, 280, 296, 312


def test_nifti_with_infinite_srow_does_not_hang(tmp_path):
    path = _write(_image(), tmp_path / "x.nii")
    _patch(path, SFORM_CODE, "<h", 1)
    _patch(path, SROW_Y, "<f", -1.0)
    _patch(path, SROW_Y + 12, "<f", float("inf"))
    status, _, stderr = _cli("info", path, timeout=60)  # ITK's nifti_io looped forever here
    assert status == 2
    _one_line_error(stderr, r"the NIfTI header's srow_x/y/z \(.*inf.*\) is not finite")


def test_nifti_with_nan_srow_is_refused_and_nothing_is_written(tmp_path):
    path = _write(_image(), tmp_path / "x.nii")
    _patch(path, SFORM_CODE, "<h", 1)
    _patch(path, SROW_Z + 8, "<f", float("nan"))
    status, _, stderr = _cli("segment", path, "-o", tmp_path / "mask.nii.gz", "--box", "1,1,9,9", "--slice", "3")
    assert status == 2
    _one_line_error(stderr, r"srow_x/y/z \(.*nan.*\) is not finite")
    assert not (tmp_path / "mask.nii.gz").exists()


def test_nifti_with_singular_sform_is_refused(tmp_path):
    path = _write(_image(), tmp_path / "x.nii")
    _patch(path, SFORM_CODE, "<h", 1)
    _patch(path, SROW_Z, "<4f", 0.0, 0.0, 0.0, 5.0)
    with pytest.raises(ImageReadError, match=r"the NIfTI sform matrix .* is singular"):
        load_volume(path)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_nan_and_inf_voxels_are_refused_like_nrrd_and_mha(tmp_path, suffix):
    array = np.ones((4, 5, 6), np.float32)
    array[1, 2, 3], array[2, 0, 0] = np.nan, np.inf
    for ext in (suffix, ".nrrd", ".mha"):
        path = _write(sitk.GetImageFromArray(array), tmp_path / f"v{ext}", compress=ext.endswith("gz"))
        with pytest.raises(ImageReadError, match=r"2 of 120 voxels are not finite \(NaN or inf\)"):
            load_volume(path)  # ITK's NIfTI reader alone returns these voxels as 0


def test_nifti_header_garbage_is_refused(tmp_path):
    path = _write(_image(), tmp_path / "x.nii")
    cases = [
        (40, "<h", (9,), r"dim\[0\] is 9, not 1..7"),
        (70, "<h", (32,), r"complex64 NIfTI data are not supported"),
        (72, "<h", (7,), r"bitpix 7 does not match datatype"),
        (108, "<f", (float("nan"),), r"vox_offset nan is invalid"),
        (112, "<2f", (1e38, 5.0), r"scaling .* overflows float32"),
    ]
    original = path.read_bytes()
    for offset, fmt, values, reason in cases:
        path.write_bytes(original)
        _patch(path, offset, fmt, *values)
        with pytest.raises(ImageReadError, match=reason):
            load_volume(path)


# ---------------------------------------------------------------------------
# NRRD: singular directions accepted, 1e200 read as 1 mm, 1e-30 gave NSD nan
def _nrrd(tmp_path, field_line):
    path = _write(_image(), tmp_path / "x.nrrd")
    text = path.read_bytes()
    line = re.search(rb"^space directions: [^\n]*$", text, flags=re.M)
    path.write_bytes(text[: line.start()] + field_line + text[line.end():])
    return path


@pytest.mark.parametrize("field_line, reason", [
    (b"space directions: (1,0,0) (2,0,0) (0,0,1)", r"space directions are linearly dependent"),
    (b"space directions: (1e200,0,0) (0,1,0) (0,0,1)", r"space directions give a spacing \(1e\+200, 1, 1\) mm is outside the accepted range 1e-06 .. 100000 mm"),
    (b"space directions: (1e-30,0,0) (0,1,0) (0,0,1)", r"space directions give a spacing \(1e-30, 1, 1\) mm is outside the accepted range"),
    (b"spacings: 1e200 1 1", r"spacing \(1e\+200, 1, 1\) mm is outside the accepted range"),
    (b"space directions: (nan,0,0) (0,1,0) (0,0,1)", r"space directions value 'nan' is not a finite number"),
])
def test_nrrd_absurd_geometry_is_refused(tmp_path, field_line, reason):
    with pytest.raises(ImageReadError, match=r"invalid NRRD header: " + reason):
        load_volume(_nrrd(tmp_path, field_line))


def test_nrrd_text_data_with_a_huge_token_does_not_crash_teem(tmp_path):
    path = tmp_path / "t.nrrd"
    path.write_bytes(b"NRRD0004\ntype: short\ndimension: 2\nsizes: 3 2\nencoding: ascii\n\n" + b"7" * 5000 + b"\n")
    code = f"from promptseg.io import load_volume\nload_volume({str(path)!r})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    assert done.returncode == 1 and "ImageReadError" in done.stderr  # teem segfaulted on this file
    assert "text-encoded value 1 is not a number" in done.stderr


def test_detached_nrrd_pointing_at_a_device_is_refused(tmp_path):
    path = tmp_path / "x.nhdr"
    path.write_bytes(b"NRRD0004\ntype: short\ndimension: 2\nsizes: 3 2\nencoding: raw\nendian: little\n"
                     b"data file: /dev/zero\n")
    with pytest.raises(ImageReadError, match=r"data file of .*x.nhdr: /dev/zero: it is a character device"):
        load_volume(path)


# ---------------------------------------------------------------------------
# Pillow rasters
def test_png_claiming_15000_by_15000_pixels_is_a_typed_error(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (8, 8)).save(path)
    data = bytearray(path.read_bytes())
    struct.pack_into(">II", data, 16, 15000, 15000)  # IHDR width/height (CRC left stale)
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match=r"cannot read .*big.png: "):
        load_volume(path)


def test_png_chunk_claiming_4_gib_is_refused_before_pillow_allocates_it(tmp_path):
    path = tmp_path / "chunk.png"
    Image.new("L", (8, 8)).save(path)
    data = bytearray(path.read_bytes())
    idat = data.index(b"IDAT") - 4
    struct.pack_into(">I", data, idat, 0xFF000000)
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match=r"truncated or corrupt PNG \(chunk IDAT at byte \d+ claims 4278190080 bytes"):
        load_volume(path)


def test_truncated_multipage_tiff_is_a_typed_error(tmp_path):
    path = tmp_path / "pages.tif"
    pages = [Image.fromarray(np.full((30, 40), i * 40, np.uint8)) for i in range(4)]
    pages[0].save(path, save_all=True, append_images=pages[1:])
    data = path.read_bytes()
    for cut in (len(data) // 3, len(data) // 2, len(data) - 40):
        path.write_bytes(data[:cut])
        with pytest.raises(ImageReadError, match=r"cannot read .*pages.tif"):
            load_volume(path)


def test_raster_beyond_the_read_budget_names_the_setting(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("L", (2000, 1000)).save(path)
    set_read_budget(1_000_000)
    try:
        with pytest.raises(ImageReadError, match=rf"more than the read budget of 976.6 KiB; .*raise {BUDGET_ENV}"):
            load_volume(path)
    finally:
        set_read_budget(None)
    assert load_volume(path).shape == (1, 1000, 2000)


# ---------------------------------------------------------------------------
# NPZ
def _npz(path, **arrays):
    np.savez_compressed(path, **arrays)
    return path


def _replace_member(path, name, data, compress_type=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    members[name] = data
    with zipfile.ZipFile(path, "w", compression=compress_type) as archive:
        for member, content in members.items():
            archive.writestr(member, content)
    return path


def _npy_header(header: bytes) -> bytes:
    padded = header + b" " * ((64 - (10 + len(header) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(padded)) + padded


def test_npz_header_claiming_a_huge_shape_is_refused_before_allocation(tmp_path):
    path = _npz(tmp_path / "x.npz", imgs=np.zeros((2, 3, 4), np.int16))
    _replace_member(path, "imgs.npy", _npy_header(b"{'descr': '<i2', 'fortran_order': False, 'shape': (100000, 100000, 100000), }"))
    with pytest.raises(ImageReadError, match=rf"key 'imgs'\): the image would need 1.8 PiB .* raise {BUDGET_ENV}"):
        load_volume(path)


@pytest.mark.parametrize("header", [
    b"{'descr': '<i2', 'fortran_order': False, 'shape': (2, 3, ",  # unclosed tuple: tokenize.TokenError in NumPy
    b"{'descr': 'nonsense', 'fortran_order': False, 'shape': (2,), }",
    b"not a dict at all",
])
def test_npz_malformed_npy_header_is_a_typed_error(tmp_path, header):
    path = _npz(tmp_path / "x.npz", imgs=np.zeros((2, 3, 4), np.int16))
    _replace_member(path, "imgs.npy", _npy_header(header))
    with pytest.raises(ImageReadError, match=r"key 'imgs' has a malformed array header"):
        load_volume(path)


def test_npz_corrupt_deflate_stream_and_unknown_method_are_typed_errors(tmp_path):
    path = _npz(tmp_path / "x.npz", imgs=np.arange(4000, dtype=np.int32).reshape(10, 20, 20))
    data = bytearray(path.read_bytes())
    start = data.index(b"imgs.npy") + 200
    data[start:start + 64] = bytes(64)
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match=r"cannot read .*x.npz"):
        load_volume(path)
    path = _npz(tmp_path / "y.npz", imgs=np.zeros((2, 3, 4), np.int16))
    data = bytearray(path.read_bytes())
    for marker in (b"PK\x03\x04", b"PK\x01\x02"):  # local header and central directory: method 99
        at = data.index(marker)
        offset = at + (8 if marker == b"PK\x03\x04" else 10)
        struct.pack_into("<H", data, offset, 99)
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match=r"key 'imgs' uses zip compression method 99"):
        load_volume(path)


@pytest.mark.parametrize("values", [
    np.array([["a", "b"], ["c", "d"]], dtype="<U5"),
    np.array([[b"a", b"b"], [b"c", b"d"]], dtype="S3"),
    np.zeros((2, 2), dtype="V8"),
    np.zeros((2, 2), dtype="datetime64[s]"),
])
def test_npz_non_numeric_arrays_are_refused_as_images_and_labels(tmp_path, values, capsys):
    from promptseg.cli import main

    path = _npz(tmp_path / "x.npz", imgs=values, gts=values)
    with pytest.raises(ImageReadError, match=r"key 'imgs' holds .* values; an image or label map must hold numbers"):
        load_volume(path)
    with pytest.raises(ImageReadError, match=r"key 'gts' holds .* values"):
        load_labels(path)
    good = _npz(tmp_path / "ref.npz", imgs=np.zeros((2, 2), np.uint8), gts=np.zeros((2, 2), np.uint8))
    assert main(["evaluate", "--pred", str(path), "--gt", str(good), "-o", str(tmp_path / "m.csv"), "--no-progress"]) == 2
    _one_line_error(capsys.readouterr().err, r"key 'gts' holds")  # main: a TypeError traceback in evaluate
    assert not (tmp_path / "m.csv").exists()


def test_npz_spacing_out_of_range_is_refused(tmp_path):
    path = _npz(tmp_path / "x.npz", imgs=np.zeros((2, 3, 4), np.int16), spacing=np.array([1e-30, 1.0, 1.0]))
    with pytest.raises(ImageReadError, match=r"spacing \(1e-30, 1, 1\) mm is outside the accepted range"):
        load_volume(path)


# ---------------------------------------------------------------------------
# FIFOs and devices: reading one used to block forever
@pytest.fixture
def fifo(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("this platform has no FIFOs")
    def make(name):
        path = tmp_path / name
        os.mkfifo(path)
        return path
    return make


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["scan.nii.gz", "scan.nrrd", "scan.mha", "scan.npz", "scan.png", "scan.dcm"])
def test_fifo_inputs_are_refused_without_blocking(fifo, name):
    path = fifo(name)
    with pytest.raises(ImageReadError, match=r"it is a FIFO \(named pipe\), not a regular file"):
        load_volume(path)
    with pytest.raises(ImageReadError, match=r"it is a FIFO"):
        load_labels(path)


@pytest.mark.timeout(60)
def test_fifo_prompt_file_and_config_are_refused_without_blocking(fifo):
    with pytest.raises(PromptError, match=r"cannot read \(not a regular file\)"):
        load_prompt_file(fifo("prompts.json"))
    with pytest.raises(ConfigError, match=r"cannot read \(not a regular file\)"):
        load_config(fifo("cfg.yaml"))


@pytest.mark.timeout(60)
def test_devices_are_refused(tmp_path):
    with pytest.raises(ImageReadError, match=r"/dev/zero: it is a character device, not a regular file"):
        load_volume("/dev/zero")
    link = tmp_path / "zero.nii"
    link.symlink_to("/dev/zero")
    with pytest.raises(ImageReadError, match=r"zero.nii: it is a character device"):
        load_volume(link)


# ---------------------------------------------------------------------------
# the read budget is configurable and named in the message
def test_read_budget_from_the_environment(tmp_path, monkeypatch):
    path = _write(_image(), tmp_path / "x.nrrd")
    monkeypatch.setenv(BUDGET_ENV, "100K")
    assert read_budget() == 100 * 1024
    with pytest.raises(ImageReadError, match=rf"would need 221.5 KiB \(45 x 120 x 21 x 1 elements of 2 bytes\), "
                                             rf"more than the read budget of 100.0 KiB; .*raise {BUDGET_ENV}"):
        load_volume(path)
    monkeypatch.setenv(BUDGET_ENV, "1G")
    assert load_volume(path).shape == (21, 120, 45)
    monkeypatch.setenv(BUDGET_ENV, "lots")
    with pytest.raises(ImageReadError, match=rf"{BUDGET_ENV}='lots': expected a size such as 8G"):
        load_volume(path)


# ---------------------------------------------------------------------------
# prompt files: depth and object count are bounded
def test_prompt_file_of_100000_nested_brackets(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(PromptError, match=r"deep.json: nested 100000 levels deep \(at most 64 are read\)"):
        load_prompt_file(path)


def test_prompt_file_with_65536_unlabelled_objects(tmp_path):
    path = tmp_path / "many.json"
    path.write_text(json.dumps({"objects": [{"slice": 0, "box": [0, 0, 1, 1]}] * 65536}))
    with pytest.raises(PromptError, match=r"65536 objects; a prompt file holds at most 65535"):
        load_prompt_file(path)


def test_prompt_file_nan_literals_and_short_key_slice_boxes(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"objects": [{"slice": 0, "box": [NaN, 0, 4, 4]}]}')
    with pytest.raises(PromptError, match=r"not valid JSON \(NaN is not a JSON number\)"):
        load_prompt_file(path)
    path.write_text('{"objects": [{"key_slices": {"0": [1, 1, 5, 5, 9], "3": [1, 1, 5, 5]}}]}')
    with pytest.raises(PromptError, match=r"each key-slice box needs 4 numbers"):
        load_prompt_file(path)
