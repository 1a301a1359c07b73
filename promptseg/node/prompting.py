"""Where a rule's prompts come from: an ROI of an RTSTRUCT that came with the study, a fixed box, or a prompt file.

An ROI prompt is a box around the ROI on its largest cross-section (the slice where
it covers most voxels), from which segmentation propagates through the volume --
as STARDUST prompts from the planning GTV.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DicomError, PromptsegError
from ..prompts import ObjectPrompt, load_prompt_file, make_object, validate
from ..prompts.roi import largest_slice_box
from ..volume import Volume
from .checks import SeriesRejected
from .config import PromptItem, Rule, compile_pattern


def _dicom_io():
    from ..io import dicom

    return dicom


def _roi_prompt(item: PromptItem, volume: Volume, rtstructs: Sequence[Path], dicom) -> tuple[ObjectPrompt, str]:
    pattern = compile_pattern(item.roi)
    if not rtstructs:
        raise SeriesRejected(f"no RTSTRUCT came with the study, so there is no ROI matching {item.roi!r} to prompt from")
    seen: list[str] = []
    problems: list[str] = []
    for path in reversed(list(rtstructs)):  # the newest structure set first
        try:
            rois = dicom.list_rois(path)
        except PromptsegError as error:
            problems.append(str(error))
            continue
        seen += [roi.name for roi in rois]
        found = [roi for roi in rois if pattern.fullmatch(roi.name.strip())]
        if len(found) > 1:
            names = ", ".join(roi.name for roi in found)
            raise SeriesRejected(f"ROI pattern {item.roi!r} matches several ROIs ({names}); make it specific")
        if not found:
            continue
        roi = found[0]
        try:
            mask, _ = dicom.read_roi_mask(path, volume, re.escape(roi.name))
        except DicomError as error:  # drawn on another series (Frame of Reference) of the study
            problems.append(str(error))
            continue
        except PromptsegError:
            raise SeriesRejected(f"ROI {roi.name!r} has no contour on this series") from None
        name = item.name or f"{roi.name}_promptseg"
        return largest_slice_box(np.asarray(mask, bool), label=item.label, name=name), name
    if problems:
        raise SeriesRejected(f"no RTSTRUCT of the study with an ROI matching {item.roi!r} refers to this series "
                             f"({'; '.join(problems)})")
    raise SeriesRejected(f"no ROI matching {item.roi!r} in the study's RTSTRUCT (ROIs: {', '.join(sorted(set(seen))) or 'none'})")


def _box_prompt(item: PromptItem, volume: Volume) -> tuple[ObjectPrompt, str]:
    z = volume.num_slices // 2 if item.slice == "middle" else int(item.slice)
    name = item.name or f"promptseg_{item.label}"
    return make_object(slice=z, box=item.box, label=item.label, name=name), name


def build_prompts(rule: Rule, volume: Volume, rtstructs: Sequence[Path] = (),
                  dicom=None) -> tuple[list[ObjectPrompt], dict[int, str]]:
    """The objects ``rule`` asks for on ``volume``, and the output ROI / segment name of each label.

    Args:
        rule: a configured rule (``prompts`` or ``prompt_file``).
        volume: the series read as a Volume.
        rtstructs: RTSTRUCT files received for the study, oldest first (for ``roi`` prompts).
        dicom: what reads the RTSTRUCTs: ``list_rois(path)`` and ``read_roi_mask(path, reference, pattern)``
            (default: :mod:`promptseg.io.dicom`).

    Raises:
        SeriesRejected: no RTSTRUCT, no (or several) matching ROIs, an empty ROI, an invalid prompt file or box.
    """
    try:
        if rule.prompt_file is not None:
            objects = load_prompt_file(rule.prompt_file, image_shape=volume.shape[1:])
            names = {obj.label: obj.name or f"promptseg_{obj.label}" for obj in objects}
        else:
            objects, names = [], {}
            for item in rule.prompts:
                if item.roi is not None:
                    obj, name = _roi_prompt(item, volume, rtstructs, dicom or _dicom_io())
                else:
                    obj, name = _box_prompt(item, volume)
                objects.append(obj)
                names[item.label] = name
        for obj in objects:
            validate(obj, volume.shape)
        return objects, names
    except SeriesRejected:
        raise
    except PromptsegError as error:
        raise SeriesRejected(f"prompt: {error}") from None
