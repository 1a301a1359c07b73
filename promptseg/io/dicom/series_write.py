"""Writing a :class:`Volume` as a DICOM CT or MR image series (one file per slice).

For ``promptseg convert scan.nrrd -o series/ --format dicom`` and for making
test series from real scans. Every slice gets Image Position (Patient) from the
volume's origin, spacing and direction, Image Orientation (Patient) from the
direction's x and y columns and Pixel Spacing = [row (y), column (x)] spacing;
pixels are stored as 16-bit integers (with Rescale Slope/Intercept only when
the values are not integers). A volume read from DICOM keeps its patient,
study and Frame of Reference; the series and its images get new UIDs.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Mapping, Optional

import numpy as np
from pydicom.dataset import Dataset

from ...errors import DicomError, ImageWriteError
from ...volume import Volume
from .objects import add_equipment, add_patient_and_study, ds, file_meta, new_uid, now
from .provenance import DicomProvenance

SOP_CLASSES = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4"}


def _pixels(array: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``(stored, slope, intercept)``: 16-bit stored values with value = stored * slope + intercept."""
    data = np.asarray(array, dtype=np.float64)
    if not np.all(np.isfinite(data)):
        raise DicomError("cannot write a DICOM series: the volume holds NaN or infinite values")
    low, high = float(data.min()), float(data.max())
    if np.all(data == np.round(data)):
        if low >= -32768 and high <= 32767:
            return data.astype(np.int16), 1.0, 0.0
        if low >= 0 and high <= 65535:
            return data.astype(np.uint16), 1.0, 0.0
    slope = (high - low) / 65535.0 or 1.0
    return np.round((data - low) / slope).astype(np.uint16), slope, low


def _check_geometry(volume: Volume) -> None:
    direction = np.asarray(volume.direction, dtype=float)
    normal = np.cross(direction[:, 0], direction[:, 1])
    if abs(abs(float(normal @ direction[:, 2])) - 1.0) > 1e-4:
        raise DicomError(
            "cannot write a DICOM series: the volume's z axis is not perpendicular to its slices "
            "(a sheared grid DICOM image planes cannot describe)"
        )


def _modality_module(dataset: Dataset, modality: str) -> None:
    if modality == "CT":
        dataset.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        dataset.KVP = ""
        dataset.AcquisitionNumber = ""
    else:
        dataset.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
        dataset.ScanningSequence = ["RM"]
        dataset.SequenceVariant = ["NONE"]
        dataset.ScanOptions = ""
        dataset.MRAcquisitionType = ""
        dataset.RepetitionTime = ""
        dataset.EchoTime = ""
        dataset.EchoTrainLength = ""


def _slice_dataset(volume: Volume, z: int, stored: np.ndarray, common: dict, provenance: DicomProvenance) -> Dataset:
    sop_uid = new_uid()
    modality = common["modality"]
    dataset = Dataset()
    dataset.file_meta = file_meta(SOP_CLASSES[modality], sop_uid)
    add_patient_and_study(dataset, provenance)
    dataset.SpecificCharacterSet = "ISO_IR 192"
    dataset.SOPClassUID = SOP_CLASSES[modality]
    dataset.SOPInstanceUID = sop_uid
    dataset.InstanceCreationDate, dataset.InstanceCreationTime = common["date"], common["time"]
    dataset.ContentDate, dataset.ContentTime = common["date"], common["time"]
    dataset.Modality = modality
    dataset.SeriesInstanceUID = common["series"]
    dataset.SeriesNumber = common["series_number"]
    dataset.SeriesDescription = common["series_description"]
    dataset.PatientPosition = "HFS"
    if common["body_part"]:
        dataset.BodyPartExamined = common["body_part"]
    dataset.FrameOfReferenceUID = common["frame_of_reference"]
    dataset.PositionReferenceIndicator = ""
    add_equipment(dataset)
    dataset.InstanceNumber = z + 1
    _modality_module(dataset, modality)
    direction = np.asarray(volume.direction, dtype=float)
    sx, sy, sz = volume.spacing
    dataset.ImagePositionPatient = [ds(v) for v in volume.index_to_physical(0, 0, z)]
    dataset.ImageOrientationPatient = [ds(v, None) for v in np.concatenate([direction[:, 0], direction[:, 1]])]
    dataset.PixelSpacing = [ds(sy), ds(sx)]
    dataset.SliceThickness = ds(sz)
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.Rows, dataset.Columns = int(stored.shape[1]), int(stored.shape[2])
    dataset.BitsAllocated = 16
    dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    if modality == "CT" or common["slope"] != 1.0 or common["intercept"] != 0.0:
        dataset.RescaleIntercept = ds(common["intercept"])
        dataset.RescaleSlope = ds(common["slope"])
        dataset.RescaleType = "HU" if modality == "CT" else "US"
    dataset.WindowCenter, dataset.WindowWidth = common["window"]
    dataset.PixelData = np.ascontiguousarray(stored[z]).astype(stored.dtype.newbyteorder("<")).tobytes()
    return dataset


