"""Prompts from an existing contour: a box on the largest cross-section of an RTSTRUCT ROI.

The STARDUST workflow: a planning CT arrives with a GTV already drawn; a box
around the GTV on the slice where it is largest prompts the model, which then
segments the whole structure slice by slice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import PromptError
from ..io.dicom import RoiInfo, find_rtstruct, read_roi_mask
from .model import ObjectPrompt, box_from_mask, make_object
from ..volume import Volume


def largest_slice_box(mask: np.ndarray, label: int = 1, name: Optional[str] = None) -> ObjectPrompt:
    """A box prompt around ``mask`` on the slice where it covers the most voxels.

    Args:
        mask: boolean ``(z, y, x)`` mask, not empty.
        label: label value of the object to segment.
        name: its name.

    Returns:
        :class:`~promptseg.prompts.ObjectPrompt` with the tight box ``(x0, y0, x1, y1)``
        on that slice (ties: the lowest slice).

    Raises:
        PromptError: empty mask.
    """
    areas = np.asarray(mask, dtype=bool).reshape(mask.shape[0], -1).sum(axis=1)
    if not areas.any():
        raise PromptError(f"{name or 'the ROI'}: the mask is empty, there is no slice to put a box on")
    z = int(np.argmax(areas))
    return make_object(slice=z, box=box_from_mask(mask[z]), label=label, name=name,
                       image_shape=tuple(mask.shape[1:]))


def prompt_from_roi(
    volume: Volume,
    pattern: str,
    rtstruct=None,
    *,
    label: int = 1,
    name: Optional[str] = None,
) -> tuple[ObjectPrompt, RoiInfo, Path]:
    """A box prompt from the ROI of an RTSTRUCT whose name matches ``pattern``.

    Args:
        volume: the series to segment (read from DICOM, with provenance).
        pattern: regular expression for the whole ROI name, case-insensitive (``"GTV.*"``).
        rtstruct: the RTSTRUCT file; default: the one next to the series
            (:func:`~promptseg.io.dicom.find_rtstruct` in ``volume``'s source folder).
        label: label value of the new object.
        name: its name (default: the ROI's name with ``"_promptseg"`` appended).

    Returns:
        ``(prompt, roi, rtstruct_path)``.

    Raises:
        PromptError: no RTSTRUCT found, no/several ROIs match, the ROI has no voxel on the series.
        DicomError: unreadable RTSTRUCT, other Frame of Reference, volume not from DICOM.
    """
    if rtstruct is None:
        source = volume.metadata.get("source")
        rtstruct = find_rtstruct(Path(source), volume) if source else None
        if rtstruct is None:
            raise PromptError(f"no RTSTRUCT next to {source or 'the series'} for the ROI prompt: give it with --rtstruct FILE")
    rtstruct = Path(rtstruct)
    mask, roi = read_roi_mask(rtstruct, volume, pattern)
    prompt = largest_slice_box(mask, label=label, name=name or f"{roi.name}_promptseg"[:64])
    return prompt, roi, rtstruct
