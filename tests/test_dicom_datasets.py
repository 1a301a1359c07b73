"""DICOM datasets: a folder per case (CT series + RTSTRUCT) for benchmark, prepare and evaluate."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from fakes import ThresholdSegmenter
from promptseg.evaluation import benchmark as B
from promptseg.datasets.layouts import DatasetError, load_dataset
from promptseg.evaluation.evaluate import evaluate_paths
from promptseg.io import load_volume, save_mask
from promptseg.io.dicom import write_rtstruct, write_series
from promptseg.training.prepare import PrepareSettings, prepare, read_manifest
from promptseg.volume import Volume


def synthetic_case(i):
    """(8, 40, 50) CT in HU with an organ (label 1) and a lesion (label 2) the threshold fake segments exactly."""
    labels = np.zeros((8, 40, 50), np.uint8)
    labels[2:6, 10:20 + i, 10:25] = 1
    labels[3:5, 25:32, 30:40] = 2
    image = np.full(labels.shape, 20, np.int16)
    image[labels > 0] = 200
    return Volume(image, spacing=(0.8, 0.9, 2.0), origin=(-20.0, -18.0, 30.0 * i)), labels


@pytest.fixture(scope="module")
def dicom_dataset(tmp_path_factory):
    """Two case folders; the second RTSTRUCT lists its ROIs in the other order and other letter case."""
    root = tmp_path_factory.mktemp("dicom-ds")
    truths = {}
    for i in range(2):
        volume, labels = synthetic_case(i)
        case = root / f"patient{i}"
        write_series(volume, case / "CT", modality="CT", body_part="CHEST")
        series = load_volume(case / "CT")
        if i == 0:
            write_rtstruct(series.with_array(labels), series, case / "RS.dcm", names={1: "Organ", 2: "Lesion"})
        else:
            swapped = np.select([labels == 1, labels == 2], [2, 1], 0).astype(np.uint8)
            write_rtstruct(series.with_array(swapped), series, case / "CT" / "rs.dcm", names={1: "LESION", 2: "organ"})
        truths[f"patient{i}"] = (series, labels)
    return root, truths


def test_case_folders_are_a_dataset_with_one_label_per_roi_name(dicom_dataset):
    root, truths = dicom_dataset
    dataset = load_dataset(root)
    assert dataset.layout == "dicom"
    assert [(c.case_id, c.image.name, c.label.name) for c in dataset.cases] == [
        ("patient0", "CT", "RS.dcm"), ("patient1", "CT", "rs.dcm")]
    assert dataset.label_names == {1: "Organ", 2: "Lesion"}  # first appearance; names matched case-insensitively
    for case in dataset.cases:
        series, labels = truths[case.case_id]
        np.testing.assert_array_equal(case.reference_labels(load_volume(case.image)), labels)


def test_dataset_json_chooses_the_rois(dicom_dataset, tmp_path):
    root, truths = dicom_dataset
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "lesion": 7}}))
    try:
        dataset = load_dataset(root)
        assert dataset.label_names == {7: "lesion"}
        case = dataset.cases[1]
        series, labels = truths[case.case_id]
        np.testing.assert_array_equal(case.reference_labels(load_volume(case.image)), np.where(labels == 2, 7, 0))
    finally:
        (root / "dataset.json").unlink()


def test_a_case_folder_without_rtstruct_is_named(tmp_path):
    volume, _ = synthetic_case(0)
    write_series(volume, tmp_path / "ds" / "p0" / "CT", modality="CT", body_part="CHEST")
    with pytest.raises(DatasetError, match=r"p0: a DICOM case folder needs exactly one RTSTRUCT; found none"):
        load_dataset(tmp_path / "ds")


def test_benchmark_prepare_and_evaluate_on_dicom_cases(dicom_dataset, tmp_path):
    root, truths = dicom_dataset
    out = B.run_benchmark(root, ThresholdSegmenter(), tmp_path / "run", progress=False)
    with open(out / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted((r["case"], r["label"], r["label_name"]) for r in rows) == [
        ("patient0", "1", "Organ"), ("patient0", "2", "Lesion"), ("patient1", "1", "Organ"), ("patient1", "2", "Lesion")]
    assert all(float(r["dice"]) == 1.0 for r in rows)
    # the predictions are label maps on the series grids: evaluate them against the DICOM cases
    rows = evaluate_paths(out / "predictions", root)
    assert sorted((r["case"], r["label"], r["dice"]) for r in rows) == [
        ("patient0", 1, 1.0), ("patient0", 2, 1.0), ("patient1", 1, 1.0), ("patient1", 2, 1.0)]
    series, labels = truths["patient1"]
    wrong = labels.copy()
    wrong[labels == 2] = 0
    save_mask(wrong, tmp_path / "preds" / "patient1.nii.gz", reference=series)
    rows = evaluate_paths(tmp_path / "preds", root, allow_missing=True)
    assert [(r["case"], r["label"], r["dice"]) for r in rows if r["case"] == "patient1"] == [
        ("patient1", 1, 1.0), ("patient1", 2, 0.0)]
    prepared = prepare(root, tmp_path / "prep", settings=PrepareSettings(min_object_voxels=1, min_object_pixels=1),
                       progress=False)
    info, samples = read_manifest(prepared)
    assert info["counts"]["cases"] == 2
    assert sorted({(r["case"], r["label"]) for r in samples}) == [
        ("patient0", 1), ("patient0", 2), ("patient1", 1), ("patient1", 2)]
