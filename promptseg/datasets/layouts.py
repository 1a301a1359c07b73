"""Labelled datasets: the layouts ``promptseg benchmark``, ``prepare`` and ``split`` read.

:func:`load_dataset` accepts (details and examples in ``docs/evaluation.md``):

1. **A folder with images and labels in two sub-folders** with matching names:
   ``images/`` + ``labels/``, nnU-Net's ``imagesTr/`` + ``labelsTr/``, or
   MedSAM's ``imgs/`` + ``gts/`` (NPZ). ``images/ct_001.nii.gz`` pairs with
   ``labels/ct_001.nii.gz`` (the extensions may differ: ``.nrrd`` image,
   ``.nii.gz`` label). nnU-Net channel names are understood: ``x_0000.nii.gz``
   pairs with label ``x.nii.gz``, and further channels ``x_0001``, ``x_0002``
   ... of the same case become its *phases* (co-registered images, see
   below). A sub-folder of ``images/`` is read as a DICOM series. Files
   starting with ``.`` and files that are not images (``.json``, ``.raw``
   data files of ``.mhd`` headers, ...) are ignored.
2. **A manifest**, CSV or JSON, listing ``image`` and ``label`` per case, with
   optional ``case`` (id; default: the image's name without extension),
   ``label_names`` (``"1:liver;2:tumour"``) and ``phases``
   (``"art.nii.gz;ven.nii.gz"``). Relative paths are relative to the manifest.
3. **A folder of MedSAM NPZ files**, each holding the image (``imgs``) and
   its reference (``gts``); the case id is the file name.
4. **A folder of DICOM case folders** (radiotherapy exports): each case folder
   holds one CT/MR series (its files, or one sub-folder of them) and one
   RTSTRUCT; the case id is the folder name. Each ROI name is a label: the
   ``dataset.json`` next to the case folders maps ROI names to values
   (``{"labels": {"GTV": 1, "Heart": 2}}``, names matched case-insensitively,
   other ROIs ignored); without it every ROI name found is a label, numbered
   in order of first appearance over the sorted cases. A manifest may also
   name a series folder as ``image`` and an RTSTRUCT as ``label``.

Label names come from the manifest, or from a ``dataset.json`` next to the
sub-folders / NPZ files (nnU-Net style: ``{"labels": {"background": 0,
"liver": 1}}`` or ``{"labels": {"0": "background", "1": "liver"}}``). A label
value must have the same name in every case (the benchmark summarises per
label); background 0 is never a label.

Phases: ``Case.image`` is the primary image (prompted and segmented on its own
in a normal run); ``Case.phases`` are further co-registered images of the same
case on the same grid (e.g. arterial and venous CT), used by the ``aggregate``
sweep of :func:`promptseg.evaluation.benchmark.run_benchmark`.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import PromptsegError
from ..io.jsonfile import read_json
from ..io.common import SUPPORTED_IMAGE_SUFFIXES, format_suffix

#: (images, labels) sub-folder pairs a dataset folder may hold, in the order they are looked for.
FOLDER_PAIRS = (("images", "labels"), ("imagesTr", "labelsTr"), ("imgs", "gts"))
#: Columns (CSV) / keys (JSON) of a manifest entry.
MANIFEST_FIELDS = ("image", "label", "case", "label_names", "phases")
_CHANNEL = re.compile(r"^(?P<base>.+)_(?P<channel>\d{4})$")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")


class DatasetError(PromptsegError):
    """A dataset folder or manifest is malformed (missing labels, duplicates, unknown layout)."""


@dataclass
class Case:
    """One labelled case.

    Attributes:
        case_id: unique id, used as a file name (letters, digits, ``. _ + = -``).
        image: the primary image (any format :func:`promptseg.io.load_volume` reads).
        label: its reference label map on the same grid (integer labels, 0 = background).
        label_names: ``{label value: name}`` known for this case (may be empty).
        phases: further co-registered images of the case on the image's grid
            (empty for single-phase cases).
    """

    case_id: str
    image: Path
    label: Path
    label_names: dict[int, str] = field(default_factory=dict)
    phases: list[Path] = field(default_factory=list)

    @property
    def images(self) -> list[Path]:
        """The primary image followed by the phases."""
        return [self.image, *self.phases]

    def reference_labels(self, volume) -> np.ndarray:
        """The reference label map ``(z, y, x)`` on ``volume``'s grid (the case's image, as read).

        A label map file is read as it is; an RTSTRUCT is rasterised onto the series,
        ROI ``label_names[v]`` becoming label ``v`` (every ROI in file order when the
        case has no label names).
        """
        from ..io import load_labels
        from ..io.dicom import is_rtstruct, read_rtstruct

        if is_rtstruct(self.label):
            roi_labels = {name: value for value, name in self.label_names.items()} or None
            return read_rtstruct(self.label, volume, roi_labels=roi_labels).labels.array
        return load_labels(self.label, reference=volume).array

    def as_dict(self) -> dict:
        """The JSON form recorded in a benchmark's ``run.json``."""
        out = {"case": self.case_id, "image": str(self.image), "label": str(self.label)}
        if self.phases:
            out["phases"] = [str(p) for p in self.phases]
        return out