def _fresh_folder(folder: Path) -> Path:
    """A private temporary folder next to ``folder`` (which must not hold files)."""
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ImageWriteError(f"cannot write a DICOM series to {folder}: it exists and is not an empty folder")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        temporary = folder.parent / f".{folder.name}.tmp-{secrets.token_hex(6)}"
        temporary.mkdir()
    except OSError as error:
        raise ImageWriteError(f"cannot write {folder}: {error.strerror or error}") from None
    return temporary


def write_series(
    volume: Volume,
    folder,
    *,
    modality: Optional[str] = None,
    patient_name: str = "Anonymous^",
    patient_id: str = "promptseg",
    study_description: str = "",
    series_description: str = "promptseg",
    series_number: int = 1,
    body_part: str = "",
    uids: Optional[Mapping[str, str]] = None,
) -> list[Path]:
    """Write ``volume`` as a DICOM image series, one file per slice (``000001.dcm``, ...).

    Args:
        volume: scalar volume ``(z, y, x)``; values are written as 16-bit integers
            (CT in HU with Rescale Intercept 0, Slope 1 when they are integers).
        folder: new (or empty) folder; filled atomically (written under a temporary
            name, renamed when complete).
        modality: ``"CT"`` or ``"MR"`` (default: the volume's modality, else CT).
        patient_name, patient_id, study_description: used when the volume has no
            DICOM provenance (a volume read from DICOM keeps its patient and study).
        series_description, series_number: of the new series.
        body_part: Body Part Examined (``"CHEST"``, ``"HEAD"``, ...; default: the
            provenance's, else none). Validators expect it to know whether
            Laterality is required.
        uids: optional fixed UIDs, keys ``"study"``, ``"series"``, ``"frame_of_reference"``
            (default: new ones, or the provenance's study and Frame of Reference).

    Returns:
        The written files in slice order.

    Raises:
        DicomError: RGB volume, unsupported modality, non-finite values, sheared grid.
        ImageWriteError: ``folder`` exists and holds files, or writing fails.
    """
    if volume.is_rgb:
        raise DicomError("cannot write a DICOM series from an RGB volume (only grayscale CT/MR)")
    modality = (modality or volume.modality or "CT").upper()
    if modality not in SOP_CLASSES:
        raise DicomError(f"cannot write a DICOM {modality} series: only CT and MR are supported")
    _check_geometry(volume)
    stored, slope, intercept = _pixels(volume.array)
    uids = dict(uids or {})
    source = volume.dicom
    provenance = DicomProvenance(
        patient_name=source.patient_name if source else patient_name,
        patient_id=source.patient_id if source else patient_id,
        patient_birth_date=source.patient_birth_date if source else "",
        patient_sex=source.patient_sex if source else "",
        study_instance_uid=uids.get("study") or (source.study_instance_uid if source else new_uid()),
        study_date=source.study_date if source else now()[0],
        study_time=source.study_time if source else now()[1],
        study_id=source.study_id if source else "1",
        accession_number=source.accession_number if source else "",
        referring_physician_name=source.referring_physician_name if source else "",
        study_description=source.study_description if source else study_description,
    )
    values = volume.array
    center = 40.0 if modality == "CT" else float(values.min() + values.max()) / 2
    width = 400.0 if modality == "CT" else max(float(values.max() - values.min()), 1.0)
    date, time = now()
    common = {
        "modality": modality,
        "series": uids.get("series") or new_uid(),
        # same patient, same coordinates: a volume read from DICOM stays in its Frame of Reference
        "frame_of_reference": uids.get("frame_of_reference") or (source.frame_of_reference_uid if source else "")
        or new_uid(),
        "series_number": int(series_number),
        "series_description": series_description[:64],
        "slope": slope,
        "intercept": intercept,
        "window": (ds(center), ds(width)),
        "date": date,
        "time": time,
        "body_part": (body_part or (source.body_part_examined if source else "")).upper()[:16],
    }
    folder = Path(folder)
    temporary = _fresh_folder(folder)
    names = [f"{z + 1:06d}.dcm" for z in range(volume.num_slices)]
    try:
        for z, name in enumerate(names):
            dataset = _slice_dataset(volume, z, stored, common, provenance)
            dataset.save_as(str(temporary / name), enforce_file_format=True)
        if folder.exists():
            folder.rmdir()
        os.replace(temporary, folder)
    except OSError as error:
        raise ImageWriteError(f"cannot write {folder}: {error.strerror or error}") from None
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)
    return [folder / name for name in names]
