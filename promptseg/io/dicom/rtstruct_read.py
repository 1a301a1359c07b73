"""Reading an RTSTRUCT into a label map on the grid of the series it was drawn on.

Each ROI becomes one label (1, 2, ... in the order of the Structure Set ROI
Sequence); names, colours, numbers and interpreted types are kept in
:class:`RoiInfo`. Every CLOSED_PLANAR contour is placed on the slice whose
plane it lies in (by position, within a tenth of the slice gap) and filled by
the even-odd rule together with the ROI's other contours on that slice, so
holes (inner contours) and islands in holes come back. Contours on slices the
series does not hold, non-closed contours and ROIs without contours are
reported in :attr:`RoiInfo.notes`, never fatal. A structure set drawn in another
Frame of Reference than the series is an error.

Overlapping ROIs (an organ inside BODY) cannot share a voxel in a label map:
the smaller ROI keeps the voxel, and the larger ROI's notes say how many it lost.
Use :func:`read_roi_mask` for one ROI's complete mask.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional

import numpy as np
from pydicom.dataset import Dataset

from ...errors import DicomError, PromptError
from ...volume import Volume
from ..common import DICOM_SUFFIXES, format_suffix, has_dicom_preamble
from .contours import polygons_to_mask
from .objects import modality_of, read_object
from .planes import SlicePlanes, slice_planes


@dataclass
class RoiInfo:
    """One ROI of a structure set (or one segment of a SEG).

    Attributes:
        number: ROI Number in the file (Segment Number for SEG).
        name: ROI Name.
        color: ROI Display Color (r, g, b), 0-255, or None.
        label: its value in the label map.
        interpreted_type: RT ROI Interpreted Type (``"ORGAN"``, ``"GTV"``, ...) or ``""``.
        contour_count: contours in the file for this ROI (all slices).
        notes: what could not be used, in words (skipped contours, overlaps, no contours).
        kind: ``"ROI"`` (RTSTRUCT) or ``"segment"`` (SEG; ``contour_count`` then counts slices).
    """

    number: int
    name: str
    color: Optional[tuple[int, int, int]]
    label: int
    interpreted_type: str = ""
    contour_count: int = 0
    notes: list[str] = field(default_factory=list)
    kind: str = "ROI"

    def describe(self) -> str:
        """One line: label, number, name, type, contour count (ROIs), colour."""
        parts = [f"label {self.label}: {self.kind} {self.number} '{self.name}'"]
        if self.interpreted_type:
            parts.append(self.interpreted_type)
        if self.kind == "ROI":
            parts.append(f"{self.contour_count} contours")
        if self.color:
            parts.append("colour " + ",".join(str(c) for c in self.color))
        return ", ".join(parts)


@dataclass
class RoiLabels:
    """A label map on a reference series plus what each label is.

    Attributes:
        labels: label map ``(z, y, x)`` uint8/uint16 on the reference grid (with its provenance).
        rois: one :class:`RoiInfo` per ROI (or segment), in label order.
    """

    labels: Volume
    rois: list[RoiInfo]

    @property
    def notes(self) -> list[str]:
        """Every ROI's notes, each prefixed with its name."""
        return [f"ROI '{roi.name}': {note}" for roi in self.rois for note in roi.notes]


#: What :func:`read_rtstruct` returns (the name used in the agreed API).
RTStruct = RoiLabels


