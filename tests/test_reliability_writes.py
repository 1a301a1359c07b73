"""Full disks, read-only folders and kills during writes lose nothing: no partial output, a one-line
error and a non-zero exit, and the next run cleans up after a killed one.

The full disk is a real 64 KiB tmpfs (mounted here when the test runs as root and
mounting is allowed; otherwise those tests skip with the reason) plus a simulated
ENOSPC at fsync time, which is where filesystems with delayed allocation report it.
"""

import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

from promptseg.errors import ImageWriteError
from promptseg.io import load_labels, load_volume, save_mask, save_volume
from promptseg.io.atomic import clean_stale_temporaries
from promptseg.volume import Volume

from datafiles import REPO, image, label

ENV = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
FORMATS = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".npz")


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs: every output below must fail on it (their data do not compress below 64 KiB)."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a 64 KiB tmpfs needs root and mount(8)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}); the simulated ENOSPC tests still run")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


@pytest.fixture
def noise():
    """A 20 x 64 x 64 label map of random values 0..255 (80 KiB, incompressible) and its grid."""
    rng = np.random.default_rng(0)
    grid = Volume(np.zeros((20, 64, 64), np.int16), spacing=(0.7, 0.7, 2.5), origin=(-10.0, 5.0, 30.0))
    return rng.integers(0, 256, grid.shape).astype(np.uint8), grid


@pytest.mark.parametrize("suffix", FORMATS)
def test_full_disk_leaves_no_file_and_raises(full_disk, noise, suffix):
    labels, grid = noise
    destination = full_disk / f"mask{suffix}"
    with pytest.raises(ImageWriteError, match=rf"^cannot write {destination}: .*(No space left|full|incomplete|flush)"):
        save_mask(labels, destination, reference=grid)
    assert os.listdir(full_disk) == []  # main: a 0-byte or truncated file, and "wrote ..."


def test_full_disk_keeps_the_previous_file(full_disk, noise):
    labels, grid = noise
    small = save_mask(np.zeros(grid.shape, np.uint8), full_disk / "mask.nii.gz", reference=grid)
    before = small.read_bytes()
    with pytest.raises(ImageWriteError):
        save_mask(labels, small, reference=grid)
    assert small.read_bytes() == before and os.listdir(full_disk) == ["mask.nii.gz"]


