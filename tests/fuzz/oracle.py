"""When is an accepted input "garbage accepted"? Checks written independently of promptseg's readers.

A reader's result is garbage when

* the volume breaks what a :class:`~promptseg.volume.Volume` promises: an
  empty or non-numeric array, NaN/inf voxels, non-finite geometry, a spacing
  outside 1e-6 .. 1e5 mm, an origin beyond 1e9 mm, a singular direction; or
* the array disagrees with the file: its shape differs from the size the
  header declares, or (for NIfTI, NRRD and MetaImage files simple enough for
  this module to decode with NumPy alone: attached raw/gzip/zlib data, no
  intensity scaling) its values differ from the bytes in the file.

DICOM (pixels decoded by pydicom, independently of GDCM): an accepted file or
series is garbage when its values differ from pydicom's after the Modality
LUT, when it has another number of slices than the series' image files, or
when its geometry contradicts Image Position/Orientation (Patient) and Pixel
Spacing (a slice more than half a slice away from its stored position). An
accepted RTSTRUCT/SEG is garbage when its label map is off the reference grid,
holds values no ROI has, or (RTSTRUCT) labels a voxel outside every contour
of its ROI on that slice (by bounding box, one voxel of slack).

An accepted prompt document is garbage when an object has non-finite
coordinates, a label outside 1..65535, repeated labels, or a slice outside
the image. Anything this module cannot parse itself is not judged (it never
reports a problem because of its own limits).
"""

from __future__ import annotations

import gzip
import re
import struct
import zlib
from pathlib import Path
from typing import Optional

import numpy as np

_NIFTI_TYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4", 1024: "i8", 1280: "u8"}
_NRRD_TYPES = {"short": "i2", "unsigned short": "u2", "ushort": "u2", "int16": "i2", "uint16": "u2", "float": "f4",
               "double": "f8", "unsigned char": "u1", "uchar": "u1", "uint8": "u1", "int8": "i1", "int": "i4",
               "int32": "i4", "uint": "u4", "uint32": "u4", "signed char": "i1"}
_MET_TYPES = {"MET_SHORT": "i2", "MET_USHORT": "u2", "MET_UCHAR": "u1", "MET_CHAR": "i1", "MET_FLOAT": "f4",
              "MET_DOUBLE": "f8", "MET_INT": "i4", "MET_UINT": "u4"}


def volume_problem(volume) -> Optional[str]:
    """What is wrong with a volume regardless of its file, or None."""
    array = np.asarray(volume.array)
    if array.size == 0:
        return f"empty array {array.shape}"
    if array.dtype.kind not in "biuf":
        return f"non-numeric dtype {array.dtype}"
    if not (array.ndim == 3 or (array.ndim == 4 and array.shape[-1] == 3)):
        return f"array shape {array.shape} is not (z, y, x) or (z, y, x, 3)"
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        return "non-finite voxel values"
    spacing = np.asarray(volume.spacing, dtype=float)
    origin = np.asarray(volume.origin, dtype=float)
    direction = np.asarray(volume.direction, dtype=float)
    if not (np.all(np.isfinite(spacing)) and np.all(np.isfinite(origin)) and np.all(np.isfinite(direction))):
        return f"non-finite geometry: spacing {spacing}, origin {origin}, direction {direction.ravel()}"
    if np.any(spacing < 1e-6) or np.any(spacing > 1e5):
        return f"absurd spacing {spacing}"
    if np.any(np.abs(origin) > 1e9):
        return f"absurd origin {origin}"
    norms = np.linalg.norm(direction, axis=0)
    if np.any(norms == 0) or abs(np.linalg.det(direction / norms)) < 1e-3:
        return f"singular direction {direction.ravel()}"
    return None


def _compare(volume, size_xyz, data: Optional[bytes], dtype: Optional[str], order: str) -> Optional[str]:
    size = [int(s) for s in size_xyz]
    if len(size) > 3 or any(s < 1 for s in size):
        return None
    size += [1] * (3 - len(size))
    expected_shape = (size[2], size[1], size[0])
    if tuple(volume.array.shape[:3]) != expected_shape:
        return f"array shape {volume.array.shape} but the header declares (z, y, x) {expected_shape}"
    if data is None or dtype is None or volume.array.ndim != 3:
        return None
    dt = np.dtype(dtype).newbyteorder(order) if np.dtype(dtype).itemsize > 1 else np.dtype(dtype)
    count = int(np.prod(expected_shape))
    if len(data) < count * dt.itemsize:
        return f"the file holds {len(data)} bytes of voxels, fewer than the {count * dt.itemsize} declared"
    expected = np.frombuffer(data[: count * dt.itemsize], dtype=dt).reshape(expected_shape)
    if not np.array_equal(np.asarray(volume.array, dtype=float), expected.astype(float), equal_nan=True):
        return "voxel values differ from the bytes in the file"
    return None


