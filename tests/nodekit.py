"""Helpers of the DICOM node tests: small real CT series, node configs, dcmtk peers.

Series are 64 x 64 x 5 crops of the bundled lung CT (promptseg/data/lung1_image.nrrd) around
its tumour, written as CT image series with promptseg.io.dicom.write_series.
"""

from __future__ import annotations

import functools
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from datafiles import REPO

#: crop of lung1 around the tumour (z, y, x slices) and a box around the tumour in crop voxels
CROP = (slice(31, 36), slice(328, 392), slice(186, 250))
TUMOUR_BOX = [16, 16, 48, 48]


@functools.lru_cache(maxsize=None)
def lung_crop():
    """The 5 x 64 x 64 crop of the bundled lung CT (a Volume, HU)."""
    import promptseg

    volume = promptseg.load_volume(REPO / "promptseg" / "data" / "lung1_image.nrrd")
    array = volume.array[CROP]
    origin = np.asarray(volume.origin) + np.asarray(volume.spacing) * [CROP[2].start, CROP[1].start, CROP[0].start]
    return promptseg.Volume(array, spacing=volume.spacing, origin=origin, direction=volume.direction, modality="CT")


@functools.lru_cache(maxsize=None)
def lung_tumour_crop() -> np.ndarray:
    """The reference tumour mask of lung1 on the crop, ``(5, 64, 64)`` bool."""
    import promptseg

    image = REPO / "promptseg" / "data" / "lung1_image.nrrd"
    labels = promptseg.load_labels(REPO / "promptseg" / "data" / "lung1_label.nrrd", reference=promptseg.load_volume(image))
    return labels.array[CROP] > 0


def write_gtv_rtstruct(series_files: list[Path], path: Path, name: str = "GTV-1") -> Path:
    """An RTSTRUCT on a written crop series holding the reference tumour as ROI ``name`` (promptseg.io.dicom)."""
    from promptseg.io.dicom import read_dicom_series, write_rtstruct

    reference = read_dicom_series(series_files[0].parent)
    labels = reference.with_array(lung_tumour_crop().astype(np.uint8), modality=None)
    return write_rtstruct(labels, reference, path, names={1: name}, series_description="planning")


def write_ct_series(folder: Path, *, study_uid: str | None = None, series_uid: str | None = None,
                    description: str = "THORAX 5mm", body_part: str = "CHEST", patient_id: str = "NODE-TEST",
                    series_number: int = 1) -> list[Path]:
    """The lung crop as a CT series (one file per slice, promptseg.io.dicom.write_series) in the new folder
    ``folder``; returns the files in slice order."""
    from promptseg.io.dicom import write_series

    uids = {key: value for key, value in (("study", study_uid), ("series", series_uid)) if value}
    return write_series(lung_crop(), folder, modality="CT", patient_name="Test^Node", patient_id=patient_id,
                        series_description=description, series_number=series_number, body_part=body_part,
                        uids=uids or None)


def malform(files: list[Path], kind: str) -> str:
    """Break a written series in place; returns the words the quarantine reason must contain.

    kinds: ``missing-slice`` (the middle file deleted), ``truncated`` (pixel data cut in half),
    ``mixed-size`` (one instance 32 x 32).
    """
    if kind == "missing-slice":
        files[len(files) // 2].unlink()
        return "missing slices"
    ds = pydicom.dcmread(files[1])
    if kind == "truncated":
        ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
        ds.save_as(files[1])
        return "truncated DICOM image"
    if kind == "mixed-size":
        ds.Rows = ds.Columns = 32
        ds.PixelData = ds.PixelData[: 32 * 32 * 2]
        ds.save_as(files[1])
        return "inconsistent Rows"
    raise ValueError(kind)


def threshold_factory(name, checkpoint):
    """A fast deterministic stand-in model (tests/fakes.py) for scenarios that test the node, not the model."""
    from fakes import ThresholdSegmenter

    return ThresholdSegmenter()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def node_doc(storage: Path, *, quiet: float = 0.5, destinations: dict | None = None, rules: list | None = None,
             callers: list | None = None, retry: dict | None = None, **node) -> dict:
    """A config document for a node on 127.0.0.1 (any free port) sending box-prompted RTSTRUCTs to ``destinations``
    (without destinations: writing them to the folder ``results`` next to ``storage``)."""
    destinations = destinations or {}
    return {
        "node": {"ae_title": "PROMPTSEG", "host": "127.0.0.1", "port": 0, "storage": str(storage),
                 "quiet_seconds": quiet, **node},
        "allowed_callers": callers or [{"ae_title": "CT_SCANNER"}, {"ae_title": "PLANNING"}],
        "destinations": destinations,
        "retry": retry or {"max_attempts": 4, "initial_delay_seconds": 0.2, "backoff_factor": 2, "max_delay_seconds": 2},
        "rules": rules or [{
            "name": "lung", "match": {"modality": ["CT"]},
            "prompts": [{"box": TUMOUR_BOX, "slice": "middle", "label": 1, "name": "Tumour_ps"}],
            "output": {"format": "rtstruct", "send_to": list(destinations),
                       **({} if destinations else {"folder": str(storage.parent / "results")})},
        }],
    }


def dcmtk(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"dcmtk's {tool} not installed: apt-get install dcmtk")
    return path


def storescu(files, port: int, calling: str = "CT_SCANNER", called: str = "PROMPTSEG", timeout: float = 60):
    """Push ``files`` in one association with dcmtk's storescu; returns the CompletedProcess."""
    return subprocess.run([dcmtk("storescu"), "-aet", calling, "-aec", called, "127.0.0.1", str(port), *map(str, files)],
                          capture_output=True, text=True, timeout=timeout)


class StoreSCP:
    """dcmtk's storescp on a free port, writing every received instance to its own file (``+uf``: duplicates show)."""

    def __init__(self, folder: Path, ae_title: str = "RECEIVER") -> None:
        self.folder, self.ae_title, self.port = folder, ae_title, free_port()
        self.process = None

    def start(self) -> "StoreSCP":
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen([dcmtk("storescp"), "-aet", self.ae_title, "-od", str(self.folder), "+uf",
                                         str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError("storescp did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def __enter__(self) -> "StoreSCP":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def received(self) -> list[pydicom.Dataset]:
        """Every data set received so far (one per file, duplicates included)."""
        return [pydicom.dcmread(p) for p in sorted(self.folder.iterdir()) if p.is_file()]

    def destination(self) -> dict:
        return {"ae_title": self.ae_title, "host": "127.0.0.1", "port": self.port}
