"""Seed inputs for the fuzz campaign, made from the repository's real data.

Every seed is a small, valid file of its format cut from a bundled scan
(``tests/data/radiomics/breast1_*``, the LIDC-style CT slice in
``tests/data/dicom_rt``), the repository's PNG mask, the example training
configs and prompt documents as docs/prompts.md describes them. An input is a
dict ``{file name: bytes}`` (``.mhd`` and ``.nhdr`` come with their data file);
the first entry is the file the target reads (the DICOM series and RTSTRUCT
targets read the folder, or the first file against the DICOM series around it).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"


def _crop_volume():
    """A 24 x 20 x 5 (x, y, z) int16 crop of the breast MR and its uint8 label, with real geometry."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(DATA / "radiomics" / "breast1_image.nrrd"))
    label = sitk.ReadImage(str(DATA / "radiomics" / "breast1_label.nrrd"))
    array = sitk.GetArrayFromImage(label)
    z, y, x = (int(np.median(v)) for v in np.nonzero(array))
    box = (slice(max(z - 2, 0), max(z - 2, 0) + 5), slice(max(y - 10, 0), max(y - 10, 0) + 20),
           slice(max(x - 12, 0), max(x - 12, 0) + 24))
    index = [box[2].start, box[1].start, box[0].start]
    size = [24, 20, 5]
    crop = sitk.RegionOfInterest(image, size, index)
    crop_label = sitk.Cast(sitk.RegionOfInterest(label, size, index), sitk.sitkUInt8)
    return crop, crop_label


def _sitk_bytes(image, suffix: str, compress: bool, folder: Path) -> dict[str, bytes]:
    import SimpleITK as sitk

    name = f"seed{suffix}"
    path = folder / name
    sitk.WriteImage(image, str(path), useCompression=compress)
    files = {name: path.read_bytes()}
    if suffix in (".mhd", ".nhdr"):
        for companion in sorted(folder.iterdir()):
            if companion.name != name and companion.name.startswith("seed."):
                files[companion.name] = companion.read_bytes()
    for item in folder.iterdir():
        item.unlink()
    return files


