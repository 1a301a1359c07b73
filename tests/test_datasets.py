"""Dataset layouts: images/ + labels/ folders (incl. nnU-Net channels), CSV / JSON manifests, MedSAM NPZ; their errors."""

import json
from pathlib import Path

import numpy as np
import pytest

from promptseg.datasets.layouts import DatasetError, load_dataset, parse_label_names

from datafiles import REPO, image, label

EXAMPLE = REPO / "examples" / "datasets" / "radiomics.csv"


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")  # the loader reads names only
    return path


def folders(tmp_path, images, labels, pair=("images", "labels")):
    for name in images:
        touch(tmp_path / pair[0] / name)
    for name in labels:
        touch(tmp_path / pair[1] / name)
    return tmp_path


def test_the_example_manifest_lists_the_three_bundled_real_cases():
    ds = load_dataset(EXAMPLE)
    assert ds.name == "radiomics" and ds.layout == "manifest-csv"
    assert [c.case_id for c in ds.cases] == ["lung1", "brain2", "breast1"]
    for c in ds.cases:
        assert c.image == image(c.case_id).resolve() and c.label == label(c.case_id).resolve()
        assert c.phases == []
    assert ds.label_names == {1: "lesion"}


def test_images_and_labels_folders_pair_by_name_across_extensions(tmp_path):
    root = folders(tmp_path, ["b.nrrd", "a.nii.gz", ".hidden.nii.gz", "notes.txt", "c.mhd", "c.raw"],
                   ["a.nii.gz", "b.nii.gz", "c.nii.gz"])
    ds = load_dataset(root)
    assert ds.layout == "folders" and ds.name == tmp_path.name
    assert [(c.case_id, c.image.name, c.label.name) for c in ds.cases] == [
        ("a", "a.nii.gz", "a.nii.gz"), ("b", "b.nrrd", "b.nii.gz"), ("c", "c.mhd", "c.nii.gz")]


def test_nnunet_channels_become_phases_and_dataset_json_names_labels(tmp_path):
    root = folders(tmp_path, ["liver_001_0000.nii.gz", "liver_001_0001.nii.gz", "liver_002_0000.nii.gz"],
                   ["liver_001.nii.gz", "liver_002.nii.gz"], pair=("imagesTr", "labelsTr"))
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1, "tumour": 2}}))
    ds = load_dataset(root)
    one, two = ds.cases
    assert one.case_id == "liver_001" and one.image.name == "liver_001_0000.nii.gz"
    assert [p.name for p in one.phases] == ["liver_001_0001.nii.gz"]
    assert [p.name for p in one.images] == ["liver_001_0000.nii.gz", "liver_001_0001.nii.gz"]
    assert two.phases == []
    assert ds.label_names == {1: "liver", 2: "tumour"}
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "organ"}}))  # nnU-Net v1
    assert load_dataset(root).label_names == {1: "organ"}


def test_dicom_series_folders_inside_images(tmp_path):
    (tmp_path / "images" / "pat1").mkdir(parents=True)
    touch(tmp_path / "labels" / "pat1.nii.gz")
    (case,) = load_dataset(tmp_path).cases
    assert case.case_id == "pat1" and case.image.is_dir()


@pytest.mark.parametrize("images, labels, message", [
    (["a.nii.gz", "b.nii.gz"], ["a.nii.gz"], "no label in .* for 1 image\\(s\\): b"),
    (["a.nii.gz"], ["a.nii.gz", "z.nii.gz"], "no image in .* for 1 label\\(s\\): z"),
    (["a.nii.gz", "a.nrrd"], ["a.nii.gz"], "a.nii.gz and a.nrrd have the same name 'a'"),
    (["x_0001.nii.gz"], ["x.nii.gz"], "case 'x' has channels \\[1\\] but no _0000 image"),
    (["x y.nii.gz"], ["x y.nii.gz"], "cannot be used as a file name"),
])
def test_folder_errors(tmp_path, images, labels, message):
    with pytest.raises(DatasetError, match=message):
        load_dataset(folders(tmp_path, images, labels))


def test_layout_errors(tmp_path):
    with pytest.raises(DatasetError, match="no such dataset"):
        load_dataset(tmp_path / "missing")
    with pytest.raises(DatasetError, match="unknown dataset layout"):
        load_dataset(tmp_path)
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match="has images/ but no labels/"):
        load_dataset(tmp_path)
    (tmp_path / "labels").mkdir()
    with pytest.raises(DatasetError, match="holds no cases"):
        load_dataset(tmp_path)
    with pytest.raises(DatasetError, match="must be a .csv or .json manifest"):
        load_dataset(touch(tmp_path / "list.txt"))