def _nifti(path: Path, volume) -> Optional[str]:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except Exception:
            return None
    for order in "<>":
        if len(raw) >= 348 and struct.unpack(order + "i", raw[:4])[0] == 348:
            dim = struct.unpack(order + "8h", raw[40:56])
            datatype = struct.unpack(order + "h", raw[70:72])[0]
            offset = int(struct.unpack(order + "f", raw[108:112])[0])
            slope, inter = struct.unpack(order + "2f", raw[112:120])
            if not 1 <= dim[0] <= 3:
                return None
            plain = datatype in _NIFTI_TYPES and (slope in (0.0, 1.0)) and inter == 0.0
            data = raw[max(offset, 348):] if plain else None
            return _compare(volume, dim[1 : dim[0] + 1], data, _NIFTI_TYPES.get(datatype), order)
    return None


def _text_header(raw: bytes, end: int) -> dict[str, str]:
    """``key: value`` / ``Key = Value`` lines before ``end``; the first occurrence of a key wins."""
    fields: dict[str, str] = {}
    for line in raw[:end].decode("latin-1").splitlines():
        match = re.match(r"\s*([^=:]+?)\s*(?::=|:|=)\s?(.*)$", line)
        if match:
            fields.setdefault(match.group(1).strip(), match.group(2).strip())
    return fields


def _nrrd(path: Path, volume) -> Optional[str]:
    raw = path.read_bytes()
    end = raw.find(b"\n\n")
    if end < 0:
        return None
    # teem reads field names (and endian / encoding words) case-insensitively
    fields = {key.lower(): value for key, value in reversed(list(_text_header(raw, end).items()))}
    try:
        sizes = [int(v) for v in fields["sizes"].split()]
    except (KeyError, ValueError):
        return None
    simple = (path.suffix == ".nrrd" and "data file" not in fields and "datafile" not in fields and fields.get("byte skip", "0") == "0"
              and fields.get("line skip", "0") == "0" and fields.get("type") in _NRRD_TYPES)
    data = raw[end + 2:]
    if simple and fields.get("encoding", "").lower() in ("gzip", "gz"):
        try:
            data = gzip.decompress(data)
        except Exception:
            return None
    elif fields.get("encoding", "").lower() != "raw":
        simple = False
    order = ">" if fields.get("endian", "").lower() == "big" else "<"
    return _compare(volume, sizes, data if simple else None, _NRRD_TYPES.get(fields.get("type", "")), order)


def _true(text: str) -> bool:
    """A MetaIO boolean: MetaIO looks at the first character only."""
    return text[:1] in ("T", "t", "1")


def _metaimage(path: Path, volume) -> Optional[str]:
    raw = path.read_bytes()
    marker = raw.find(b"ElementDataFile")
    end = raw.find(b"\n", marker) if marker >= 0 else -1
    if end < 0:
        return None
    fields = _text_header(raw, end)
    try:
        sizes = [int(v) for v in fields["DimSize"].split()]
    except (KeyError, ValueError):
        return None
    channels = fields.get("ElementNumberOfChannels", "1")
    simple = (fields.get("ElementDataFile") == "LOCAL" and fields.get("ElementType") in _MET_TYPES
              and channels == "1" and _true(fields.get("BinaryData", "True")))
    data = raw[end + 1:]
    if simple and _true(fields.get("CompressedData", "")):
        try:
            data = zlib.decompress(data)
        except Exception:
            return None
    order = ">" if _true(fields.get("BinaryDataByteOrderMSB", "")) or _true(fields.get("ElementByteOrderMSB", "")) else "<"
    return _compare(volume, sizes, data if simple else None, _MET_TYPES.get(fields.get("ElementType", "")), order)


