"""Writing a label map as an RTSTRUCT that refers to the series it was segmented on.

Written with pydicom rather than rt-utils (which places vertices on pixel
centres, half a voxel inside the mask, swaps row/column spacing on
non-square pixels, and writes decimal strings longer than 16 characters).

* One ROI per label value; contours per slice from
  :func:`~promptseg.io.dicom.contours.mask_to_polygons` (on the voxel edges,
  holes as separate contours), mapped to patient coordinates through each
  slice's own Image Position/Orientation (Patient) and Pixel Spacing.
* Each contour references its image (Contour Image Sequence); the structure set
  references the Frame of Reference, study and series with every image of it.
* Decimal strings of at most 16 characters, Explicit VR Little Endian, new
  SOP Instance and Series UIDs, the Patient/Study of the series.
* ``add_to``: the ROIs are added to a copy of an existing RTSTRUCT (new SOP
  Instance and Series UIDs); the input file is never written.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Mapping, Optional

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag

from ...errors import DicomError, GeometryError
from ...volume import Volume
from ..readers import grid_differences
from .contours import mask_to_polygons
from .objects import (
    RTSTRUCT_SOP_CLASS,
    add_equipment,
    add_patient_and_study,
    ds,
    file_meta,
    new_uid,
    now,
    read_object,
    save_dataset,
)
from .planes import SlicePlanes, slice_planes
from .provenance import DicomProvenance

#: Retired Detached Study Management SOP Class: the conventional Referenced SOP Class of RT Referenced Study items.
_STUDY_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"
#: Default ROI colours (r, g, b), cycled by label.
ROI_COLOURS = (
    (255, 0, 0), (0, 200, 0), (0, 96, 255), (255, 200, 0), (230, 0, 230),
    (0, 220, 220), (255, 128, 0), (150, 100, 50),
)
_TYPE_FROM_NAME = re.compile(r"^(GTV|CTV|PTV|ITV)", re.IGNORECASE)


def label_values(labels: Volume, what: str) -> list[int]:
    """The label values > 0 present in ``labels``.

    Raises:
        DicomError: non-integer values, or no voxel > 0 (nothing to write).
    """
    array = labels.array
    if array.dtype.kind == "f" and np.any(array != np.round(array)):
        raise DicomError(f"cannot write {what}: the label map holds non-integer values")
    values = [int(v) for v in np.unique(array) if v > 0]
    if not values:
        raise DicomError(f"cannot write {what}: the label map is empty (no voxel > 0), there is nothing to write")
    return values


def check_labels_on_reference(labels: Volume, reference: Volume, what: str) -> Volume:
    """``labels`` as a Volume on ``reference``'s grid (a bare array of the right shape is accepted).

    Raises:
        GeometryError: another grid than the reference series.
    """
    if not isinstance(labels, Volume):
        array = np.asarray(labels)
        if array.shape != reference.shape:
            raise GeometryError(f"cannot write {what}: label array shape {array.shape} is not the series' {reference.shape}")
        return reference.with_array(array)
    differences = grid_differences(labels, reference)
    if differences:
        raise GeometryError(
            f"cannot write {what}: the label map is not on the grid of the reference series: " + "; ".join(differences)
        )
    return labels


def roi_names(values: list[int], names: Optional[Mapping[int, str]], taken: set[str] = frozenset()) -> dict[int, str]:
    """A name per label (``names`` or ``"Label N"``), checked unique and at most 64 characters."""
    result = {}
    for value in values:
        name = str((names or {}).get(value) or f"Label {value}").strip()
        if len(name) > 64:
            raise DicomError(f"ROI name {name!r} is longer than the 64 characters DICOM allows")
        if name in taken or name in result.values():
            raise DicomError(f"ROI name {name!r} is used twice (names must be unique in a structure set)")
        result[value] = name
    return result


def roi_colours(
    values: list[int], colors: Optional[Mapping[int, tuple]], start: int = 0
) -> dict[int, tuple[int, int, int]]:
    """An (r, g, b) 0-255 colour per label (``colors``, else the default cycle shifted by ``start``)."""
    result = {}
    for value in values:
        colour = (colors or {}).get(value) or ROI_COLOURS[(value - 1 + start) % len(ROI_COLOURS)]
        try:
            rgb = tuple(int(c) for c in colour)
        except (TypeError, ValueError):
            rgb = ()
        if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
            raise DicomError(f"colour of label {value} must be three integers 0-255, got {colour!r}")
        result[value] = rgb
    return result


def _image_reference(provenance: DicomProvenance, z: int) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = provenance.sop_class_uid
    item.ReferencedSOPInstanceUID = provenance.sop_instance_uids[z]
    return item


def _series_reference(provenance: DicomProvenance) -> Dataset:
    series = Dataset()
    series.SeriesInstanceUID = provenance.series_instance_uid
    series.ContourImageSequence = DicomSequence(
        [_image_reference(provenance, z) for z in range(provenance.num_slices)]
    )
    return series


def _study_reference(provenance: DicomProvenance) -> Dataset:
    study = Dataset()
    study.ReferencedSOPClassUID = _STUDY_SOP_CLASS
    study.ReferencedSOPInstanceUID = provenance.study_instance_uid
    study.RTReferencedSeriesSequence = DicomSequence([_series_reference(provenance)])
    return study


def _frame_reference(provenance: DicomProvenance) -> Dataset:
    frame = Dataset()
    frame.FrameOfReferenceUID = provenance.frame_of_reference_uid
    frame.RTReferencedStudySequence = DicomSequence([_study_reference(provenance)])
    return frame


_CONTOUR_DATA = Tag(0x3006, 0x0050)


def _decimal_strings(values: np.ndarray) -> RawDataElement:
    """Contour Data as an encoded DS element (backslash-separated, even length).

    Stored as pydicom's raw element: the strings are made by :func:`ds`
    (``format_number_as_ds``), and letting pydicom re-validate them one
    ``DSfloat`` at a time takes most of the time of writing a body outline.
    """
    encoded = "\\".join(ds(v) for v in values).encode("ascii")
    if len(encoded) % 2:
        encoded += b" "
    return RawDataElement(_CONTOUR_DATA, "DS", len(encoded), encoded, 0, False, True)


def _contours(mask: np.ndarray, planes: SlicePlanes, provenance: DicomProvenance) -> list[Dataset]:
    """Contour Sequence items of one ROI's mask ``(z, y, x)``."""
    items = []
    for z in np.nonzero(mask.reshape(mask.shape[0], -1).any(axis=1))[0]:
        for polygon in mask_to_polygons(mask[z]):
            points = planes.to_patient(int(z), polygon)
            contour = Dataset()
            contour.ContourImageSequence = DicomSequence([_image_reference(provenance, int(z))])
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(points)
            contour.ContourNumber = len(items) + 1
            contour[_CONTOUR_DATA] = _decimal_strings(points.ravel())
            items.append(contour)
    return items


