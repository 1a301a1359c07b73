"""DICOM in and out: image series, RTSTRUCT, SEG.

* :func:`read_dicom_series` / :func:`read_dicom_file` -- images, with
  :class:`DicomProvenance` on ``Volume.dicom``; :func:`list_dicom_series`.
* :func:`read_rtstruct` -> label map on the series grid (:class:`RoiLabels`),
  :func:`list_rois`, :func:`read_roi_mask` (one ROI, for prompts),
  :func:`find_rtstruct` (the RTSTRUCT next to a series).
* :func:`write_rtstruct` / :func:`write_seg` -- a label map as RTSTRUCT / SEG
  referring to its series; :func:`read_seg` reads a SEG back.
* :func:`write_dicom_labels` / :func:`read_dicom_labels` -- either, by format name / by file.
* :func:`write_series` -- a volume as a CT/MR image series.

Conventions: docs/dicom.md.
"""

from .provenance import DicomProvenance
from .series import is_dicom_file, list_dicom_series, read_dicom_file, read_dicom_series, read_header
from .rtstruct_read import (
    RoiInfo,
    RoiLabels,
    RTStruct,
    dicom_modality,
    find_rtstruct,
    is_rtstruct,
    list_rois,
    read_roi_mask,
    read_rtstruct,
)
from .rtstruct_write import write_rtstruct
from .seg import list_segments, read_seg, write_seg
from .labels import DICOM_LABEL_FORMATS, read_dicom_labels, write_dicom_labels
from .series_write import write_series

__all__ = [
    "DICOM_LABEL_FORMATS",
    "DicomProvenance",
    "RTStruct",
    "RoiInfo",
    "RoiLabels",
    "dicom_modality",
    "find_rtstruct",
    "is_dicom_file",
    "is_rtstruct",
    "list_dicom_series",
    "list_rois",
    "list_segments",
    "read_dicom_file",
    "read_dicom_labels",
    "read_dicom_series",
    "read_header",
    "read_roi_mask",
    "read_rtstruct",
    "read_seg",
    "write_dicom_labels",
    "write_rtstruct",
    "write_seg",
    "write_series",
]
