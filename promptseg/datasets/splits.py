"""``promptseg split``: train / validation / test sets by case (never by slice).

Split file (JSON)::

    {"seed": 0, "unit": "case", "train": [...], "val": [...], "test": [...]}

or, with ``k`` folds (the test set held out first, the rest cut into k folds)::

    {"seed": 0, "unit": "case", "k": 5, "test": [...],
     "folds": [{"train": [...], "val": [...]}, ...]}

Rounding: with fractions > 0 and at least 3 cases, validation and test get at
least one case each; training keeps the rest.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import PromptsegError
from ..io.jsonfile import write_json


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


def read_split(path: str | Path, fold: Optional[int] = None) -> dict[str, list[str]]:
    """``{"train": [...], "val": [...], "test": [...]}`` from a split file (``fold`` for k-fold files)."""
    from ..io.jsonfile import read_json

    path = Path(path)
    doc = read_json(path, "split file")
    if "folds" in doc:
        if fold is None:
            raise PromptsegError(f"{path} has {len(doc['folds'])} folds: choose one (data.fold / --fold)")
        if not 0 <= fold < len(doc["folds"]):
            raise PromptsegError(f"{path}: fold {fold} does not exist (0..{len(doc['folds']) - 1})")
        sets = {"train": doc["folds"][fold]["train"], "val": doc["folds"][fold]["val"], "test": doc.get("test", [])}
    else:
        if fold is not None:
            raise PromptsegError(f"{path} is not a k-fold split; remove data.fold")
        sets = {key: list(doc.get(key, [])) for key in ("train", "val", "test")}
    seen: dict[str, str] = {}
    for name, cases in sets.items():
        for case in cases:
            if case in seen:
                raise PromptsegError(f"{path}: case {case!r} is in both {seen[case]} and {name}")
            seen[case] = name
    return sets