def _png(path: Path, volume) -> Optional[str]:
    raw = path.read_bytes()
    if raw[:8] != b"\x89PNG\r\n\x1a\n" or raw[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", raw[16:24])
    if tuple(volume.array.shape[1:3]) != (height, width):
        return f"array shape {volume.array.shape} but the PNG header declares {width} x {height}"
    return None


def _npz(path: Path, volume, labels: bool) -> Optional[str]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            key = next((k for k in (("gts", "segs") if labels else ("imgs",)) if k in archive.files), None)
            if key is None:
                return "accepted an archive without the expected key"
            data = archive[key]
    except Exception:
        return None
    if data.size != volume.array.size and data.size != volume.array.size * 3:
        return f"array of {volume.array.size} values from a key of shape {data.shape}"
    if data.size == volume.array.size and not np.array_equal(
            np.asarray(data, dtype=float).ravel(), np.asarray(volume.array, dtype=float).ravel(), equal_nan=True):
        return "voxel values differ from the archive's array"
    return None


def file_problem(path: Path, volume, labels: bool = False) -> Optional[str]:
    """What is wrong with ``volume`` read from ``path``, or None (see the module docstring)."""
    problem = volume_problem(volume)
    if problem:
        return problem
    name = path.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            return _nifti(path, volume)
        if name.endswith(".nrrd"):
            return _nrrd(path, volume)
        if name.endswith(".mha"):
            return _metaimage(path, volume)
        if name.endswith(".png"):
            return _png(path, volume)
        if name.endswith(".npz"):
            return _npz(path, volume, labels)
        if name.endswith(".dcm"):
            return _dicom_file(path, volume)
    except (struct.error, ValueError, OSError, KeyError, IndexError):
        return None
    return None


def prompts_problem(objects, shape: tuple[int, int, int]) -> Optional[str]:
    """What is wrong with accepted object prompts on an image of ``shape`` (z, y, x), or None."""
    labels = [obj.label for obj in objects]
    if len(set(labels)) != len(labels):
        return f"repeated labels {labels}"
    for obj in objects:
        if not 1 <= obj.label <= 65535:
            return f"label {obj.label}"
        for z, sp in obj.slices.items():
            if not 0 <= z < shape[0]:
                return f"slice {z} outside 0..{shape[0] - 1}"
            values = list(sp.box or ()) + [c for p in sp.points for c in (p.x, p.y)]
            if not all(np.isfinite(v) for v in values):
                return f"non-finite coordinates {values}"
    return None


# -- DICOM ------------------------------------------------------------------------
def _dicom_numbers(dataset, keyword: str, count: int) -> Optional[np.ndarray]:
    try:
        value = dataset.get(keyword)
        numbers = np.array([float(v) for v in value], dtype=float) if value not in (None, "") else None
    except Exception:  # noqa: BLE001 - the oracle never judges what it cannot parse
        return None
    if numbers is None or numbers.size != count or not np.all(np.isfinite(numbers)):
        return None
    return numbers


def _dicom_values(dataset) -> Optional[np.ndarray]:
    """Pixels after the Modality LUT, by pydicom alone, ``(frames, rows, columns[, 3])``; None if it cannot."""
    try:
        from pydicom.pixels import apply_modality_lut

        values = np.asarray(apply_modality_lut(dataset.pixel_array, dataset), dtype=float)
    except Exception:  # noqa: BLE001
        return None
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    return values[None] if frames == 1 else values


def _dicom_geometry(volume, datasets: list) -> Optional[str]:
    spacing = _dicom_numbers(datasets[0], "PixelSpacing", 2)
    if spacing is not None and not np.allclose(volume.spacing[:2], spacing[::-1], rtol=1e-4, atol=1e-6):
        return f"spacing {volume.spacing[:2]} but Pixel Spacing (row, column) {spacing}"
    orientation = _dicom_numbers(datasets[0], "ImageOrientationPatient", 6)
    direction = np.asarray(volume.direction, dtype=float)
    if orientation is not None:
        row, column = orientation[:3], orientation[3:]
        if not (np.allclose(direction[:, 0], row / np.linalg.norm(row), atol=1e-3)
                and np.allclose(direction[:, 1], column / np.linalg.norm(column), atol=1e-3)):
            return f"direction {direction.ravel()} but Image Orientation (Patient) {orientation}"
    positions = [_dicom_numbers(d, "ImagePositionPatient", 3) for d in datasets]
    if all(p is not None for p in positions) and len(positions) == volume.num_slices:
        for k, position in enumerate(positions):
            where = np.asarray(volume.origin) + direction @ (np.array([0.0, 0.0, k]) * np.asarray(volume.spacing))
            if np.linalg.norm(where - position) > 0.5 * float(volume.spacing[2]) + 1e-3:
                return f"slice {k} placed at {where} but its Image Position (Patient) is {position}"
    return None


def _compare_pixels(volume, values: np.ndarray) -> Optional[str]:
    array = np.asarray(volume.array, dtype=float)
    if array.shape != values.shape:
        return f"array shape {array.shape} but pydicom decodes {values.shape}"
    scale = max(1.0, float(np.abs(values).max()))
    if not np.allclose(array, values, rtol=1e-5, atol=1e-4 * scale):
        return f"voxel values differ from pydicom's ({int(np.count_nonzero(~np.isclose(array, values)))} voxels)"
    return None


def _dicom_file(path: Path, volume) -> Optional[str]:
    import pydicom

    try:
        dataset = pydicom.dcmread(str(path), force=True)
    except Exception:  # noqa: BLE001
        return None
    values = _dicom_values(dataset)
    problem = _compare_pixels(volume, values) if values is not None else None
    return problem or _dicom_geometry(volume, [dataset])


def dicom_series_problem(folder: Path, volume) -> Optional[str]:
    """What is wrong with ``volume`` read from the DICOM series folder ``folder``, or None."""
    import pydicom

    problem = volume_problem(volume)
    if problem:
        return problem
    datasets = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        try:
            dataset = pydicom.dcmread(str(path), force=True)
        except Exception:  # noqa: BLE001
            return None
        if "PixelData" in dataset:
            datasets.append(dataset)
    if len({str(d.get("SeriesInstanceUID", "")) for d in datasets}) != 1:
        return None
    orientation = _dicom_numbers(datasets[0], "ImageOrientationPatient", 6)
    positions = [_dicom_numbers(d, "ImagePositionPatient", 3) for d in datasets]
    if orientation is None or any(p is None for p in positions):
        return None
    normal = np.cross(orientation[:3], orientation[3:])
    datasets = [d for _, d in sorted(zip([float(p @ normal) for p in positions], datasets), key=lambda t: t[0])]
    if len(datasets) != volume.num_slices:
        return f"{volume.num_slices} slices from a series of {len(datasets)} image files"
    slices = [_dicom_values(d) for d in datasets]
    if all(s is not None for s in slices):
        try:
            problem = _compare_pixels(volume, np.concatenate(slices))
        except ValueError:  # slices of different sizes
            return "accepted slices of different sizes"
        if problem:
            return problem
    return _dicom_geometry(volume, datasets)


def roi_labels_problem(path: Path, result, reference, rois=None) -> Optional[str]:
    """What is wrong with the RTSTRUCT/SEG ``path`` read onto ``reference``, or None (see the module docstring)."""
    labels = result.labels
    if labels.shape != reference.shape or not np.allclose(labels.spacing, reference.spacing) \
            or not np.allclose(labels.origin, reference.origin):
        return f"label map {labels.shape} off the reference grid {reference.shape}"
    values = set(np.unique(labels.array).tolist()) - {0}
    known = [roi.label for roi in result.rois]
    if len(set(known)) != len(known) or not values <= set(known) or any(v < 1 for v in known):
        return f"label values {sorted(values)} for ROIs labelled {known}"
    if rois is not None and [r.name for r in rois] != [r.name for r in result.rois]:
        return f"list_rois gives {[r.name for r in rois]}, read_rtstruct {[r.name for r in result.rois]}"
    if not result.rois or result.rois[0].kind != "ROI":
        return None
    return _contour_bounds_problem(path, result, reference)


def _contour_boxes(path: Path, result, reference) -> Optional[dict]:
    """``{label: {z: [(x0, x1, y0, y1), ...]}}``: index-space bounding boxes of each ROI's contours per slice."""
    import pydicom

    try:
        dataset = pydicom.dcmread(str(path), force=True)
        by_number = {}
        for roi in result.rois:
            if roi.number in by_number:
                return None
            by_number[roi.number] = roi.label
        direction = np.asarray(reference.direction, dtype=float) * np.asarray(reference.spacing, dtype=float)[None, :]
        inverse = np.linalg.inv(direction)
        boxes: dict = {}
        for item in dataset.get("ROIContourSequence", []):
            label = by_number.get(int(item.ReferencedROINumber))
            if label is None:
                continue
            for contour in item.get("ContourSequence", []):
                points = np.array([float(v) for v in contour.ContourData], dtype=float).reshape(-1, 3)
                index = (points - np.asarray(reference.origin, dtype=float)) @ inverse.T
                z = int(round(float(index[:, 2].mean())))
                if np.all(np.isfinite(index)) and abs(index[:, 2].mean() - z) <= 0.5:
                    boxes.setdefault(label, {}).setdefault(z, []).append(
                        (index[:, 0].min(), index[:, 0].max(), index[:, 1].min(), index[:, 1].max()))
    except Exception:  # noqa: BLE001 - the oracle never judges what it cannot parse
        return None
    return boxes


def _contour_bounds_problem(path: Path, result, reference) -> Optional[str]:
    """Every labelled voxel lies within a bounding box (one voxel of slack) of its ROI's contours on its slice."""
    boxes = _contour_boxes(path, result, reference)
    if boxes is None:
        return None
    for roi in result.rois:
        zs, ys, xs = np.nonzero(result.labels.array == roi.label)
        for z in np.unique(zs):
            on_slice = boxes.get(roi.label, {}).get(int(z))
            if not on_slice:
                return f"ROI '{roi.name}' labels slice {z}, where none of its contours lies"
            x, y = xs[zs == z], ys[zs == z]
            inside = np.zeros(x.shape, dtype=bool)
            for x0, x1, y0, y1 in on_slice:
                inside |= (x >= x0 - 1) & (x <= x1 + 1) & (y >= y0 - 1) & (y <= y1 + 1)
            if not inside.all():
                return f"ROI '{roi.name}' labels {int((~inside).sum())} voxels of slice {z} outside its contours"
    return None