def _fill(folder):
    with open(folder / "filler", "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"x" * 512)
        except OSError:
            pass


def test_evaluate_leaves_no_csv_when_its_summary_cannot_be_written(full_disk, tmp_path, capsys):
    from promptseg.cli import main

    _fill(full_disk)
    gt = str(label("breast1"))
    status = main(["evaluate", "--pred", gt, "--gt", gt, "-o", str(tmp_path / "m.csv"),
                   "--summary", str(full_disk / "s.json"), "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2 and "No space left on device" in err and "Traceback" not in err
    assert not (tmp_path / "m.csv").exists()  # main: m.csv stayed behind when only the summary failed
    assert os.listdir(full_disk) == ["filler"] and [p.name for p in tmp_path.iterdir()] == ["tiny"]


@pytest.mark.slow
def test_segment_onto_a_full_disk_exits_non_zero_with_nothing_written(full_disk):
    done = subprocess.run(
        [sys.executable, "-m", "promptseg.cli", "segment", str(image("breast1")), "-o", str(full_disk / "t.nii"),
         "--box", "20,60,30,75", "--slice", "10", "--2d", "--no-progress", "--overlay", str(full_disk / "t.png")],
        capture_output=True, text=True, env=ENV, timeout=600)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"promptseg: error: cannot write {full_disk / 't.nii'}")
    assert "wrote" not in done.stdout and os.listdir(full_disk) == []


@pytest.mark.parametrize("suffix", FORMATS + (".png",))
def test_enospc_at_fsync_leaves_no_file(tmp_path, monkeypatch, suffix):
    """Delayed-allocation filesystems report a full disk when the data are flushed, not when written."""
    grid = Volume(np.zeros((1, 16, 16), np.int16))

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(ImageWriteError, match=rf"^cannot write .*mask{suffix}: No space left on device$"):
        save_mask(np.ones((1, 16, 16), np.uint8), tmp_path / f"mask{suffix}", reference=grid)
    assert os.listdir(tmp_path) == []


def test_read_only_folder_fails_before_any_work(tmp_path, capsys):
    from promptseg.cli import main
    from promptseg.reporting.overlay import save_overlay

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if os.access(locked, os.W_OK):
        locked.chmod(0o755)
        pytest.skip("this user can write into read-only folders (root without a read-only mount)")
    try:
        grid = Volume(np.zeros((1, 8, 8), np.uint8))
        with pytest.raises(ImageWriteError, match=r"the folder .*locked is not writable"):
            save_mask(np.zeros((1, 8, 8), np.uint8), locked / "m.nii.gz", reference=grid)
        with pytest.raises(ImageWriteError, match=r"the folder .*locked is not writable"):
            save_overlay(locked / "o.png", np.zeros((1, 8, 8), np.uint8), np.zeros((1, 8, 8), np.uint8))
        assert main(["evaluate", "--pred", str(label("breast1")), "--gt", str(label("breast1")),
                     "-o", str(locked / "m.csv"), "--no-progress"]) == 2
        assert "is not writable" in capsys.readouterr().err
    finally:
        locked.chmod(0o755)
    assert os.listdir(locked) == []


@pytest.fixture
def read_only_mount(tmp_path):
    """A read-only tmpfs (root can write into chmod'ed folders, not into read-only mounts)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_read_only_filesystem_fails_up_front(read_only_mount, capsys):
    from promptseg.cli import main

    grid = Volume(np.zeros((1, 8, 8), np.uint8))
    with pytest.raises(ImageWriteError, match=r"the folder .*ro is not writable \(read-only or no permission\)"):
        save_mask(np.zeros((1, 8, 8), np.uint8), read_only_mount / "m.nii.gz", reference=grid)
    assert main(["evaluate", "--pred", str(label("breast1")), "--gt", str(label("breast1")),
                 "-o", str(read_only_mount / "m.csv"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"promptseg: error: cannot write {read_only_mount / 'm.csv'}: the folder {read_only_mount} " \
                          "is not writable (read-only or no permission)"


def test_overlay_must_be_png_and_cannot_overwrite_inputs(tmp_path, capsys):
    from promptseg.cli import main
    from promptseg.reporting.overlay import save_overlay

    with pytest.raises(ImageWriteError, match=r"cannot write overlay .*ov.nii.gz: an overlay is a PNG image; name it .png"):
        save_overlay(tmp_path / "ov.nii.gz", np.zeros((1, 8, 8), np.uint8), np.zeros((1, 8, 8), np.uint8))
    scan = tmp_path / "scan.nrrd"
    shutil.copy(image("breast1"), scan)
    before = scan.read_bytes()
    null = tmp_path / "null.nii.gz"
    null.symlink_to(os.devnull)  # an atomic rename onto it would replace /dev/null itself
    for args, message in (
        (["-o", str(tmp_path / "m.nii.gz"), "--overlay", str(tmp_path / "ov.nii.gz")], "an overlay is a PNG image"),
        (["-o", str(scan)], "it is an input of this run"),
        (["-o", str(null)], "it exists and is not a regular file"),
    ):
        assert main(["segment", str(scan), "--box", "1,1,5,5", "--slice", "0", *args]) == 2  # before loading a model
        assert message in capsys.readouterr().err
    assert scan.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["null.nii.gz", "scan.nrrd"]
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


# ---------------------------------------------------------------------------
# kill -9 during a write, then a re-run
WRITER = r"""
import sys
import numpy as np
from promptseg.io import save_volume
from promptseg.volume import Volume
volume = Volume(np.random.default_rng(1).integers(0, 4000, (120, 256, 256)).astype(np.int16), spacing=(0.8, 0.8, 2.0))
while True:  # keep rewriting until killed
    save_volume(volume, sys.argv[1])
"""


@pytest.mark.parametrize("suffix", [".nii.gz", ".mhd"])
def test_kill_during_a_write_then_rerun(tmp_path, suffix, caplog):
    destination = tmp_path / f"ct{suffix}"
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(destination)], env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not any(".tmp-" in p.name for p in tmp_path.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    leftovers = [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    assert leftovers, "the kill did not land inside a write"
    if destination.exists():  # an earlier loop iteration completed: that file is whole
        assert load_volume(destination).shape == (120, 256, 256)
    volume = Volume(np.arange(24, dtype=np.int16).reshape(2, 3, 4))
    save_volume(volume, destination)  # the re-run
    assert "left by an interrupted write" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([destination.name] + (["ct.zraw"] if suffix == ".mhd" else []))
    np.testing.assert_array_equal(load_volume(destination).array, volume.array)


def test_temporaries_of_live_processes_and_other_hosts_are_kept_and_reported(tmp_path, caplog):
    live = tmp_path / f".mask.tmp-{_host()}-{os.getppid()}-0123abcd.nii.gz"
    foreign = tmp_path / ".mask.tmp-otherhost-99999-0123abcd.nii.gz"
    legacy = tmp_path / ".mask.tmp-0123456789ab.nii.gz"
    dead = tmp_path / f".mask.tmp-{_host()}-{_dead_pid()}-0123abcd.nii.gz"
    unrelated = tmp_path / ".other.tmp-otherhost-1-0123abcd.nii.gz"
    for path in (live, foreign, legacy, dead, unrelated):
        path.write_bytes(b"partial")
    assert clean_stale_temporaries(tmp_path, ".mask", ".nii.gz") == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (live, foreign, legacy, unrelated))
    assert "written on host otherhost" in caplog.text and "its process is unknown" in caplog.text


def _host():
    from promptseg.io.atomic import _host as host

    return host()


def _dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_labels_written_on_a_nearly_full_disk_read_back_exactly(full_disk):
    grid = Volume(np.zeros((4, 32, 32), np.int16), spacing=(0.5, 0.5, 3.0))
    labels = np.zeros(grid.shape, np.uint8)
    labels[1:3, 8:20, 10:24] = 3
    path = save_mask(labels, full_disk / "small.nrrd", reference=grid)
    np.testing.assert_array_equal(load_labels(path, reference=grid).array, labels)


def test_atomic_paths_renames_all_or_nothing(tmp_path, monkeypatch):
    from promptseg.io import atomic_paths

    a, b = tmp_path / "m.csv", tmp_path / "m.summary.json"
    a.write_text("old csv")
    with pytest.raises(ImageWriteError, match=r"^cannot write .*m.csv and .*m.summary.json: No space left on device$"):
        with atomic_paths(a, b) as (ta, tb):
            ta.write_text("new csv")
            raise OSError(errno.ENOSPC, "No space left on device")  # while writing the second file
    assert a.read_text() == "old csv" and sorted(p.name for p in tmp_path.iterdir()) == ["m.csv"]
    real_fsync = os.fsync
    calls = []

    def fsync_fails_on_the_second(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_fails_on_the_second)
    with pytest.raises(ImageWriteError, match=r"m.summary.json: Disk quota exceeded"):
        with atomic_paths(a, b) as (ta, tb):
            ta.write_text("new csv")
            tb.write_text("{}")
    assert a.read_text() == "old csv" and sorted(p.name for p in tmp_path.iterdir()) == ["m.csv"]