@dataclass
class Dataset:
    """A list of labelled cases.

    Attributes:
        name: the folder's or manifest's name (a JSON manifest may set ``"name"``).
        cases: in a stable order (manifest order; sorted by case id for folders).
        path: the folder or manifest file it was read from.
        layout: ``"folders"``, ``"manifest-csv"``, ``"manifest-json"``, ``"npz"``, ``"dicom"`` or ``"list"``.
    """

    name: str
    cases: list[Case]
    path: Optional[Path] = None
    layout: str = "list"

    @property
    def label_names(self) -> dict[int, str]:
        """``{label: name}`` over all cases (a label has one name in every case)."""
        return merge_label_names(self.cases)

    def __len__(self) -> int:
        return len(self.cases)

    def files(self) -> list[Path]:
        """Every file (or DICOM folder) the dataset reads: its manifest or folder, images, phases, labels."""
        out = [self.path] if self.path is not None else []
        for case in self.cases:
            out.extend([*case.images, case.label])
        return out


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def _stem(path: Path) -> str:
    suffix = format_suffix(path) if path.is_file() else ""
    return path.name[: len(path.name) - len(suffix)] if suffix else path.name


def _is_image_entry(path: Path) -> bool:
    if path.name.startswith("."):
        return False
    if path.is_dir():
        return True
    return format_suffix(path) in SUPPORTED_IMAGE_SUFFIXES


def _list(names, limit: int = 5) -> str:
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_case_id(case_id: str, where: str) -> str:
    """Raise :class:`DatasetError` unless ``case_id`` is usable as a file name."""
    if not _SAFE_ID.match(case_id or ""):
        raise DatasetError(
            f"{where}: case id {case_id!r} cannot be used as a file name "
            "(letters, digits and . _ + = - only, not starting with . or -)"
        )
    return case_id


def parse_label_names(value, where: str) -> dict[int, str]:
    """``"1:liver;2:tumour"`` or ``{"1": "liver"}`` -> ``{1: "liver", 2: "tumour"}``.

    Raises:
        DatasetError: malformed text, a non-integer or non-positive label, a repeated label.
    """
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, str):
        items = []
        for part in value.split(";"):
            if not part.strip():
                continue
            key, sep, name = part.partition(":")
            if not sep or not name.strip():
                raise DatasetError(f"{where}: label_names {value!r}: expected 'VALUE:NAME;VALUE:NAME', e.g. '1:liver;2:tumour'")
            items.append((key, name))
    else:
        raise DatasetError(f"{where}: label_names must be text like '1:liver;2:tumour' or an object, got {type(value).__name__}")
    names: dict[int, str] = {}
    for key, name in items:
        try:
            label = int(str(key).strip())
        except ValueError:
            raise DatasetError(f"{where}: label_names: {key!r} is not an integer label value") from None
        if label < 1:
            raise DatasetError(f"{where}: label_names: label values start at 1 (0 is background), got {label}")
        if label in names:
            raise DatasetError(f"{where}: label_names: label {label} is named twice")
        names[label] = str(name).strip()
    return names


def merge_label_names(cases: list[Case]) -> dict[int, str]:
    """One ``{label: name}`` map for all cases.

    Raises:
        DatasetError: a label value has different names in two cases.
    """
    merged: dict[int, str] = {}
    origin: dict[int, str] = {}
    for case in cases:
        for label, name in case.label_names.items():
            if label in merged and merged[label] != name:
                raise DatasetError(
                    f"label {label} is called {merged[label]!r} in case {origin[label]} but {name!r} in case "
                    f"{case.case_id}; a label value must mean the same structure in every case"
                )
            merged.setdefault(label, name)
            origin.setdefault(label, case.case_id)
    return dict(sorted(merged.items()))


