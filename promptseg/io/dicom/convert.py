"""Conversions between label maps, RTSTRUCT/SEG and DICOM image series (``promptseg convert``).

* label map (NIfTI/NRRD/MHA...) + reference series -> RTSTRUCT or SEG (a label map
  whose voxel centres are the series' in another axis order is flipped/transposed
  onto it; anything else is refused, never resampled);
* RTSTRUCT or SEG + reference series -> label map on the series grid;
* image volume -> DICOM CT/MR series.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

import numpy as np
import SimpleITK as sitk

from ...errors import DicomError, GeometryError
from ...volume import Volume
from ..readers import load_labels, load_volume
from ..sitk_image import sitk_from_volume
from ..guard import check_not_input
from ..writers import check_output_path, save_mask
from .labels import DICOM_LABEL_FORMATS, read_dicom_labels, write_dicom_labels
from .objects import modality_of
from .rtstruct_read import RoiInfo
from .rtstruct_write import label_values, roi_names
from .series_write import write_series

#: ``format`` values of :func:`convert`.
CONVERT_FORMATS = DICOM_LABEL_FORMATS + ("dicom",)


@dataclass
class Conversion:
    """What :func:`convert` wrote.

    Attributes:
        output: the written file (or series folder).
        kind: ``"labels"``, ``"rtstruct"``, ``"seg"`` or ``"dicom"``.
        rois: label <-> ROI/segment names (for conversions from and to RTSTRUCT/SEG).
        files: the slice files of a written series.
    """

    output: Path
    kind: str
    rois: list[RoiInfo] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def exact_reorientation(labels: Volume, grid: Volume) -> Optional[np.ndarray]:
    """``labels`` on ``grid`` when both grids have the same voxel centres in another axis order or direction.

    A NIfTI from a DICOM converter often stores the rows or slices the other way round
    than the series reads; such label maps are flipped/transposed onto the series
    (nearest neighbour on coinciding centres: no value is interpolated).

    Returns:
        The ``(z, y, x)`` array on ``grid``, or None when the voxel centres do not coincide.
    """
    scale_l, scale_g = np.diag(labels.spacing), np.diag(grid.spacing)
    # grid index -> labels index: i_l = M i_g + t
    matrix = np.linalg.inv(labels.direction @ scale_l) @ (grid.direction @ scale_g)
    offset = np.linalg.inv(labels.direction @ scale_l) @ (np.asarray(grid.origin) - np.asarray(labels.origin))
    permutation = np.round(matrix)
    if (not np.allclose(matrix, permutation, atol=1e-4) or not np.allclose(offset, np.round(offset), atol=1e-3)
            or sorted(np.abs(permutation).sum(axis=0)) != [1, 1, 1]
            or sorted(np.abs(permutation).sum(axis=1)) != [1, 1, 1]):
        return None
    corners = np.array([[x, y, z] for x in (0, grid.shape[2] - 1) for y in (0, grid.shape[1] - 1)
                        for z in (0, grid.shape[0] - 1)]) @ permutation.T + np.round(offset)
    limits = np.array(labels.shape[::-1]) - 1
    if corners.min() < 0 or np.any(corners.max(axis=0) > limits):
        return None
    moved = sitk.Resample(sitk_from_volume(labels), sitk_from_volume(grid, np.zeros(grid.shape, labels.array.dtype)),
                          sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayFromImage(moved)


def _labels_on(source: Path, series: Volume) -> Volume:
    """The label map ``source`` on the series grid, exactly or reoriented exactly (else GeometryError)."""
    try:
        return load_labels(source, reference=series)
    except GeometryError:
        labels = load_labels(source)
        array = exact_reorientation(labels, series)
        if array is None:
            raise
        return series.with_array(array)


def _is_dicom_labels(path: Path) -> bool:
    return path.is_file() and modality_of(path) in ("RTSTRUCT", "SEG")


def convert(
    source,
    output,
    *,
    reference=None,
    series_uid: Optional[str] = None,
    format: Optional[str] = None,
    names: Optional[Mapping[int, str]] = None,
    seg_type: str = "LABELMAP",
    modality: Optional[str] = None,
    body_part: str = "",
) -> Conversion:
    """Convert ``source`` to ``output``; what happens depends on the inputs.

    Args:
        source: an RTSTRUCT/SEG file (-> label map ``output``, needs ``reference``), a label
            map (-> RTSTRUCT/SEG ``output`` with ``reference``), or an image
            (-> DICOM series folder ``output`` with ``format="dicom"``).
        output: the file or folder to write (atomically; never one of the inputs).
        reference: the DICOM series folder (or file) the labels belong to.
        series_uid: which series of a ``reference`` folder holding several.
        format: ``"rtstruct"`` (default with a label map) / ``"seg"`` / ``"dicom"``.
        names: ROI/segment name per label value (label map -> RTSTRUCT/SEG).
        seg_type: ``"LABELMAP"`` or ``"BINARY"`` for SEG.
        modality, body_part: for ``"dicom"`` (default: the image's modality, else CT).

    Returns:
        :class:`Conversion`.

    Raises:
        DicomError: the combination of inputs does not say what to do, or as the readers/writers.
        ImageReadError / ImageWriteError / GeometryError: as the readers and writers.
    """
    source, output = Path(source), Path(output)
    kind = format.lower() if format else None
    if kind is not None and kind not in CONVERT_FORMATS:
        raise DicomError(f"unknown format {format!r}; choose one of {', '.join(CONVERT_FORMATS)}")
    check_not_input(output, (source, reference))  # before any work, whatever the conversion
    if _is_dicom_labels(source):
        if reference is None:
            raise DicomError(f"{source.name} holds contours/segments, not voxels: give the series they belong to "
                             "with --reference SERIES_DIR (reference=... in Python)")
        if kind is not None:
            raise DicomError(f"{source.name} becomes a label map (format from the suffix of {output.name}); "
                             "--format applies to label maps and images")
        check_output_path(output, inputs=(source, reference))
        series = load_volume(reference, series_uid=series_uid)
        result = read_dicom_labels(source, series)
        return Conversion(save_mask(result.labels, output, series), "labels", result.rois)
    if kind == "dicom":
        if reference is not None:
            raise DicomError("--format dicom writes an image as a new DICOM series: it takes no --reference")
        files = write_series(load_volume(source, series_uid=series_uid if source.is_dir() else None), output,
                             modality=modality, body_part=body_part)
        return Conversion(output, "dicom", files=files)
    if reference is None:
        raise DicomError("say what to convert to: --reference SERIES_DIR to write the label map as RTSTRUCT/SEG, "
                         "or --format dicom to write an image as a DICOM series")
    series = load_volume(reference, series_uid=series_uid)
    labels = _labels_on(source, series)
    kind = kind or "rtstruct"
    path = write_dicom_labels(labels, series, output, kind, names=names, seg_type=seg_type,
                              series_description=f"promptseg {kind} from {source.name}"[:64])
    chosen = roi_names(label_values(labels, str(path)), names)
    rois = [RoiInfo(number=i, name=name, color=None, label=value) for i, (value, name) in enumerate(chosen.items(), 1)]
    return Conversion(path, kind, rois)
