"""Where a DICOM-derived volume came from: :class:`DicomProvenance`.

Everything an RTSTRUCT or SEG needs to refer back to the images it was drawn
on -- patient and study identity, Series and Frame of Reference UIDs, and per
slice (in the volume's array z order) the SOP Instance UID and the Image
Position (Patient) -- read once from the slice headers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import pydicom

#: Header keywords read from each slice (pixels are never read for provenance).
HEADER_KEYWORDS = (
    "SpecificCharacterSet", "PatientID", "PatientName", "PatientBirthDate", "PatientSex",
    "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
    "ReferringPhysicianName", "StudyDescription", "SeriesInstanceUID", "SeriesNumber",
    "SeriesDescription", "Modality", "FrameOfReferenceUID", "SOPClassUID", "SOPInstanceUID",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
    "BodyPartExamined", "Manufacturer", "Rows", "Columns", "InstanceNumber",
)


@dataclass(frozen=True)
class DicomProvenance:
    """DICOM identity and slice geometry of a volume read from a DICOM series or file.

    Per-slice tuples follow the volume's array z order. Positions are Image
    Position (Patient), mm, in the patient coordinate system (LPS), which is
    also the physical space of :class:`~promptseg.volume.Volume`.

    Attributes:
        image_orientation: Image Orientation (Patient), 6 direction cosines:
            the row direction (increasing column index) then the column direction.
        pixel_spacing: Pixel Spacing as DICOM stores it: (row spacing, column
            spacing) in mm, i.e. (y, x) -- the reverse of ``Volume.spacing``.
        slice_thickness: Slice Thickness in mm, when given.
    """

    patient_id: str = ""
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    study_instance_uid: str = ""
    study_date: str = ""
    study_time: str = ""
    study_id: str = ""
    accession_number: str = ""
    referring_physician_name: str = ""
    study_description: str = ""
    series_instance_uid: str = ""
    series_number: Optional[int] = None
    series_description: str = ""
    modality: str = ""
    frame_of_reference_uid: str = ""
    sop_class_uid: str = ""
    sop_instance_uids: tuple[str, ...] = ()
    image_positions: tuple[tuple[float, float, float], ...] = ()
    image_orientation: tuple[float, ...] = ()
    pixel_spacing: tuple[float, float] = (1.0, 1.0)
    slice_thickness: Optional[float] = None
    body_part_examined: str = ""
    manufacturer: str = ""
    specific_character_set: str = ""

    @property
    def num_slices(self) -> int:
        return len(self.sop_instance_uids)


def _text(dataset: pydicom.Dataset, keyword: str) -> str:
    value = dataset.get(keyword)
    if value is None:
        return ""
    if isinstance(value, pydicom.multival.MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _floats(dataset: pydicom.Dataset, keyword: str, count: int) -> Optional[tuple[float, ...]]:
    value = dataset.get(keyword)
    if value is None or value == "":
        return None
    if not isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        value = [value]
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count and all(math.isfinite(v) for v in numbers) else None


def provenance_from_headers(headers: Sequence[pydicom.Dataset]) -> Optional[DicomProvenance]:
    """The provenance of a series whose slices have ``headers`` (array z order).

    Args:
        headers: one data set per slice, in the order the slices are stacked.

    Returns:
        The provenance, or None when a slice lacks what an RTSTRUCT/SEG needs to
        refer to it (SOP Instance UID, Image Position/Orientation (Patient),
        Pixel Spacing) -- e.g. secondary-capture images without geometry.
    """
    if not headers:
        return None
    positions = []
    for header in headers:
        position = _floats(header, "ImagePositionPatient", 3)
        if position is None or not _text(header, "SOPInstanceUID"):
            return None
        positions.append(position)
    first = headers[0]
    orientation = _floats(first, "ImageOrientationPatient", 6)
    spacing = _floats(first, "PixelSpacing", 2)
    if orientation is None or spacing is None:
        return None
    thickness = _floats(first, "SliceThickness", 1)
    number = _floats(first, "SeriesNumber", 1)
    return DicomProvenance(
        patient_id=_text(first, "PatientID"),
        patient_name=_text(first, "PatientName"),
        patient_birth_date=_text(first, "PatientBirthDate"),
        patient_sex=_text(first, "PatientSex"),
        study_instance_uid=_text(first, "StudyInstanceUID"),
        study_date=_text(first, "StudyDate"),
        study_time=_text(first, "StudyTime"),
        study_id=_text(first, "StudyID"),
        accession_number=_text(first, "AccessionNumber"),
        referring_physician_name=_text(first, "ReferringPhysicianName"),
        study_description=_text(first, "StudyDescription"),
        series_instance_uid=_text(first, "SeriesInstanceUID"),
        series_number=int(number[0]) if number and abs(number[0]) < 2**31 else None,
        series_description=_text(first, "SeriesDescription"),
        modality=_text(first, "Modality"),
        frame_of_reference_uid=_text(first, "FrameOfReferenceUID"),
        sop_class_uid=_text(first, "SOPClassUID"),
        sop_instance_uids=tuple(_text(h, "SOPInstanceUID") for h in headers),
        image_positions=tuple(positions),
        image_orientation=orientation,
        pixel_spacing=spacing,
        slice_thickness=thickness[0] if thickness else None,
        body_part_examined=_text(first, "BodyPartExamined"),
        manufacturer=_text(first, "Manufacturer"),
        specific_character_set=_text(first, "SpecificCharacterSet"),
    )
