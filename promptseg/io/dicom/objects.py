"""Pieces shared by the RTSTRUCT and SEG readers and writers.

Reading a DICOM object with one-line errors, new UIDs, decimal strings, the
Patient/Study modules copied from a series' provenance, atomic saving.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Optional

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid
from pydicom.valuerep import format_number_as_ds

from ...errors import DicomError, ImageWriteError
from ..atomic import atomic_path
from .header import parse_dicom, text_value
from .provenance import DicomProvenance

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
#: Software identity written into the General Equipment module.
MANUFACTURER = "promptseg"


def read_object(path, expected: str) -> Dataset:
    """Read a whole DICOM file and check its Modality is ``expected`` (e.g. ``"RTSTRUCT"``).

    Raises:
        DicomError: missing, empty, not DICOM, malformed (every element is converted
            and checked, see :func:`~.header.parse_dicom`), or another kind of object.
    """
    path = Path(path)
    dataset = parse_dicom(path, keywords=None, defer_bulk=False, error=DicomError)
    modality = text_value(dataset, "Modality")
    sop_class = dataset.get("SOPClassUID")
    if not modality and sop_class is None:
        raise DicomError(f"cannot read {path}: not a DICOM file (no Modality, no SOP Class UID)")
    if modality != expected:
        kind = getattr(sop_class, "name", None) or text_value(dataset, "SOPClassUID") or "unknown SOP class"
        raise DicomError(f"{path} is a DICOM {modality or 'unknown-modality'} object ({kind}), not an {expected}")
    return dataset


def modality_of(path) -> Optional[str]:
    """The Modality of a DICOM file (header only), or None if it is not DICOM."""
    try:
        header = parse_dicom(path, keywords=("Modality",), error=DicomError)
    except DicomError:
        return None
    return text_value(header, "Modality") or None


def new_uid() -> str:
    """A fresh UID (pydicom's root + random part)."""
    return generate_uid()


def ds(value: float, decimals: Optional[int] = 6) -> str:
    """A decimal string (DS) of at most 16 characters, rounded to ``decimals`` (default: 1 micrometre for mm).

    pydicom's ``format_number_as_ds`` keeps the string within DICOM's 16-character
    limit that some planning systems enforce strictly. ``decimals=None`` keeps
    all the precision 16 characters hold (for direction cosines).
    """
    value = float(value) if decimals is None else round(float(value), decimals)
    return format_number_as_ds(value + 0.0)


def now() -> tuple[str, str]:
    """Today's date (DA) and the time (TM) now."""
    stamp = _dt.datetime.now()
    return stamp.strftime("%Y%m%d"), stamp.strftime("%H%M%S")


def file_meta(sop_class_uid: str, sop_instance_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def add_patient_and_study(dataset: Dataset, provenance: DicomProvenance) -> None:
    """Patient and General Study modules (identity of the images the object refers to)."""
    if provenance.specific_character_set:
        dataset.SpecificCharacterSet = provenance.specific_character_set.split("\\")
    dataset.PatientName = provenance.patient_name
    dataset.PatientID = provenance.patient_id
    dataset.PatientBirthDate = provenance.patient_birth_date
    dataset.PatientSex = provenance.patient_sex
    dataset.StudyInstanceUID = provenance.study_instance_uid
    dataset.StudyDate = provenance.study_date
    dataset.StudyTime = provenance.study_time
    dataset.StudyID = provenance.study_id
    dataset.AccessionNumber = provenance.accession_number
    dataset.ReferringPhysicianName = provenance.referring_physician_name
    if provenance.study_description:
        dataset.StudyDescription = provenance.study_description


def add_equipment(dataset: Dataset) -> None:
    """General Equipment module: promptseg as the manufacturer of the derived object."""
    from ... import __version__

    dataset.Manufacturer = MANUFACTURER
    dataset.ManufacturerModelName = MANUFACTURER
    dataset.SoftwareVersions = __version__


def save_dataset(dataset: Dataset, path) -> Path:
    """Write ``dataset`` as a DICOM Part 10 file (Explicit VR Little Endian), atomically.

    Raises:
        ImageWriteError: the file cannot be written (the destination is left untouched).
    """
    path = Path(path)
    try:
        with atomic_path(path) as temporary:
            dataset.save_as(str(temporary), enforce_file_format=True)
    except (OSError, ValueError, TypeError) as error:
        raise ImageWriteError(f"cannot write {path}: {error}") from None
    return path