def _add_rois(
    dataset: Dataset,
    labels: Volume,
    planes: SlicePlanes,
    provenance: DicomProvenance,
    names: dict[int, str],
    colours: dict[int, tuple[int, int, int]],
    algorithm: str,
) -> None:
    """Append one ROI per label to the Structure Set ROI, ROI Contour and RT ROI Observations sequences."""
    for keyword in ("StructureSetROISequence", "ROIContourSequence", "RTROIObservationsSequence"):
        if keyword not in dataset:
            setattr(dataset, keyword, DicomSequence())
    numbers = [int(i.ROINumber) for i in dataset.StructureSetROISequence if "ROINumber" in i]
    observations = [int(i.ObservationNumber) for i in dataset.RTROIObservationsSequence if "ObservationNumber" in i]
    number, observation = max(numbers, default=0), max(observations, default=0)
    for value, name in names.items():
        number += 1
        observation += 1
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = provenance.frame_of_reference_uid
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        roi.ROIGenerationDescription = algorithm[:64]
        dataset.StructureSetROISequence.append(roi)
        contour = Dataset()
        contour.ROIDisplayColor = list(colours[value])
        contour.ContourSequence = DicomSequence(_contours(labels.array == value, planes, provenance))
        contour.ReferencedROINumber = number
        dataset.ROIContourSequence.append(contour)
        obs = Dataset()
        obs.ObservationNumber = observation
        obs.ReferencedROINumber = number
        match = _TYPE_FROM_NAME.match(name)
        obs.RTROIInterpretedType = match.group(1).upper() if match else ""
        obs.ROIInterpreter = ""
        dataset.RTROIObservationsSequence.append(obs)