def _nnunet_label_names(path: Path) -> dict[int, str]:
    """Label names from an nnU-Net-style ``dataset.json`` (v1 or v2), background dropped."""
    doc = read_json(path, "dataset.json", DatasetError)
    labels = doc.get("labels") if isinstance(doc, dict) else None
    if labels is None:
        return {}
    if not isinstance(labels, dict):
        raise DatasetError(f"{path}: 'labels' must be an object")
    names: dict[int, str] = {}
    for key, value in labels.items():
        if isinstance(value, int) and not isinstance(value, bool):  # v2: name -> value
            label, name = value, key
        elif str(key).strip().lstrip("-").isdigit() and isinstance(value, str):  # v1: "value" -> name
            label, name = int(key), value
        else:  # region-based v2 entries (lists) and anything else carry no single value
            continue
        if label >= 1:
            names[label] = str(name)
    return dict(sorted(names.items()))


def _check_exists(path: Path, what: str, where: str) -> Path:
    if not path.exists():
        raise DatasetError(f"{where}: {what} not found: {path}")
    return path


def _finish(name: str, cases: list[Case], path: Path, layout: str) -> Dataset:
    if not cases:
        raise DatasetError(f"{path}: the dataset holds no cases")
    seen: dict[str, Case] = {}
    for case in cases:
        check_case_id(case.case_id, str(path))
        if case.case_id in seen:
            raise DatasetError(
                f"{path}: case id {case.case_id!r} is used twice ({seen[case.case_id].image} and {case.image}); "
                "give each case its own id"
            )
        seen[case.case_id] = case
    dataset = Dataset(name=name, cases=cases, path=path, layout=layout)
    dataset.label_names  # raises on conflicting names
    return dataset


# ---------------------------------------------------------------------------
# folder layouts
# ---------------------------------------------------------------------------
def _entries(folder: Path) -> dict[str, Path]:
    """``{stem: path}`` of the image entries of ``folder``; duplicate stems are an error."""
    out: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not _is_image_entry(path):
            continue
        stem = _stem(path)
        if stem in out:
            raise DatasetError(
                f"{folder}: {out[stem].name} and {path.name} have the same name {stem!r}; keep one"
            )
        out[stem] = path
    return out


def _load_folders(root: Path, image_dir: Path, label_dir: Path) -> Dataset:
    images, labels = _entries(image_dir), _entries(label_dir)
    names_file = root / "dataset.json"
    names = _nnunet_label_names(names_file) if names_file.is_file() else {}
    # case id -> {channel: image path}; channel None = an image named exactly like its label
    groups: dict[str, dict[Optional[int], Path]] = {}
    for stem, path in images.items():
        if stem in labels:
            case_id, channel = stem, None
        else:
            match = _CHANNEL.match(stem)
            if match and match["base"] in labels:
                case_id, channel = match["base"], int(match["channel"])
            else:
                case_id, channel = stem, None
        slot = groups.setdefault(case_id, {})
        if channel in slot:
            raise DatasetError(f"{image_dir}: {slot[channel].name} and {path.name} both belong to case {case_id!r}")
        slot[channel] = path
    without_label = [case_id for case_id in groups if case_id not in labels]
    if without_label:
        raise DatasetError(
            f"{image_dir}: no label in {label_dir} for {len(without_label)} image(s): {_list(without_label)} "
            "(a label must have the image's name, or x.nii.gz for nnU-Net's x_0000.nii.gz)"
        )
    without_image = [stem for stem in labels if stem not in groups]
    if without_image:
        raise DatasetError(f"{label_dir}: no image in {image_dir} for {len(without_image)} label(s): {_list(without_image)}")
    cases = []
    for case_id in sorted(groups):
        slot = groups[case_id]
        if None in slot and len(slot) > 1:
            raise DatasetError(f"{image_dir}: case {case_id!r} has both an image named like its label and channel images")
        if None in slot:
            image, phases = slot[None], []
        else:
            channels = sorted(slot)
            if channels[0] != 0:
                raise DatasetError(f"{image_dir}: case {case_id!r} has channels {channels} but no _0000 image")
            image, phases = slot[0], [slot[c] for c in channels[1:]]
        cases.append(Case(case_id, image, labels[case_id], dict(names), phases))
    return _finish(root.name, cases, root, "folders")


