"""Case-level splits (promptseg.datasets.splits): seeded and complete; one reader for promptseg's
own split files (plain and k-fold), nnU-Net's splits_final.json and other tools' forms."""

from __future__ import annotations

import json

import pytest

from promptseg.datasets.splits import read_folds, read_split, split_cases, write_split
from promptseg.errors import PromptsegError


def case_sets(sets: dict) -> dict:
    return {case: name for name, cases in sets.items() for case in cases}


def test_split_is_by_case_seeded_and_complete():
    cases = [f"c{i:02d}" for i in range(20)]
    a = split_cases(cases, seed=3)
    assert split_cases(cases, seed=3) == a and split_cases(cases, seed=4) != a
    sets = [set(a[k]) for k in ("train", "val", "test")]
    assert [len(s) for s in sets] == [16, 2, 2]
    assert set.union(*sets) == set(cases) and sum(len(s) for s in sets) == len(cases)
    folds = split_cases(cases, (0.8, 0.0, 0.2), seed=1, k=4)
    vals = [set(f["val"]) for f in folds["folds"]]
    assert len(folds["test"]) == 4 and set.union(*vals) == set(cases) - set(folds["test"])
    assert all(not (set(f["train"]) & set(f["val"])) for f in folds["folds"])
    assert split_cases(["a", "b", "c"]) == {"seed": 0, "unit": "case", "test": ["c"], "val": ["a"], "train": ["b"]}
    with pytest.raises(PromptsegError, match="too few"):
        split_cases(["a", "b", "c"], (0.1, 0.3, 0.6))
    with pytest.raises(PromptsegError, match="summing to 1"):
        split_cases(cases, (0.5, 0.2, 0.2))


def test_read_split_refuses_a_case_in_two_sets(tmp_path):
    path = write_split({"train": ["a", "b"], "val": ["b"], "test": []}, tmp_path / "s.json")
    with pytest.raises(PromptsegError, match="case 'b' is in both train and val"):
        read_split(path)
    folds = write_split(split_cases([str(i) for i in range(9)], (0.8, 0, 0.2), k=3), tmp_path / "f.json")
    with pytest.raises(PromptsegError, match="has 3 folds: choose one"):
        read_split(folds)
    assert set(read_split(folds, fold=1)) == {"train", "val", "test"}
    with pytest.raises(PromptsegError, match="fold 3 does not exist"):
        read_split(folds, fold=3)
    plain = write_split(split_cases(["a", "b", "c"]), tmp_path / "plain.json")
    with pytest.raises(PromptsegError, match="is not a k-fold split"):
        read_split(plain, fold=0)


def test_other_tools_split_forms_and_errors(tmp_path):
    p = tmp_path / "s.json"
    p.write_text(json.dumps({"training": ["a.nii.gz", "b"], "validation": ["c"], "test": ["d"]}))
    assert case_sets(read_split(p)) == {"a": "train", "b": "train", "c": "val", "d": "test"}
    p.write_text(json.dumps([{"train": ["a"], "val": ["b"]}, {"train": ["b"], "val": ["a"]}]))   # nnU-Net folds
    assert case_sets(read_folds(p)[0]) == {"a": "train", "b": "val"}
    assert read_split(p, fold=1) == {"train": ["b"], "val": ["a"], "test": []}
    with pytest.raises(PromptsegError, match="has 2 folds: choose one"):
        read_split(p)
    p.write_text(json.dumps({"a": "train", "b": "Test"}))
    assert case_sets(read_split(p)) == {"a": "train", "b": "test"}
    p.write_text(json.dumps({"train": ["a"], "test": ["a"]}))
    with pytest.raises(PromptsegError, match="both"):
        read_split(p)
    p.write_text(json.dumps({"train": "a", "val": ["b"]}))
    with pytest.raises(PromptsegError, match="'train' must be a list of case ids"):
        read_split(p)
    p.write_text("{not json")
    with pytest.raises(PromptsegError, match="not valid JSON"):
        read_split(p)
    with pytest.raises(PromptsegError, match="does not exist"):
        read_split(tmp_path / "nope.json")


def test_promptseg_split_files_read_back_as_written(tmp_path):
    path = write_split(split_cases(["a", "b", "c", "d", "e"], seed=1), tmp_path / "split.json")
    sets = json.loads(path.read_text(encoding="utf-8"))
    assert read_split(path) == {name: sets[name] for name in ("train", "val", "test")}
    folds = write_split(split_cases([str(i) for i in range(6)], (0.8, 0.0, 0.2), k=2), tmp_path / "folds.json")
    written = json.loads(folds.read_text(encoding="utf-8"))
    assert read_folds(folds) == [{"train": f["train"], "val": f["val"], "test": written["test"]}
                                 for f in written["folds"]]
    assert set(case_sets(read_folds(folds)[0])) == {str(i) for i in range(6)}
