"""DICOM Segmentation (SEG) objects, written and read with highdicom.

A label map never overlaps, so :func:`write_seg` writes a LABELMAP SEG by
default (one frame per slice holding the segment numbers, DICOM 2024c
Supplement 243); ``segmentation_type="BINARY"`` writes the classic
one-bit-per-segment form every viewer reads. Segments are numbered 1..N in the
order of the label values (label 3 alone becomes segment 1); their labels are
the ROI names and the display colours the ROI colours (CIELab in DICOM).
Empty slices are left out. The source images are described to highdicom from
the series' provenance, so the series files need not be at hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

import numpy as np
from pydicom.dataset import Dataset

from ...errors import DicomError
from ...volume import Volume
from ..common import printable
from .objects import new_uid, read_object, save_dataset
from .planes import slice_planes
from .provenance import DicomProvenance
from .rtstruct_read import RoiInfo, RoiLabels
from .rtstruct_write import check_labels_on_reference, label_values, roi_colours, roi_names

SEGMENTATION_TYPES = ("LABELMAP", "BINARY")


def _source_images(reference: Volume) -> list[Dataset]:
    """One header per slice of the series, rebuilt from its provenance (what highdicom reads of a source)."""
    provenance: DicomProvenance = reference.dicom
    images = []
    for z, (uid, position) in enumerate(zip(provenance.sop_instance_uids, provenance.image_positions)):
        image = Dataset()
        image.SOPClassUID = provenance.sop_class_uid
        image.SOPInstanceUID = uid
        image.StudyInstanceUID = provenance.study_instance_uid
        image.SeriesInstanceUID = provenance.series_instance_uid
        image.FrameOfReferenceUID = provenance.frame_of_reference_uid
        image.Modality = provenance.modality or "OT"
        image.PatientName = provenance.patient_name
        image.PatientID = provenance.patient_id
        image.PatientBirthDate = provenance.patient_birth_date
        image.PatientSex = provenance.patient_sex
        image.StudyDate = provenance.study_date
        image.StudyTime = provenance.study_time
        image.StudyID = provenance.study_id
        image.AccessionNumber = provenance.accession_number
        image.ReferringPhysicianName = provenance.referring_physician_name
        if provenance.specific_character_set:
            image.SpecificCharacterSet = provenance.specific_character_set.split("\\")
        image.ImagePositionPatient = list(position)
        image.ImageOrientationPatient = list(provenance.image_orientation)
        image.PixelSpacing = list(provenance.pixel_spacing)
        image.SliceThickness = provenance.slice_thickness or reference.spacing[2]
        image.Rows, image.Columns = reference.shape[1], reference.shape[2]
        image.SamplesPerPixel = 1
        image.PhotometricInterpretation = "MONOCHROME2"
        image.BitsAllocated = 16
        image.InstanceNumber = z + 1
        images.append(image)
    return images


def _descriptions(names: dict[int, str], colours: dict[int, tuple], algorithm: str):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from ... import __version__

    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm[:64], family=codes.cid7162.ArtificialIntelligence, version=__version__
    )
    return [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=names[value],
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=identification,
            display_color=hd.color.CIELabColor.from_rgb(*colours[value]),
        )
        for number, value in enumerate(names, start=1)
    ]


def write_seg(
    labels: Volume,
    reference: Volume,
    path,
    *,
    names: Optional[Mapping[int, str]] = None,
    colors: Optional[Mapping[int, tuple]] = None,
    series_description: str = "promptseg",
    algorithm: Optional[str] = None,
    segmentation_type: str = "LABELMAP",
) -> Path:
    """Write ``labels`` as a DICOM SEG on the DICOM series ``reference``.

    Args:
        labels: integer label map ``(z, y, x)`` on the reference grid; one segment per value > 0.
        reference: the series the labels were segmented on (with :attr:`Volume.dicom`).
        path: output ``.dcm`` file (written atomically).
        names: segment label per label value (default ``"Label N"``).
        colors: display colour (r, g, b) 0-255 per label value.
        series_description: Series Description and Content Description.
        algorithm: algorithm name in the segment descriptions (default ``"promptseg"``).
        segmentation_type: ``"LABELMAP"`` (default) or ``"BINARY"``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        DicomError: reference without DICOM provenance, empty label map, bad
            names/colours or segmentation type, highdicom rejects the input.
        GeometryError: labels not on the reference grid.
        ImageWriteError: the file cannot be written.
    """
    import highdicom as hd

    from ... import __version__

    path = Path(path)
    kind = str(segmentation_type).upper()
    if kind not in SEGMENTATION_TYPES:
        raise DicomError(f"segmentation type must be one of {', '.join(SEGMENTATION_TYPES)}, got {segmentation_type!r}")
    slice_planes(reference, "a DICOM SEG")
    labels = check_labels_on_reference(labels, reference, str(path))
    values = label_values(labels, str(path))
    chosen = roi_names(values, names)
    segments = np.zeros(labels.shape, dtype=np.uint8 if len(values) < 256 else np.uint16)
    for number, value in enumerate(values, start=1):
        segments[labels.array == value] = number
    provenance = reference.dicom
    try:
        seg = hd.seg.Segmentation(
            source_images=_source_images(reference),
            pixel_array=segments,
            segmentation_type=kind,
            segment_descriptions=_descriptions(chosen, roi_colours(values, colors), algorithm or "promptseg"),
            series_instance_uid=new_uid(),
            series_number=1 + (provenance.series_number or 0) % 10000,
            sop_instance_uid=new_uid(),
            instance_number=1,
            manufacturer="promptseg",
            manufacturer_model_name="promptseg",
            software_versions=__version__,
            device_serial_number="none",
            content_description=series_description[:64],
            content_label="PROMPTSEG",
            series_description=series_description[:64],
        )
    except (ValueError, TypeError, AttributeError) as error:
        raise DicomError(f"cannot write {path}: highdicom rejected the segmentation ({error})") from None
    return save_dataset(seg, path)


def _rgb(lab) -> Optional[tuple[int, int, int]]:
    """An (r, g, b) colour from a Recommended Display CIELab Value, or None."""
    import highdicom as hd

    try:
        return hd.color.CIELabColor.from_dicom_value([int(v) for v in lab]).to_rgb(clip=True) if lab else None
    except (TypeError, ValueError):
        return None


def list_segments(path) -> list[RoiInfo]:
    """The segments of a SEG file (number, label, colour), without reading its frames.

    Raises:
        DicomError: not a readable SEG.
    """
    path = Path(path)
    dataset = read_object(path, "SEG")
    items = [i for i in dataset.get("SegmentSequence", []) if int(i.get("SegmentNumber", 1)) > 0]  # 0: background
    kind = str(dataset.get("SegmentationType", ""))
    return [
        RoiInfo(number=int(item.get("SegmentNumber", label)), label=label, kind="segment", interpreted_type=kind,
                name=str(item.get("SegmentLabel", "") or f"Segment {label}"),
                color=_rgb(item.get("RecommendedDisplayCIELabValue")))
        for label, item in enumerate(items, start=1)
    ]


def read_seg(path, reference: Volume) -> RoiLabels:
    """Read a DICOM SEG as a label map on the grid of the series it segments.

    Args:
        path: SEG file (BINARY, FRACTIONAL thresholded at 0.5, or LABELMAP).
        reference: the source series (with :attr:`Volume.dicom`); the SEG's frames
            are matched to its slices by SOP Instance UID.

    Returns:
        :class:`RoiLabels`: labels 1..N in segment order (segment labels as names,
        colours from the recommended display CIELab values); where segments
        overlap, the smaller one keeps the voxel (noted on the larger one).

    Raises:
        DicomError: not a readable SEG, another Frame of Reference, or no frame of
            the SEG refers to an image of the series.
    """
    import highdicom as hd

    path = Path(path)
    dataset = read_object(path, "SEG")
    slice_planes(reference, "a DICOM SEG")
    try:
        seg = hd.seg.Segmentation.from_dataset(dataset, copy=False)
    except Exception as error:  # noqa: BLE001 - highdicom raises many types on malformed input
        raise DicomError(f"cannot read {path}: {printable(f'{type(error).__name__}: {error}', 200)}") from None
    provenance = reference.dicom
    frame = str(seg.get("FrameOfReferenceUID", "")).strip()
    if frame and provenance.frame_of_reference_uid and frame != provenance.frame_of_reference_uid:
        raise DicomError(
            f"{path}: the SEG is in Frame of Reference {frame} but the series is in "
            f"{provenance.frame_of_reference_uid}: it does not segment this series"
        )
    numbers = list(seg.segment_numbers)
    try:
        stacked = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=list(provenance.sop_instance_uids), segment_numbers=numbers,
            skip_overlap_checks=True,
        )
    except (ValueError, KeyError, AttributeError, RuntimeError) as error:
        raise DicomError(f"{path} does not segment the images of this series ({error})") from None
    masks = stacked > 0 if stacked.dtype.kind != "f" else stacked >= 0.5
    rois = []
    for label, number in enumerate(numbers, start=1):
        description = seg.get_segment_description(number)
        colour = _rgb(description.get("RecommendedDisplayCIELabValue"))
        rois.append(RoiInfo(number=number, name=str(description.segment_label), color=colour, label=label,
                            kind="segment", contour_count=int(masks[..., label - 1].any(axis=(1, 2)).sum())))
    labels = np.zeros(reference.shape, dtype=np.uint8 if len(numbers) < 256 else np.uint16)
    sizes = masks.reshape(-1, len(numbers)).sum(axis=0)
    for index in np.argsort(-sizes, kind="stable"):
        labels[masks[..., index]] = index + 1
    for roi, size in zip(rois, sizes):
        lost = int(size) - int(np.count_nonzero(labels == roi.label))
        if not size:
            roi.notes.append("no voxel on this series")
        elif lost:
            roi.notes.append(f"{lost} of its voxels belong to smaller overlapping segments in the label map")
    return RoiLabels(reference.with_array(labels, modality=None), rois)