def _npz_keys(path: Path) -> list[str]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return list(archive.files)
    except Exception as exc:  # noqa: BLE001 - any failure means "not a usable NPZ"
        raise DatasetError(f"{path}: not a readable NPZ archive ({type(exc).__name__}: {exc})") from None


def _load_npz_folder(root: Path, files: list[Path]) -> Dataset:
    names_file = root / "dataset.json"
    names = _nnunet_label_names(names_file) if names_file.is_file() else {}
    cases = []
    for path in files:
        keys = _npz_keys(path)
        missing = [k for k in ("imgs", "gts") if k not in keys]
        if missing:
            raise DatasetError(
                f"{path}: a dataset NPZ needs 'imgs' (image) and 'gts' (reference labels); "
                f"missing {', '.join(missing)} (keys: {', '.join(keys) or 'none'})"
            )
        cases.append(Case(_stem(path), path, path, dict(names)))
    return _finish(root.name, cases, root, "npz")


_NOT_IMAGES = {"RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "SEG", "SR", "REG", "KO", "PR"}


def _dicom_case(folder: Path) -> Optional[tuple[Path, Path]]:
    """``(series folder, RTSTRUCT)`` of a case folder, None when it holds no DICOM at all."""
    from ..io.common import DICOM_SUFFIXES, has_dicom_preamble
    from ..io.dicom.objects import modality_of

    places = [folder] + sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    rtstructs, series = [], []
    for place in places:
        holds_images = False
        for path in sorted(p for p in place.iterdir() if p.is_file() and not p.name.startswith(".")):
            if not (format_suffix(path) in DICOM_SUFFIXES or has_dicom_preamble(path)):
                continue
            modality = modality_of(path)
            if modality == "RTSTRUCT":
                rtstructs.append(path)
            elif modality and modality not in _NOT_IMAGES:
                holds_images = True
        if holds_images:
            series.append(place)
    if not rtstructs and not series:
        return None
    if len(series) != 1:
        found = ", ".join(str(p.relative_to(folder.parent)) for p in series) or "none"
        raise DatasetError(f"{folder}: a DICOM case folder needs exactly one folder of image files; found {found}")
    if len(rtstructs) != 1:
        found = ", ".join(p.name for p in rtstructs) or "none"
        raise DatasetError(f"{folder}: a DICOM case folder needs exactly one RTSTRUCT; found {found}")
    return series[0], rtstructs[0]


def _load_dicom_cases(root: Path, folders: list[Path]) -> Optional[Dataset]:
    """The DICOM case-folder layout, or None when no case folder holds DICOM files."""
    from ..io.dicom import list_rois

    found = [(folder, _dicom_case(folder)) for folder in folders]
    found = [(folder, pair) for folder, pair in found if pair is not None]
    if not found:
        return None
    names_file = root / "dataset.json"
    if names_file.is_file():
        names = _nnunet_label_names(names_file)
    else:
        order: dict[str, str] = {}
        for _, (_, rtstruct) in found:
            for roi in list_rois(rtstruct):
                order.setdefault(roi.name.strip().lower(), roi.name.strip())
        names = {value: name for value, name in enumerate(order.values(), start=1)}
    cases = [Case(folder.name, series, rtstruct, dict(names)) for folder, (series, rtstruct) in found]
    return _finish(root.name, cases, root, "dicom")


# ---------------------------------------------------------------------------
# manifests
# ---------------------------------------------------------------------------
def _resolve(base: Path, value: str) -> Path:
    path = Path(str(value).strip()).expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else base / path))


def _split_paths(value) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [p.strip() for p in str(value).split(";") if p.strip()]


def _case_from_entry(entry: dict, base: Path, where: str, default_names: dict[int, str]) -> Case:
    unknown = sorted(set(entry) - set(MANIFEST_FIELDS))
    if unknown:
        raise DatasetError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(MANIFEST_FIELDS)}")
    for key in ("image", "label"):
        if not entry.get(key):
            raise DatasetError(f"{where}: '{key}' is missing")
    image = _check_exists(_resolve(base, entry["image"]), "image", where)
    label = _check_exists(_resolve(base, entry["label"]), "label", where)
    phases = [_check_exists(_resolve(base, p), "phase image", where) for p in _split_paths(entry.get("phases"))]
    case_id = str(entry.get("case") or "").strip() or _stem(image)
    names = dict(default_names)
    names.update(parse_label_names(entry.get("label_names"), where))
    return Case(check_case_id(case_id, where), image, label, names, phases)