def _int(value, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _color(item: Dataset) -> Optional[tuple[int, int, int]]:
    value = item.get("ROIDisplayColor")
    try:
        rgb = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        return None
    return rgb if len(rgb) == 3 else None  # type: ignore[return-value]


def _roi_infos(dataset: Dataset, path: Path) -> list[RoiInfo]:
    """The ROIs of an RTSTRUCT data set, without reading contours into masks."""
    if "StructureSetROISequence" not in dataset:
        raise DicomError(f"{path}: malformed RTSTRUCT, it has no Structure Set ROI Sequence (a truncated file?)")
    contours = {_int(item.get("ReferencedROINumber"), -1): item for item in dataset.get("ROIContourSequence", [])}
    types = {
        _int(item.get("ReferencedROINumber"), -1): str(item.get("RTROIInterpretedType", "") or "").strip()
        for item in dataset.get("RTROIObservationsSequence", [])
    }
    rois = []
    for label, item in enumerate(dataset.StructureSetROISequence, start=1):
        number = _int(item.get("ROINumber"), -1)
        contour_item = contours.get(number)
        count = len(contour_item.get("ContourSequence", [])) if contour_item is not None else 0
        rois.append(
            RoiInfo(
                number=number,
                name=str(item.get("ROIName", "") or "").strip() or f"ROI {number}",
                color=_color(contour_item) if contour_item is not None else None,
                label=label,
                interpreted_type=types.get(number, ""),
                contour_count=count,
            )
        )
    return rois


def dicom_modality(path) -> Optional[str]:
    """The Modality of ``path`` if it is a DICOM file (preamble or DICOM suffix), else None."""
    path = Path(path)
    if not path.is_file() or not (has_dicom_preamble(path) or format_suffix(path) in DICOM_SUFFIXES):
        return None
    return modality_of(path)


def is_rtstruct(path) -> bool:
    """True if ``path`` is a DICOM file (preamble or DICOM suffix) whose Modality is RTSTRUCT."""
    return dicom_modality(path) == "RTSTRUCT"


def list_rois(path) -> list[RoiInfo]:
    """The ROIs of an RTSTRUCT file, without a reference series (for ``promptseg info``).

    Raises:
        DicomError: not a readable RTSTRUCT.
    """
    path = Path(path)
    return _roi_infos(read_object(path, "RTSTRUCT"), path)


def _frames_of_reference(dataset: Dataset) -> dict[int, str]:
    """ROI number -> Frame of Reference UID (per ROI, else the structure set's only one)."""
    referenced = [str(item.get("FrameOfReferenceUID", "")).strip()
                  for item in dataset.get("ReferencedFrameOfReferenceSequence", [])]
    fallback = referenced[0] if len(referenced) == 1 else ""
    return {
        _int(item.get("ROINumber"), -1): str(item.get("ReferencedFrameOfReferenceUID", "") or fallback).strip()
        for item in dataset.StructureSetROISequence
    }


def _check_frame_of_reference(dataset: Dataset, rois: list[RoiInfo], planes_uid: str, path: Path) -> None:
    frames = _frames_of_reference(dataset)
    for roi in rois:
        uid = frames.get(roi.number, "")
        if roi.contour_count and uid and planes_uid and uid != planes_uid:
            raise DicomError(
                f"{path}: ROI '{roi.name}' is in Frame of Reference {uid} but the series is in "
                f"{planes_uid}: the structure set was not drawn on this series"
            )


def _contour_points(contour: Dataset) -> Optional[np.ndarray]:
    """Contour Data as ``(n, 3)`` mm, or None when malformed.

    The raw decimal strings are parsed by NumPy: pydicom's conversion to one
    validated ``DSfloat`` object per number takes seconds on a full structure set.
    """
    element = contour.get_item(0x30060050)  # Contour Data, unconverted when read from a file
    if element is None:
        return None
    try:
        if isinstance(element.value, bytes):
            text = element.value.decode("ascii").strip(" \x00")
            values = np.array(text.split("\\"), dtype=float) if text else np.zeros(0)
        else:
            values = np.asarray([float(v) for v in (element.value or [])], dtype=float)
    except (TypeError, ValueError, UnicodeDecodeError):
        return None
    declared = contour.get("NumberOfContourPoints")
    if values.size < 9 or values.size % 3 or (declared not in (None, "") and _int(declared, -1) * 3 != values.size):
        return None
    return values.reshape(-1, 3)


def _z_range_text(depths: list[float]) -> str:
    low, high = min(depths), max(depths)
    return f"{low:.1f} mm" if abs(high - low) < 0.05 else f"{low:.1f} to {high:.1f} mm"


def _roi_polygons(contour_item: Dataset, planes: SlicePlanes, known_uids: set[str]) -> tuple[dict, list[str]]:
    """Polygons per slice ``{z: [(n, 2) xy, ...]}`` of one ROI, and notes on what was skipped."""
    per_slice: dict[int, list[np.ndarray]] = defaultdict(list)
    missing_depths, missing_referenced, off_plane, not_closed, malformed = [], 0, 0, defaultdict(int), 0
    for contour in contour_item.get("ContourSequence", []):
        kind = str(contour.get("ContourGeometricType", "CLOSED_PLANAR")).strip() or "CLOSED_PLANAR"
        if kind != "CLOSED_PLANAR":
            not_closed[kind] += 1
            continue
        points = _contour_points(contour)
        if points is None:
            malformed += 1
            continue
        z, xy, distance = planes.to_index(points)
        if z is None:
            depth = float((points @ planes.normal).mean())
            span = float(np.ptp(points @ planes.normal))
            if span > max(0.01, 0.1 * planes.slice_gap):
                off_plane += 1
            else:
                missing_depths.append(depth)
                referenced = [str(i.get("ReferencedSOPInstanceUID", "")) for i in contour.get("ContourImageSequence", [])]
                missing_referenced += bool(referenced) and not (set(referenced) & known_uids)
            continue
        per_slice[z].append(xy)
    notes = []
    if missing_depths:
        if missing_referenced == len(missing_depths):
            why = ", all on images missing from the series"
        else:
            why = f", {missing_referenced} of them on images missing from the series" if missing_referenced else ""
        notes.append(
            f"{len(missing_depths)} contours lie on no slice of the series (at {_z_range_text(missing_depths)} "
            f"along the slice normal{why}); skipped"
        )
    if off_plane:
        notes.append(f"{off_plane} contours are not parallel to the slices; skipped")
    for kind, count in not_closed.items():
        notes.append(f"{count} {kind} contours (not closed, no area); skipped")
    if malformed:
        notes.append(f"{malformed} contours have malformed Contour Data (not the declared number of "
                     "x,y,z triplets); skipped")
    return per_slice, notes


def _rasterise(
    dataset: Dataset,
    reference: Volume,
    path: Path,
    keep: Callable[[RoiInfo], bool] = lambda roi: True,
) -> tuple[list[RoiInfo], dict[int, np.ndarray]]:
    """ROI infos (with notes) and the full boolean mask ``(z, y, x)`` of each kept ROI with voxels."""
    rois = _roi_infos(dataset, path)
    planes = slice_planes(reference, "an RTSTRUCT")
    _check_frame_of_reference(dataset, rois, reference.dicom.frame_of_reference_uid, path)
    contour_items = {_int(item.get("ReferencedROINumber"), -1): item for item in dataset.get("ROIContourSequence", [])}
    known = set(reference.dicom.sop_instance_uids)
    shape2d = reference.shape[1:]
    masks = {}
    for roi in rois:
        if not keep(roi):
            continue
        item = contour_items.get(roi.number)
        if item is None or not roi.contour_count:
            roi.notes.append("no contours")
            continue
        per_slice, notes = _roi_polygons(item, planes, known)
        roi.notes.extend(notes)
        if not per_slice:
            continue
        mask = np.zeros(reference.shape, dtype=bool)
        for z, polygons in per_slice.items():
            mask[z] = polygons_to_mask(polygons, shape2d)
        if mask.any():
            masks[roi.label] = mask
        else:
            roi.notes.append("its contours enclose no voxel centre of the series")
    return rois, masks


def _relabel(rois: list[RoiInfo], roi_labels: Mapping[str, int], path: Path) -> list[RoiInfo]:
    """Keep the ROIs named in ``roi_labels`` (case-insensitive) with their given label values."""
    wanted = {}
    for name, value in roi_labels.items():
        if int(value) < 1:
            raise DicomError(f"label value of ROI {name!r} must be >= 1, got {value}")
        wanted[str(name).strip().lower()] = int(value)
    kept = []
    for roi in rois:
        value = wanted.get(roi.name.strip().lower())
        if value is not None:
            if any(k.label == value for k in kept):
                raise DicomError(f"{path}: two ROIs are called {roi.name!r} (case-insensitively); cannot tell them apart")
            roi.label = value
            kept.append(roi)
    return kept


def read_rtstruct(path, reference: Volume, *, roi_labels: Optional[Mapping[str, int]] = None) -> RoiLabels:
    """Read an RTSTRUCT as a label map on the grid of ``reference``.

    Args:
        path: RTSTRUCT file.
        reference: the series the structures were drawn on, read with
            :func:`promptseg.io.load_volume` (it carries the DICOM provenance).
        roi_labels: ``{ROI name: label value}`` to read only those ROIs (names matched
            case-insensitively; a name the file lacks is simply absent) with fixed label
            values -- the same structure keeps its label across cases. Default: every
            ROI, labels 1..N in file order.

    Returns:
        :class:`RoiLabels`: ``labels`` (uint8, or uint16 beyond 255) on the reference
        grid; ``rois`` (the ROIs read, in file order) with names, colours and notes on
        anything skipped.

    Raises:
        DicomError: unreadable or malformed file, not an RTSTRUCT, another Frame
            of Reference than the series, or a reference without DICOM provenance.
    """
    path = Path(path)
    dataset = read_object(path, "RTSTRUCT")
    if roi_labels is None:
        rois, masks = _rasterise(dataset, reference, path)
    else:
        names = {roi.name.strip().lower() for roi in _relabel(_roi_infos(dataset, path), roi_labels, path)}
        rois, masks = _rasterise(dataset, reference, path, keep=lambda roi: roi.name.strip().lower() in names)
        by_old_label = {roi.label: roi for roi in rois}
        rois = _relabel(rois, roi_labels, path)
        masks = {by_old_label[old].label: mask for old, mask in masks.items() if by_old_label[old] in rois}
    top = max([roi.label for roi in rois], default=0)
    dtype = np.uint8 if top <= np.iinfo(np.uint8).max else np.uint16
    labels = np.zeros(reference.shape, dtype=dtype)
    by_label = {roi.label: roi for roi in rois}
    order = sorted(masks, key=lambda label: -int(masks[label].sum()))  # largest first: smaller ROIs stay on top
    for label in order:
        labels[masks[label]] = label
    for label in order:
        lost = int(np.count_nonzero(masks[label] & (labels != label)))
        if lost:
            by_label[label].notes.append(f"{lost} of its voxels belong to smaller overlapping ROIs in the label map")
    return RoiLabels(reference.with_array(labels, modality=None), rois)


def _pattern(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as error:
        raise PromptError(f"invalid ROI name pattern {pattern!r}: {error}") from None


def read_roi_mask(path, reference: Volume, name_pattern: str) -> tuple[np.ndarray, RoiInfo]:
    """The complete mask of the one ROI whose name matches ``name_pattern``.

    Args:
        path: RTSTRUCT file.
        reference: the series it was drawn on (with DICOM provenance).
        name_pattern: regular expression matched against the whole ROI name,
            case-insensitive (``"GTV.*"`` matches ``GTV``, ``gtv_1``; not ``PTV``).

    Returns:
        ``(mask, roi)``: boolean ``(z, y, x)`` mask on the reference grid and its :class:`RoiInfo`.

    Raises:
        PromptError: invalid pattern, no ROI or several ROIs match, or the ROI has
            no voxel on this series.
        DicomError: as :func:`read_rtstruct`.
    """
    path = Path(path)
    regex = _pattern(name_pattern)
    dataset = read_object(path, "RTSTRUCT")
    names = [roi.name for roi in _roi_infos(dataset, path)]
    matching = [name for name in names if regex.fullmatch(name)]
    if not matching:
        raise PromptError(f"no ROI in {path.name} matches {name_pattern!r}; its ROIs: {', '.join(names) or 'none'}")
    if len(matching) > 1:
        raise PromptError(
            f"{len(matching)} ROIs in {path.name} match {name_pattern!r} ({', '.join(matching)}): "
            "make the pattern match exactly one"
        )
    rois, masks = _rasterise(dataset, reference, path, keep=lambda roi: roi.name == matching[0])
    roi = next(r for r in rois if r.name == matching[0])
    if roi.label not in masks:
        why = "; ".join(roi.notes) or "no contours"
        raise PromptError(f"ROI '{roi.name}' in {path.name} has no voxel on this series ({why})")
    return masks[roi.label], roi


def find_rtstruct(series_folder, reference: Volume) -> Optional[Path]:
    """The RTSTRUCT next to a series: in its folder or the folder above, in its Frame of Reference.

    Args:
        series_folder: the folder the series was read from.
        reference: the series (its provenance gives the Frame of Reference).

    Returns:
        The one matching RTSTRUCT file, or None if there is none.

    Raises:
        DicomError: several candidates (the message lists them).
    """
    folder = Path(series_folder)
    uid = reference.dicom.frame_of_reference_uid if reference.dicom else ""
    found = []
    for place in (folder, folder.parent) if folder.is_dir() else (folder.parent,):
        for candidate in sorted(p for p in place.iterdir() if p.is_file()):
            if modality_of(candidate) != "RTSTRUCT":
                continue
            frames = set(_frames_of_reference(read_object(candidate, "RTSTRUCT")).values())
            if not uid or not frames - {""} or uid in frames:
                found.append(candidate)
        if found:
            break
    if len(found) > 1:
        raise DicomError(
            f"{len(found)} RTSTRUCT files next to {folder} ({', '.join(p.name for p in found)}): "
            "choose one with --rtstruct FILE"
        )
    return found[0] if found else None
