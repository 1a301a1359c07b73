"""Train / validation / test sets by case (never by slice): made by ``promptseg split``, read by training and reports.

promptseg's split file (JSON, :func:`split_cases` + :func:`write_split`)::

    {"seed": 0, "unit": "case", "train": [...], "val": [...], "test": [...]}

or, with ``k`` folds (the test set held out first, the rest cut into k folds)::

    {"seed": 0, "unit": "case", "k": 5, "test": [...],
     "folds": [{"train": [...], "val": [...]}, ...]}

Rounding: with fractions > 0 and at least 3 cases, validation and test get at
least one case each; training keeps the rest.

:func:`read_split` reads these and the split files of other tools:

* ``{"train": [...], "val": [...], "test": [...]}`` with any set names
  (``training`` / ``validation`` / ``testing``, ``tr`` / ``valid`` / ``ts`` are
  read as ``train`` / ``val`` / ``test``; names are lower-cased);
* a list of such objects, one per fold, as nnU-Net's ``splits_final.json``;
* ``{"case_001": "train", "case_002": "test", ...}``.

Case ids may carry an image extension (``case_001.nii.gz`` is case ``case_001``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import PromptsegError
from ..io.jsonfile import read_json, write_json


def split_cases(cases: Sequence[str], fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0,
                k: Optional[int] = None) -> dict:
    """Split case ids. ``fractions`` = (train, val, test), summing to 1.

    With ``k``, ``test`` is held out with its fraction and the remaining cases are
    dealt into ``k`` folds (``val`` = one fold, ``train`` = the others).
    """
    cases = list(dict.fromkeys(str(c) for c in cases))
    if len(cases) < 2:
        raise PromptsegError(f"need at least 2 cases to split, got {len(cases)}")
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise PromptsegError(f"fractions must be 3 non-negative numbers summing to 1, got {tuple(fractions)}")
    order = [cases[i] for i in np.random.default_rng(seed).permutation(len(cases))]
    n = len(order)
    n_test = _count(fractions[2], n)
    if k is not None:
        if k < 2 or k > n - n_test:
            raise PromptsegError(f"k must be between 2 and the {n - n_test} cases left after the test set, got {k}")
        test, rest = order[:n_test], order[n_test:]
        folds = [rest[i::k] for i in range(k)]
        return {
            "seed": seed, "unit": "case", "k": k, "test": sorted(test),
            "folds": [{"train": sorted(c for j, f in enumerate(folds) if j != i for c in f), "val": sorted(folds[i])}
                      for i in range(k)],
        }
    n_val = _count(fractions[1], n)
    if n_test + n_val >= n:
        raise PromptsegError(f"{n} cases are too few for these fractions: no training case would be left")
    return {
        "seed": seed, "unit": "case",
        "test": sorted(order[:n_test]),
        "val": sorted(order[n_test:n_test + n_val]),
        "train": sorted(order[n_test + n_val:]),
    }


def _count(fraction: float, n: int) -> int:
    if fraction <= 0:
        return 0
    return max(1, int(round(fraction * n))) if n >= 3 else 0


def write_split(split: dict, path: str | Path) -> Path:
    """Write a split (as :func:`split_cases` returns it) as JSON, atomically; returns the path."""
    return write_json(path, split)


#: other tools' set names -> promptseg's
SET_ALIASES = {"training": "train", "tr": "train", "validation": "val", "valid": "val",
               "testing": "test", "ts": "test"}
_CASE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".npz", ".png", ".dcm")
_META_KEYS = ("seed", "unit", "k")


def case_key(case) -> str:
    """A case id as split files and datasets compare it: without an image extension (``"a.nii.gz"`` -> ``"a"``)."""
    name = str(case).strip()
    for suffix in _CASE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _set_name(name) -> str:
    name = str(name).strip().lower()
    return SET_ALIASES.get(name, name)


def _sets(doc, path: Path) -> dict[str, list[str]]:
    """One split (``{set: [case, ...]}`` or ``{case: set}``) as ``{set: [case ids]}``, train/val/test first."""
    if not isinstance(doc, dict) or not doc:
        raise PromptsegError(f"{path}: expected {{\"train\": [...], \"val\": [...], \"test\": [...]}}")
    if all(isinstance(v, str) for v in doc.values()):
        pairs = [(_set_name(name), case) for case, name in doc.items()]
    else:
        pairs = []
        for name, cases in doc.items():
            if not isinstance(cases, list) or not all(isinstance(c, (str, int)) and not isinstance(c, bool)
                                                      for c in cases):
                raise PromptsegError(f"{path}: {name!r} must be a list of case ids")
            pairs += [(_set_name(name), case) for case in cases]
    sets: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    seen: dict[str, str] = {}
    for name, case in pairs:
        key = case_key(case)
        if key in seen:
            if seen[key] != name:
                raise PromptsegError(f"{path}: case {key!r} is in both {seen[key]} and {name}")
            continue
        seen[key] = name
        sets.setdefault(name, []).append(key)
    return sets


def read_folds(path: str | Path) -> list[dict[str, list[str]]]:
    """Every fold of a split file (see the module docstring), each as ``{set name: [case ids]}``.

    A file without folds gives one entry; a k-fold file gives k (each with the shared
    ``test`` set); an nnU-Net ``splits_final.json`` one per fold. Every entry has the keys
    ``train``, ``val`` and ``test`` (possibly empty), then any other set names.

    Raises:
        PromptsegError: the file does not exist, is not valid JSON, has another shape,
            or lists a case in two sets.
    """
    path = Path(path)
    if not path.is_file():
        raise PromptsegError(f"split file {path} does not exist")
    doc = read_json(path, "split file")
    if isinstance(doc, dict) and doc.get("unit") == "case":  # promptseg's own: drop its settings
        doc = {key: value for key, value in doc.items() if key not in _META_KEYS}
    if isinstance(doc, dict) and "folds" in doc:
        folds, shared = doc["folds"], {key: value for key, value in doc.items() if key != "folds"}
        if not isinstance(folds, list) or not folds or not all(isinstance(f, dict) for f in folds):
            raise PromptsegError(f"{path}: 'folds' must be a list of {{\"train\": [...], \"val\": [...]}}")
        return [_sets({**shared, **fold}, path) for fold in folds]
    if isinstance(doc, list):
        if not doc or not all(isinstance(f, dict) for f in doc):
            raise PromptsegError(f"{path}: a list must hold objects {{\"train\": [...], \"val\": [...]}}")
        return [_sets(fold, path) for fold in doc]
    return [_sets(doc, path)]


def read_split(path: str | Path, fold: Optional[int] = None) -> dict[str, list[str]]:
    """The sets of one split: ``{"train": [...], "val": [...], "test": [...]}`` (and any other set names).

    Args:
        path: a split file (see the module docstring).
        fold: which fold of a file with several (k-fold, nnU-Net); None for a file without folds.

    Raises:
        PromptsegError: as :func:`read_folds`; a file with several folds and no ``fold``,
            a ``fold`` it does not have, or a ``fold`` for a file without folds.
    """
    folds = read_folds(path)
    if fold is None:
        if len(folds) > 1:
            raise PromptsegError(f"{path} has {len(folds)} folds: choose one (data.fold / --fold)")
        return folds[0]
    if len(folds) == 1:
        raise PromptsegError(f"{path} is not a k-fold split; remove data.fold")
    if not 0 <= fold < len(folds):
        raise PromptsegError(f"{path}: fold {fold} does not exist (0..{len(folds) - 1})")
    return folds[fold]