def _load_csv(path: Path) -> Dataset:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: cannot read the manifest ({exc})") from None
    missing = [c for c in ("image", "label") if c not in columns]
    if missing:
        raise DatasetError(
            f"{path}: the manifest needs the columns image and label (optional: case, label_names, phases); "
            f"found {', '.join(columns) or 'no header'}"
        )
    cases = []
    for number, row in enumerate(rows, start=2):
        if None in row:
            raise DatasetError(f"{path}: line {number}: more values than columns")
        entry = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        if not any(entry.values()):
            continue
        entry = {k: v for k, v in entry.items() if v != "" or k in ("image", "label")}
        cases.append(_case_from_entry(entry, path.parent, f"{path}: line {number}", {}))
    return _finish(path.stem, cases, path, "manifest-csv")


def _load_json(path: Path) -> Dataset:
    doc = read_json(path, "manifest", DatasetError)
    name = path.stem
    default_names: dict[int, str] = {}
    if isinstance(doc, dict):
        unknown = sorted(set(doc) - {"name", "label_names", "cases"})
        if unknown:
            raise DatasetError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: name, label_names, cases")
        name = str(doc.get("name") or name)
        default_names = parse_label_names(doc.get("label_names"), str(path))
        entries = doc.get("cases")
    else:
        entries = doc
    if not isinstance(entries, list):
        raise DatasetError(f"{path}: expected a list of cases or {{\"cases\": [...]}}")
    cases = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise DatasetError(f"{path}: cases.{i}: expected an object with image and label")
        cases.append(_case_from_entry(entry, path.parent, f"{path}: cases.{i}", default_names))
    return _finish(name, cases, path, "manifest-json")


# ---------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------
def load_dataset(path) -> Dataset:
    """Read a labelled dataset (folder, CSV / JSON manifest, or folder of MedSAM NPZ files).

    Args:
        path: a folder holding ``images/`` + ``labels/`` (or ``imagesTr/`` +
            ``labelsTr/``, ``imgs/`` + ``gts/``), a folder of ``.npz`` files with
            ``imgs`` and ``gts``, a folder of DICOM case folders (series + RTSTRUCT),
            or a ``.csv`` / ``.json`` manifest.

    Returns:
        :class:`Dataset`. Nothing is read but file names (NPZ key lists, DICOM
        modalities and ROI names): images are loaded by the benchmark, case by case.

    Raises:
        DatasetError: no such path, unknown layout, images without labels or
            labels without images, duplicate case ids, missing files named in
            a manifest, bad label names.
    """
    path = Path(os.path.abspath(Path(path).expanduser()))
    if not path.exists():
        raise DatasetError(f"no such dataset: {path}")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".csv":
            return _load_csv(path)
        if suffix == ".json":
            return _load_json(path)
        raise DatasetError(f"{path}: a dataset file must be a .csv or .json manifest")
    for image_name, label_name in FOLDER_PAIRS:
        image_dir, label_dir = path / image_name, path / label_name
        if image_dir.is_dir() or label_dir.is_dir():
            if not (image_dir.is_dir() and label_dir.is_dir()):
                have, lack = (image_dir, label_dir) if image_dir.is_dir() else (label_dir, image_dir)
                raise DatasetError(f"{path}: has {have.name}/ but no {lack.name}/ folder")
            return _load_folders(path, image_dir, label_dir)
    npz = sorted(p for p in path.glob("*.npz") if not p.name.startswith("."))
    if npz:
        return _load_npz_folder(path, npz)
    folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    dicom = _load_dicom_cases(path, folders) if folders else None
    if dicom is not None:
        return dicom
    raise DatasetError(
        f"{path}: unknown dataset layout; expected images/ + labels/ (or imagesTr/ + labelsTr/, imgs/ + gts/), "
        "MedSAM .npz files with imgs and gts, DICOM case folders (series + RTSTRUCT), or a .csv / .json manifest "
        "(see docs/evaluation.md)"
    )