def _new_structure_set(provenance: DicomProvenance, series_description: str) -> Dataset:
    dataset = Dataset()
    sop_uid = new_uid()
    dataset.file_meta = file_meta(RTSTRUCT_SOP_CLASS, sop_uid)
    date, time = now()
    dataset.SOPClassUID = RTSTRUCT_SOP_CLASS
    dataset.SOPInstanceUID = sop_uid
    dataset.InstanceCreationDate, dataset.InstanceCreationTime = date, time
    add_patient_and_study(dataset, provenance)
    dataset.Modality = "RTSTRUCT"
    dataset.SeriesInstanceUID = new_uid()
    dataset.SeriesNumber = 1 + (provenance.series_number or 0) % 10000
    dataset.SeriesDescription = series_description[:64]
    dataset.OperatorsName = ""
    dataset.FrameOfReferenceUID = provenance.frame_of_reference_uid
    dataset.PositionReferenceIndicator = ""
    add_equipment(dataset)
    dataset.InstanceNumber = 1
    dataset.StructureSetLabel = "promptseg"
    dataset.StructureSetName = series_description[:64]
    dataset.StructureSetDate, dataset.StructureSetTime = date, time
    dataset.ReferencedFrameOfReferenceSequence = DicomSequence([_frame_reference(provenance)])
    return dataset


def _copy_of(add_to: Path, provenance: DicomProvenance, series_description: str) -> Dataset:
    """A copy of the RTSTRUCT ``add_to`` with new UIDs, checked to be in the series' Frame of Reference."""
    original = read_object(add_to, "RTSTRUCT")
    frames = {str(i.get("FrameOfReferenceUID", "")).strip() for i in original.get("ReferencedFrameOfReferenceSequence", [])}
    frames |= {str(i.get("ReferencedFrameOfReferenceUID", "")).strip() for i in original.get("StructureSetROISequence", [])}
    frames.discard("")
    if frames and provenance.frame_of_reference_uid not in frames:
        raise DicomError(
            f"{add_to} is in Frame of Reference {', '.join(sorted(frames))}, the series in "
            f"{provenance.frame_of_reference_uid}: its ROIs cannot be combined with contours on this series"
        )
    dataset = copy.deepcopy(original)
    sop_uid = new_uid()
    dataset.file_meta = file_meta(RTSTRUCT_SOP_CLASS, sop_uid)
    date, time = now()
    dataset.SOPInstanceUID = sop_uid
    dataset.SeriesInstanceUID = new_uid()
    dataset.SeriesDescription = series_description[:64]
    dataset.InstanceCreationDate, dataset.InstanceCreationTime = date, time
    dataset.StructureSetDate, dataset.StructureSetTime = date, time
    add_equipment(dataset)
    for keyword in ("OperatorsName", "PositionReferenceIndicator"):
        if keyword not in dataset:
            setattr(dataset, keyword, "")
    if "FrameOfReferenceUID" not in dataset:
        dataset.FrameOfReferenceUID = provenance.frame_of_reference_uid
    _reference_series(dataset, provenance)
    return dataset


