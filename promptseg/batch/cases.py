"""The cases of a batch run: from a folder of images or from a CSV / JSON manifest.

A folder (``-i DIR``): every image file (NIfTI, NRRD, MHA, ...) and every
sub-folder (a DICOM series) directly in it is a case, named after the file
without its format suffix (``case007.nii.gz`` -> ``case007``), in name order.
Per-case prompts come from a folder too: ``<prompts>/<case>.json`` or
``<prompts>/<case>.mrk.json`` (a prompt file or 3D Slicer markups), or
``<prompt_masks>/<case>.<suffix>`` (a label map, one box per label); or one
prompt (file or typed options) serves every case.

A manifest: CSV with a header, or JSON (a list of objects or ``{"cases": [...]}``),
with the fields

======================  =================================================================
``image``               required: image file or DICOM folder
``case``                case id (default: the image's name)
``prompts``             a prompt file or Slicer markups file for this case
``prompt_mask``         a label map on the image's grid (one box per label)
``labels``              with ``prompt_mask``: label values, ``1;3`` (or ``"1,3"``)
``series``              Series Instance UID, for a DICOM folder holding several
``output``              label map to write (default ``<case>.nii.gz`` in the output folder)
======================  =================================================================

Input paths are relative to the manifest's folder; outputs to the output folder.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..datasets.layouts import check_case_id
from ..errors import PromptsegError
from ..io.common import SUPPORTED_IMAGE_SUFFIXES, format_suffix
from ..prompts.source import parse_label_list

#: fields a manifest row may have
MANIFEST_FIELDS = ("case", "image", "prompts", "prompt_mask", "labels", "series", "output")
#: the suffix of the label maps a batch run writes when the manifest names no output
DEFAULT_SUFFIX = ".nii.gz"
#: most cases one batch run takes
MAX_CASES = 1_000_000


class BatchError(PromptsegError):
    """A batch input (folder or manifest) cannot be turned into cases."""


@dataclass(frozen=True)
class BatchCase:
    """One image of a batch run and what to do with it.

    Attributes:
        case_id: unique name (a file name: letters, digits, ``. _ + = -``).
        image: image file or DICOM folder.
        output: the label map to write.
        prompt_file: this case's prompt file / Slicer markups (else the run's prompt).
        label_map: this case's prompt label map (else the run's prompt).
        labels: with ``label_map``: only these values.
        series: Series Instance UID for a DICOM folder holding several.
    """

    case_id: str
    image: Path
    output: Path
    prompt_file: Optional[Path] = None
    label_map: Optional[Path] = None
    labels: Optional[tuple[int, ...]] = None
    series: Optional[str] = None

    def inputs(self) -> list[Path]:
        return [p for p in (self.image, self.prompt_file, self.label_map) if p is not None]


def case_name(path: Path) -> str:
    """``case007.nii.gz`` -> ``case007``; a folder keeps its name."""
    suffix = format_suffix(path) if not path.is_dir() else ""
    return path.name[: len(path.name) - len(suffix)] if suffix else path.name


def _is_image(path: Path) -> bool:
    if path.name.startswith("."):
        return False
    return path.is_dir() or format_suffix(path) in SUPPORTED_IMAGE_SUFFIXES


def _find(folder: Path, case: str, suffixes) -> Optional[Path]:
    for suffix in suffixes:
        candidate = folder / f"{case}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def cases_from_folder(folder, out_dir, prompts_dir=None, masks_dir=None, suffix: str = DEFAULT_SUFFIX) -> list[BatchCase]:
    """The cases of a folder of images (see the module docstring).

    Args:
        folder: the images.
        out_dir: where the label maps go (``<case><suffix>``).
        prompts_dir: a folder of per-case prompt files (``<case>.json`` / ``<case>.mrk.json``).
        masks_dir: a folder of per-case prompt label maps (``<case>.nii.gz``, any image suffix).

    Raises:
        BatchError: no image, two images with one name, a case without its prompt file or mask.
    """
    folder, out_dir = Path(folder), Path(out_dir)
    entries: dict[str, Path] = {}
    for count, path in enumerate(sorted(folder.iterdir())):
        if count >= MAX_CASES:
            raise BatchError(f"{folder}: more than {MAX_CASES} entries")
        if not _is_image(path):
            continue
        name = case_name(path)
        if name in entries:
            raise BatchError(f"{folder}: {entries[name].name} and {path.name} are both case {name!r}; keep one")
        entries[name] = path
    if not entries:
        raise BatchError(f"{folder}: no image files or DICOM series folders in it")
    cases = []
    for name, image in entries.items():
        check_case_id(name, str(image))
        prompt_file = label_map = None
        if prompts_dir is not None:
            prompt_file = _find(Path(prompts_dir), name, (".mrk.json", ".json"))
            if prompt_file is None:
                raise BatchError(f"case {name}: no prompt file {name}.json or {name}.mrk.json in {prompts_dir}")
        if masks_dir is not None:
            label_map = _find(Path(masks_dir), name, sorted(SUPPORTED_IMAGE_SUFFIXES, key=len, reverse=True))
            if label_map is None:
                raise BatchError(f"case {name}: no prompt label map {name}.<nii.gz|nrrd|...> in {masks_dir}")
        cases.append(BatchCase(name, image, out_dir / f"{name}{suffix}", prompt_file, label_map))
    return cases


def _resolve(base: Path, value: str) -> Path:
    path = Path(str(value).strip()).expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else base / path))


def _case(entry: dict, base: Path, out_dir: Path, where: str) -> BatchCase:
    unknown = sorted(set(entry) - set(MANIFEST_FIELDS))
    if unknown:
        raise BatchError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(MANIFEST_FIELDS)}")
    if not entry.get("image"):
        raise BatchError(f"{where}: 'image' is missing")
    image = _resolve(base, entry["image"])
    case_id = check_case_id(str(entry.get("case") or "").strip() or case_name(image), where)
    labels = None
    if entry.get("labels"):
        labels = parse_label_list(str(entry["labels"]).replace(";", ",").replace(" ", ","))
    prompt_file = _resolve(base, entry["prompts"]) if entry.get("prompts") else None
    label_map = _resolve(base, entry["prompt_mask"]) if entry.get("prompt_mask") else None
    if prompt_file and label_map:
        raise BatchError(f"{where}: give prompts or prompt_mask, not both")
    if labels and not label_map:
        raise BatchError(f"{where}: labels choose values of prompt_mask; give prompt_mask too")
    output = _resolve(out_dir, entry["output"]) if entry.get("output") else out_dir / f"{case_id}{DEFAULT_SUFFIX}"
    return BatchCase(case_id, image, output, prompt_file, label_map, labels, str(entry.get("series") or "") or None)


def cases_from_manifest(path, out_dir) -> list[BatchCase]:
    """The cases of a CSV or JSON manifest (see the module docstring).

    Raises:
        BatchError: unreadable manifest, unknown fields, missing images, repeated case ids.
    """
    from ..io.jsonfile import read_json

    path, out_dir = Path(path), Path(out_dir)
    base = path.parent
    if path.suffix.lower() == ".csv":
        try:
            with open(path, newline="", encoding="utf-8-sig") as handle:
                reader = csv.DictReader(handle)
                columns = [c.strip() for c in (reader.fieldnames or [])]
                rows = []
                for number, row in enumerate(reader, start=2):
                    if number > MAX_CASES:
                        raise BatchError(f"{path}: more than {MAX_CASES} cases")
                    rows.append((number, row))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise BatchError(f"{path}: cannot read the manifest ({exc})") from None
        if "image" not in columns:
            raise BatchError(f"{path}: the manifest needs an image column (optional: "
                             f"{', '.join(f for f in MANIFEST_FIELDS if f != 'image')}); found {', '.join(columns) or 'no header'}")
        entries = []
        for number, row in rows:
            if None in row:
                raise BatchError(f"{path}: line {number}: more values than columns")
            entry = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            if any(entry.values()):
                entries.append((f"{path}: line {number}", {k: v for k, v in entry.items() if v != ""}))
    else:
        doc = read_json(path, "manifest", BatchError)
        items = doc.get("cases") if isinstance(doc, dict) else doc
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise BatchError(f"{path}: expected a list of cases or {{\"cases\": [...]}}, each an object with an image")
        entries = [(f"{path}: cases.{i}", item) for i, item in enumerate(items)]
    cases = [_case(entry, base, out_dir, where) for where, entry in entries]
    if not cases:
        raise BatchError(f"{path}: no case in the manifest")
    seen: dict[str, str] = {}
    outputs: dict[Path, str] = {}
    for case in cases:
        if case.case_id in seen:
            raise BatchError(f"{path}: case {case.case_id!r} appears twice; give each row its own case id")
        seen[case.case_id] = case.case_id
        key = case.output.resolve()
        if key in outputs:
            raise BatchError(f"{path}: cases {outputs[key]!r} and {case.case_id!r} write the same output {case.output}")
        outputs[key] = case.case_id
    return cases


def load_cases(source, out_dir, prompts_dir=None, masks_dir=None) -> list[BatchCase]:
    """Cases from a folder (:func:`cases_from_folder`) or a manifest file (:func:`cases_from_manifest`).

    Raises:
        BatchError: ``source`` is neither, or as those functions.
    """
    source = Path(source)
    if source.is_dir():
        return cases_from_folder(source, out_dir, prompts_dir, masks_dir)
    if source.is_file() and source.suffix.lower() in (".csv", ".json"):
        if prompts_dir is not None or masks_dir is not None:
            raise BatchError("a manifest names each case's prompts (columns prompts / prompt_mask); "
                             "prompt folders go with an image folder")
        return cases_from_manifest(source, out_dir)
    if not source.exists():
        raise BatchError(f"batch input not found: {source}")
    raise BatchError(f"{source}: a batch input is a folder of images or a .csv / .json manifest")
