"""Prompts from a label map or mask the user already has (a rough contour, an old segmentation, a SEG).

The rule, per label value (all values > 0, or the chosen ``labels``): one box
prompt, the tight box of that label on the slice where its cross-section is
largest (most voxels; ties: the lowest slice), propagated through the volume
like any box (:func:`~promptseg.prompts.roi.largest_slice_box`). The new object
keeps the label value, and the label's name when the file has one:

* 3D Slicer segmentations (``.seg.nrrd``: ``Segment<N>_Name`` / ``Segment<N>_LabelValue``);
* DICOM RTSTRUCT and SEG (ROI / segment names), read on the DICOM series being segmented.

The label map must lie on the image's grid (nothing is resampled).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import PromptError
from ..volume import Volume
from .model import ObjectPrompt
from .roi import largest_slice_box


def slicer_segment_names(path) -> dict[int, str]:
    """``{label value: segment name}`` from a 3D Slicer ``.seg.nrrd`` header (empty for other files)."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.name.lower().endswith(".nrrd"):
        return {}
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return {}
    keys = set(reader.GetMetaDataKeys())
    names = {}
    index = 0
    while f"Segment{index}_Name" in keys:
        value = reader.GetMetaData(f"Segment{index}_LabelValue") if f"Segment{index}_LabelValue" in keys else str(index + 1)
        try:
            names[int(value)] = reader.GetMetaData(f"Segment{index}_Name").strip()
        except ValueError:
            pass
        index += 1
    return names


def prompts_from_label_array(labels: np.ndarray, wanted: Optional[Sequence[int]] = None,
                             names: Optional[dict[int, str]] = None, source: str = "the label map") -> list[ObjectPrompt]:
    """One box prompt per label value of a ``(Z, H, W)`` integer array (see the module docstring).

    Raises:
        PromptError: no label > 0, or a wanted label that is absent.
    """
    labels = np.asarray(labels)
    present = [int(v) for v in np.unique(labels) if v > 0]
    if wanted is None:
        if not present:
            raise PromptError(f"{source}: no label > 0 to make a prompt from")
        chosen = present
    else:
        missing = [int(v) for v in wanted if int(v) not in present]
        if missing:
            raise PromptError(f"{source}: label(s) {', '.join(map(str, missing))} not found "
                              f"(present: {', '.join(map(str, present)) or 'none'})")
        chosen = [int(v) for v in dict.fromkeys(wanted)]
    names = names or {}
    return [largest_slice_box(labels == value, label=value, name=names.get(value)) for value in chosen]


def load_label_prompts(path, volume: Volume, wanted: Optional[Sequence[int]] = None) -> list[ObjectPrompt]:
    """Prompts from a label map file on ``volume``'s grid: NIfTI / NRRD / MHA / ..., a Slicer ``.seg.nrrd``,
    or a DICOM RTSTRUCT / SEG of the series ``volume`` was read from.

    Raises:
        PromptError: no label, or a wanted label that is absent.
        GeometryError: the label map is not on the image's grid.
        ImageReadError / DicomError: unreadable file.
    """
    from ..io import load_labels
    from ..io.dicom import dicom_modality, read_dicom_labels

    if dicom_modality(path) in ("RTSTRUCT", "SEG"):
        read = read_dicom_labels(path, volume)
        array, names = read.labels.array, {roi.label: roi.name for roi in read.rois}
    else:
        array, names = load_labels(path, reference=volume).array, slicer_segment_names(path)
    return prompts_from_label_array(array, wanted, names, source=str(path))