def _reference_series(dataset: Dataset, provenance: DicomProvenance) -> None:
    """Make sure the structure set references ``provenance``'s series (adding study/series items as needed)."""
    if "ReferencedFrameOfReferenceSequence" not in dataset:
        dataset.ReferencedFrameOfReferenceSequence = DicomSequence()
    frame = next((f for f in dataset.ReferencedFrameOfReferenceSequence
                  if str(f.get("FrameOfReferenceUID", "")) == provenance.frame_of_reference_uid), None)
    if frame is None:
        dataset.ReferencedFrameOfReferenceSequence.append(_frame_reference(provenance))
        return
    if "RTReferencedStudySequence" not in frame:
        frame.RTReferencedStudySequence = DicomSequence()
    study = next((s for s in frame.RTReferencedStudySequence
                  if str(s.get("ReferencedSOPInstanceUID", "")) == provenance.study_instance_uid), None)
    if study is None:
        frame.RTReferencedStudySequence.append(_study_reference(provenance))
        return
    if "RTReferencedSeriesSequence" not in study:
        study.RTReferencedSeriesSequence = DicomSequence()
    series = next((s for s in study.RTReferencedSeriesSequence
                   if str(s.get("SeriesInstanceUID", "")) == provenance.series_instance_uid), None)
    if series is None:
        study.RTReferencedSeriesSequence.append(_series_reference(provenance))
        return
    listed = {str(i.get("ReferencedSOPInstanceUID", "")) for i in series.get("ContourImageSequence", [])}
    if "ContourImageSequence" not in series:
        series.ContourImageSequence = DicomSequence()
    for z, uid in enumerate(provenance.sop_instance_uids):
        if uid not in listed:
            series.ContourImageSequence.append(_image_reference(provenance, z))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def write_rtstruct(
    labels: Volume,
    reference: Volume,
    path,
    *,
    names: Optional[Mapping[int, str]] = None,
    colors: Optional[Mapping[int, tuple]] = None,
    add_to=None,
    series_description: str = "promptseg",
    algorithm: Optional[str] = None,
) -> Path:
    """Write ``labels`` as an RTSTRUCT on the DICOM series ``reference``.

    Args:
        labels: integer label map ``(z, y, x)`` on the reference grid; one ROI per value > 0.
        reference: the series the labels were segmented on, as read by
            :func:`promptseg.io.load_volume` (it carries :attr:`Volume.dicom`).
        path: output ``.dcm`` file (written atomically).
        names: ROI name per label value (default ``"Label N"``); unique, <= 64 characters.
        colors: ROI display colour (r, g, b) 0-255 per label value (default: a fixed cycle).
        add_to: an existing RTSTRUCT of the same Frame of Reference: the new ROIs
            are appended to a copy of it (numbered after its ROIs); it is never modified.
        series_description: Series Description and Structure Set Name.
        algorithm: ROI Generation Description (default ``"promptseg <version>"``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        DicomError: reference without DICOM provenance, empty label map, bad
            names/colours, ``add_to`` unreadable or in another Frame of Reference,
            ROI names already in ``add_to``, output path equal to ``add_to``.
        GeometryError: labels not on the reference grid.
        ImageWriteError: the file cannot be written.
    """
    from ... import __version__

    path = Path(path)
    planes = slice_planes(reference, "an RTSTRUCT")
    provenance = reference.dicom
    labels = check_labels_on_reference(labels, reference, str(path))
    values = label_values(labels, str(path))
    if add_to is not None:
        add_to = Path(add_to)
        if _same_file(path, add_to):
            raise DicomError(f"refusing to overwrite the input RTSTRUCT {add_to}: choose another output file")
        dataset = _copy_of(add_to, provenance, series_description)
        taken = {str(i.get("ROIName", "")).strip() for i in dataset.StructureSetROISequence}
    else:
        dataset = _new_structure_set(provenance, series_description)
        taken = set()
    try:
        chosen = roi_names(values, names, taken)
    except DicomError as error:
        raise DicomError(f"{error}{' in ' + add_to.name if add_to is not None else ''}") from None
    _add_rois(dataset, labels, planes, provenance, chosen, roi_colours(values, colors, start=len(taken)),
              algorithm or f"promptseg {__version__}")
    return save_dataset(dataset, path)