def test_csv_manifest_resolves_paths_relative_to_itself(tmp_path):
    touch(tmp_path / "data" / "ct1.nii.gz")
    touch(tmp_path / "data" / "ct1_seg.nii.gz")
    touch(tmp_path / "data" / "ct1_art.nii.gz")
    touch(tmp_path / "data" / "ct2.nii.gz")
    touch(tmp_path / "data" / "ct2_seg.nii.gz")
    manifest = tmp_path / "lists" / "study.csv"
    manifest.parent.mkdir()
    manifest.write_text(
        "image,label,case,label_names,phases\n"
        "../data/ct1.nii.gz,../data/ct1_seg.nii.gz,p1,1:liver;2:tumour,../data/ct1_art.nii.gz\n"
        "\n"
        f"{tmp_path / 'data' / 'ct2.nii.gz'},../data/ct2_seg.nii.gz,,2:tumour,\n"
    )
    ds = load_dataset(manifest)
    assert ds.name == "study"
    p1, ct2 = ds.cases
    assert p1.case_id == "p1" and p1.image == tmp_path / "data" / "ct1.nii.gz"
    assert p1.phases == [tmp_path / "data" / "ct1_art.nii.gz"]
    assert ct2.case_id == "ct2" and ct2.label_names == {2: "tumour"}
    assert ds.label_names == {1: "liver", 2: "tumour"}


@pytest.mark.parametrize("text, message", [
    ("image,mask\na.nii.gz,b.nii.gz\n", "needs the columns image and label"),
    ("image,label,extra\na.nii.gz,a.nii.gz,1\n", "unknown field\\(s\\) extra"),
    ("image,label\nmissing.nii.gz,a.nii.gz\n", "line 2: image not found"),
    ("image,label\na.nii.gz,\n", "line 2: 'label' is missing"),
    ("image,label,case\na.nii.gz,a.nii.gz,x\na.nii.gz,a.nii.gz,x\n", "case id 'x' is used twice"),
    ("image,label,label_names\na.nii.gz,a.nii.gz,liver\n", "expected 'VALUE:NAME;VALUE:NAME'"),
    ("image,label,label_names,case\na.nii.gz,a.nii.gz,1:liver,a\na.nii.gz,a.nii.gz,1:spleen,b\n",
     "label 1 is called 'liver' in case a but 'spleen' in case b"),
    ("image,label,phases\na.nii.gz,a.nii.gz,gone.nii.gz\n", "phase image not found"),
])
def test_csv_manifest_errors(tmp_path, text, message):
    touch(tmp_path / "a.nii.gz")
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(DatasetError, match=message):
        load_dataset(tmp_path / "m.csv")


def test_json_manifest_list_and_object_forms(tmp_path):
    touch(tmp_path / "i.nii.gz")
    touch(tmp_path / "l.nii.gz")
    touch(tmp_path / "v.nii.gz")
    (tmp_path / "a.json").write_text(json.dumps([{"image": "i.nii.gz", "label": "l.nii.gz"}]))
    assert [c.case_id for c in load_dataset(tmp_path / "a.json").cases] == ["i"]
    (tmp_path / "b.json").write_text(json.dumps({
        "name": "phases-study", "label_names": {"1": "tumour"},
        "cases": [{"case": "c1", "image": "i.nii.gz", "label": "l.nii.gz", "phases": ["v.nii.gz"]}]}))
    ds = load_dataset(tmp_path / "b.json")
    assert ds.name == "phases-study" and ds.layout == "manifest-json"
    assert ds.cases[0].phases == [tmp_path / "v.nii.gz"] and ds.label_names == {1: "tumour"}
    assert ds.cases[0].as_dict() == {"case": "c1", "image": str(tmp_path / "i.nii.gz"),
                                     "label": str(tmp_path / "l.nii.gz"), "phases": [str(tmp_path / "v.nii.gz")]}
    (tmp_path / "c.json").write_text(json.dumps({"cases": [{"image": "i.nii.gz", "label": "l.nii.gz", "mask": 1}]}))
    with pytest.raises(DatasetError, match="cases.0: unknown field\\(s\\) mask"):
        load_dataset(tmp_path / "c.json")
    (tmp_path / "d.json").write_text("{oops")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_dataset(tmp_path / "d.json")


def test_medsam_npz_folder(tmp_path):
    for name in ("CT_a", "CT_b"):
        np.savez(tmp_path / f"{name}.npz", imgs=np.zeros((2, 4, 4), np.uint8), gts=np.zeros((2, 4, 4), np.uint8))
    ds = load_dataset(tmp_path)
    assert ds.layout == "npz" and [c.case_id for c in ds.cases] == ["CT_a", "CT_b"]
    assert ds.cases[0].image == ds.cases[0].label == tmp_path / "CT_a.npz"
    np.savez(tmp_path / "CT_c.npz", imgs=np.zeros((4, 4), np.uint8))
    with pytest.raises(DatasetError, match="CT_c.npz: a dataset NPZ needs 'imgs' .* missing gts"):
        load_dataset(tmp_path)


def test_medsam_imgs_and_gts_folders(tmp_path):
    root = folders(tmp_path, ["CT_a.npz"], ["CT_a.npz"], pair=("imgs", "gts"))
    (case,) = load_dataset(root).cases
    assert case.image.parent.name == "imgs" and case.label.parent.name == "gts"


def test_parse_label_names():
    assert parse_label_names("1:liver; 2:tumour", "x") == {1: "liver", 2: "tumour"}
    assert parse_label_names({"3": "kidney"}, "x") == {3: "kidney"}
    for bad, message in [("0:bg", "start at 1"), ("a:liver", "not an integer"), ("1:a;1:b", "named twice")]:
        with pytest.raises(DatasetError, match=message):
            parse_label_names(bad, "x")