def _raster(image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _npz(compressed: bool, **arrays) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


PROMPT_DOCUMENTS = [
    {"objects": [{"label": 1, "name": "lesion", "slice": 2, "box": [4, 3, 15, 12]}]},
    {"objects": [{"slice": 1, "points": [[8, 8], [2, 2, 0]]}, {"slice": 3, "line": [3, 4, 12, 10]}]},
    {"objects": [{"label": 2, "box3d": [3, 3, 1, 14, 12, 3]}]},
    {"objects": [{"label": 3, "key_slices": {"0": [2, 2, 10, 10], "4": [3, 3, 12, 12]}}]},
    {"objects": [{"label": 4, "slice": 2, "box": [1, 1, 9, 9], "z_range": [1, 3], "points": [[5, 5, 1]]}]},
]


_S = "/api/sessions/{session}"
#: request documents of the ``http`` target (tests/fuzz/http_api.py): every endpoint, valid and hostile
HTTP_REQUESTS = [
    {"method": "GET", "path": "/api/info"},
    {"method": "GET", "path": "/api/files"},
    {"method": "POST", "path": "/api/sessions", "json": {"path": "scan.nii.gz"}},
    {"method": "POST", "path": "/api/sessions", "json": {"path": "series", "modality": "mr", "window": "40,400"}},
    {"method": "POST", "path": "/api/sessions", "json": {"path": "../secret.nii.gz"}},
    {"method": "POST", "path": "/api/sessions", "json": {"path": "link.nii.gz"}},
    {"method": "POST", "path": "/api/sessions", "json": {"path": "fifo.nii.gz"}},
    {"method": "POST", "path": "/api/sessions", "json": {"path": "/etc/passwd", "series": "1.2.3"}},
    {"method": "POST", "path": "/api/sessions", "json": {"path": "text.nii.gz", "model": "sam"}},
    {"method": "POST", "path": "/api/sessions", "raw": '{"path": "scan.nii.gz"', "headers": {"content-type": "application/json"}},
    {"method": "POST", "path": "/api/sessions", "zeros": 70_000_000, "headers": {"content-type": "application/json"}},
    {"method": "GET", "path": _S},
    {"method": "POST", "path": _S + "/prompt", "json": {"label": 1, "slice": 2, "box": [4, 3, 15, 12]}},
    {"method": "POST", "path": _S + "/prompt", "json": {"label": 2, "slice": 1, "points": [[8, 8, 1], [2, 2, 0]]}},
    {"method": "POST", "path": _S + "/prompt", "json": {"label": 1, "slice": 2, "box": [float("nan"), 0, 5, 5]}},
    {"method": "POST", "path": _S + "/prompt", "json": {"label": 1, "slice": 2, "box": [100, 100, 200, 200]}},
    {"method": "POST", "path": _S + "/prompt", "json": {"label": 1, "slice": 99, "points": [[1e308, -1e308, 1]]}},
    {"method": "POST", "path": _S + "/focus", "json": {"slice": 1}},
    {"method": "POST", "path": _S + "/propagate", "json": {"label": 1}},
    {"method": "POST", "path": _S + "/cancel", "json": {"label": 1}},
    {"method": "POST", "path": _S + "/undo"},
    {"method": "POST", "path": _S + "/redo"},
    {"method": "PUT", "path": _S + "/labels/2", "json": {"name": "lesion", "color": [255, 0, 0], "visible": True}},
    {"method": "DELETE", "path": _S + "/labels/2"},
    {"method": "POST", "path": _S + "/edit",
     "json": {"label": 1, "slices": [{"slice": 2, "bbox": [0, 0, 7, 0], "bits": "/w=="}]}},
    {"method": "POST", "path": _S + "/reference", "json": {"path": "ref.nii.gz"}},
    {"method": "GET", "path": _S + "/dice"},
    {"method": "POST", "path": _S + "/export", "json": {"format": "nii.gz", "name": "../../escape"}},
    {"method": "POST", "path": _S + "/export", "json": {"format": "rtstruct"}},
    {"method": "GET", "path": _S + "/exports/..%2f..%2fsecret.nii.gz"},
    {"method": "GET", "path": _S + "/image.nii.gz"},
    {"method": "GET", "path": _S + "/labels.nii.gz"},
    {"method": "POST", "path": "/api/uploads?name=up.nii.gz", "file": "scan.nii.gz"},
    {"method": "POST", "path": "/api/uploads?name=../../up.nrrd", "zeros": 3_000_000},
    {"method": "GET", "path": "/api/info", "token": None},
    {"method": "GET", "path": "/api/files", "token": "wrong"},
    {"method": "DELETE", "path": _S},
    {"method": "GET", "path": "/api/nothing"},
]


def make_seeds(scratch: Path) -> dict[str, list[dict[str, bytes]]]:
    """Seed inputs per target name (see :mod:`tests.fuzz.targets`)."""
    import SimpleITK as sitk
    from PIL import Image

    scratch.mkdir(parents=True, exist_ok=True)
    image, label = _crop_volume()
    floating = sitk.Cast(image, sitk.sitkFloat32) * 0.5
    slice2d = sitk.Cast(sitk.Extract(image, [24, 20, 0], [0, 0, 2]), sitk.sitkUInt16)
    seeds: dict[str, list[dict[str, bytes]]] = {}
    seeds["nifti"] = [
        _sitk_bytes(image, ".nii", False, scratch),
        _sitk_bytes(floating, ".nii", False, scratch),
        _sitk_bytes(label, ".nii.gz", True, scratch),
        _sitk_bytes(slice2d, ".nii", False, scratch),
    ]
    seeds["nrrd"] = [
        _sitk_bytes(image, ".nrrd", False, scratch),
        _sitk_bytes(floating, ".nrrd", True, scratch),
        _sitk_bytes(label, ".nrrd", True, scratch),
        _sitk_bytes(image, ".nhdr", False, scratch),
    ]
    seeds["metaimage"] = [
        _sitk_bytes(image, ".mha", False, scratch),
        _sitk_bytes(floating, ".mha", True, scratch),
        _sitk_bytes(label, ".mha", True, scratch),
        _sitk_bytes(image, ".mhd", False, scratch),
    ]
    volume = sitk.GetArrayFromImage(image)
    labels = sitk.GetArrayFromImage(label)
    spacing = np.asarray(image.GetSpacing())
    rgb = np.stack([volume[2] % 256, (volume[2] // 3) % 256, labels[2] * 200], axis=-1).astype(np.uint8)
    seeds["npz"] = [
        {"seed.npz": _npz(True, imgs=volume, gts=labels, spacing=spacing)},
        {"seed.npz": _npz(False, imgs=volume.astype(np.float32), gts=labels, spacing=spacing)},
        {"seed.npz": _npz(True, imgs=rgb, gts=labels[2])},
        {"seed.npz": _npz(False, segs=labels, spacing=spacing[:2])},
    ]
    gray = Image.fromarray((volume[2] % 256).astype(np.uint8))
    pages = [Image.fromarray(volume[z].astype(np.uint16)) for z in range(3)]
    seeds["raster"] = [
        {"seed.png": _raster(gray, "PNG")},
        {"seed.png": _raster(Image.fromarray(volume[1].astype(np.uint16)), "PNG")},
        {"seed.png": _raster(Image.fromarray(labels[2] * 3).convert("P"), "PNG")},
        {"seed.png": (DATA / "ct_small_aorta_mask.png").read_bytes()},
        {"seed.tif": _raster(pages[0], "TIFF", save_all=True, append_images=pages[1:])},
        {"seed.tif": _raster(Image.fromarray(volume[2].astype(np.float32)), "TIFF", compression="tiff_deflate")},
        {"seed.jpg": _raster(Image.fromarray(rgb), "JPEG", quality=90)},
        {"seed.bmp": _raster(Image.fromarray(rgb), "BMP")},
    ]
    seeds.update(_dicom_seeds(scratch / "dicom", image, label))
    seeds["http"] = [{"seed.json": json.dumps(doc, allow_nan=True).encode()} for doc in HTTP_REQUESTS]
    seeds["prompts"] = [{"seed.json": json.dumps(doc, indent=1).encode()} for doc in PROMPT_DOCUMENTS]
    seeds["config"] = [
        {"seed.yaml": path.read_bytes()} for path in sorted((REPO / "examples" / "configs").glob("*.yaml"))
    ]
    return seeds


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def _trimmed_rtss(reference_z: float) -> bytes:
    """The real RT Structure Set of ``tests/data/dicom_rt`` cut to the contours on its CT slice plus two per ROI.

    The original holds 1.9 MB of contours on 98 slices (only one slice is in the
    repository); its structure -- implicit VR, 10 ROIs, observations, referenced
    frames -- is kept as the planning system wrote it.
    """
    import pydicom

    dataset = pydicom.dcmread(DATA / "dicom_rt" / "rtss.dcm")
    for item in dataset.ROIContourSequence:
        contours = list(item.get("ContourSequence", []))
        on_slice = [c for c in contours if abs(float(c.ContourData[2]) - reference_z) < 0.01]
        kept = (on_slice + [c for c in contours if c not in on_slice][:2])[:3]
        if contours:
            item.ContourSequence = kept
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


def _fix_uids_and_dates(path: Path, uids: dict) -> None:
    """Rewrite promptseg's fresh UIDs and today's dates with stable ones, so that seeds (and campaigns) repeat.

    ``uids`` maps fresh UIDs to stable ones across files, so references stay valid.
    """
    import pydicom

    dataset = pydicom.dcmread(path)

    def fix(item, element):
        if element.VR == "UI" and str(element.value).startswith("1.2.826.0.1.3680043.8.498.") \
                and str(element.value) not in uids.values():
            element.value = uids.setdefault(str(element.value), f"1.2.826.0.1.3680043.8.498.1.{len(uids) + 1}")
        elif element.VR == "UI" and str(element.value) in uids:
            element.value = uids[str(element.value)]
        elif element.VR in ("DA", "TM") and element.value:
            element.value = "20240102" if element.VR == "DA" else "120000"

    dataset.walk(fix)
    dataset.file_meta.walk(fix)
    dataset.save_as(path)


def _dicom_seeds(scratch: Path, image, label) -> dict[str, list[dict[str, bytes]]]:
    """Seeds of the DICOM targets: real files, small series written by promptseg, RTSTRUCTs on them."""
    import pydicom
    import SimpleITK as sitk
    from pydicom.data import get_testdata_file
    from pydicom.uid import RLELossless

    from promptseg.io import load_volume
    from promptseg.io.dicom import write_rtstruct, write_series
    from promptseg.io.sitk_image import volume_from_sitk
    from promptseg.volume import Volume

    scratch.mkdir(parents=True, exist_ok=True)
    ct_slice = DATA / "dicom_rt" / "ct.0.dcm"
    mr = volume_from_sitk(image, "breast1-crop", modality="MR")
    labels = mr.with_array(sitk.GetArrayFromImage(label), modality=None, kind="labels")
    theta = np.radians(20)
    tilt = np.array([[1, 0, 0], [0, np.cos(theta), -np.sin(theta)], [0, np.sin(theta), np.cos(theta)]])
    variants = {
        "mr": mr,
        "ct": Volume(mr.array.astype(np.float32) * 0.5 - 1000.5, mr.spacing, mr.origin, mr.direction, modality="CT"),
        "oblique": Volume(mr.array, mr.spacing, mr.origin, tilt @ mr.direction, modality="MR"),
    }
    series, rtstructs, uids = [], [], {}
    for name, volume in variants.items():
        folder = scratch / f"series-{name}"
        write_series(volume, folder, series_description=f"fuzz {name}")
        for path in sorted(folder.iterdir()):
            _fix_uids_and_dates(path, uids)
        series.append(_folder_bytes(folder))
        if name != "ct":
            reference = load_volume(folder)
            path = write_rtstruct(reference.with_array(labels.array, modality=None, kind="labels"), reference,
                                  scratch / f"rtss-{name}.dcm", names={1: "lesion"})
            _fix_uids_and_dates(path, uids)
            rtstructs.append({"rtss.dcm": path.read_bytes(), **{f"ref/{k}": v for k, v in series[-1].items()}})
    rtstructs.append({"rtss.dcm": _trimmed_rtss(float(pydicom.dcmread(ct_slice).ImagePositionPatient[2])),
                      "ref/ct.0.dcm": ct_slice.read_bytes()})
    rle = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    rle.compress(RLELossless, generate_instance_uid=False)
    buffer = io.BytesIO()
    rle.save_as(buffer)
    files = [
        {"seed.dcm": ct_slice.read_bytes()},
        {"seed.dcm": Path(get_testdata_file("CT_small.dcm")).read_bytes()},
        {"seed.dcm": Path(get_testdata_file("MR_small.dcm")).read_bytes()},
        {"seed.dcm": buffer.getvalue()},
        {"seed.dcm": next(iter(series[1].values()))},  # a slice with Rescale Slope/Intercept
    ]
    # what a peer sends the DICOM node: a CT series (box prompt), MR series with the RTSTRUCT of their study (ROI
    # prompt; the structure set first, so that most mutations hit it), a real scanner's single CT slice
    node = [series[1], {"rtss.dcm": rtstructs[0]["rtss.dcm"], **series[0]},
            {"rtss.dcm": rtstructs[1]["rtss.dcm"], **series[2]}, {"ct.0.dcm": ct_slice.read_bytes()}]
    return {"dicom": files, "dicom-series": series, "rtstruct": rtstructs, "node": node}
