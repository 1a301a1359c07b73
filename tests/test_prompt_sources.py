"""Prompts from what users already have: 3D Slicer markups, physical-space prompt files, label maps."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

import promptseg
from promptseg.cli import main
from promptseg.errors import PromptError
from promptseg.prompts import make_object
from promptseg.prompts.file import load_prompts
from promptseg.prompts.from_labels import load_label_prompts, prompts_from_label_array
from promptseg.prompts.slicer import parse_markups, write_markups_roi
from promptseg.prompts.source import PromptSource
from promptseg.volume import Volume

from fakes import ThresholdSegmenter


def rotation(z_degrees: float, x_degrees: float) -> np.ndarray:
    a, b = np.radians(z_degrees), np.radians(x_degrees)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


@pytest.fixture
def oblique():
    """A 64 x 48 x 12 volume tilted 30 degrees about z and 15 about x, anisotropic voxels, off-centre origin."""
    return Volume(np.zeros((12, 48, 64), np.int16), spacing=(0.8, 0.9, 2.5), origin=(-41.5, 17.25, -88.0),
                  direction=rotation(30, 15))


def ras(volume, i, j, k):
    return (volume.index_to_physical(i, j, k) * [-1, -1, 1]).tolist()


@pytest.mark.parametrize("space", ["RAS", "LPS"])
def test_a_slicer_roi_on_an_oblique_volume_gives_the_ijk_box(tmp_path, oblique, space):
    box3d = (10, 12, 3, 30, 28, 7)
    path = write_markups_roi(tmp_path / "roi.mrk.json", oblique, box3d, name="GTV", space=space)
    objects, notes = load_prompts(path, oblique)
    expected = make_object(box3d=box3d, label=1, name="GTV")
    assert notes == [] and len(objects) == 1
    assert objects[0].slices == expected.slices and objects[0].z_range == expected.z_range == (3, 7)
    assert objects[0].name == "GTV" and objects[0].label == 1


def test_an_roi_reaching_outside_is_clipped_with_a_note_and_one_outside_is_refused(tmp_path, oblique):
    doc = json.loads(write_markups_roi(tmp_path / "r.mrk.json", oblique, (50, 40, 9, 70, 60, 14)).read_text(encoding="utf-8"))
    objects, notes = parse_markups(doc, oblique)
    assert objects[0].slices[10].box == (50.0, 40.0, 63.0, 47.0) and objects[0].z_range == (9, 11)
    assert notes == ["markups: markups.0 (ROI 'ROI'): the ROI reaches outside the image; clipped to voxels "
                     "x 50..63, y 40..47, z 9..11"]
    doc = json.loads(write_markups_roi(tmp_path / "r.mrk.json", oblique, (80, 60, 20, 90, 70, 22)).read_text(encoding="utf-8"))
    with pytest.raises(PromptError, match="the ROI covers no voxel centre of the image"):
        parse_markups(doc, oblique)


def test_slicer_lines_and_point_lists(oblique):
    line = [ras(oblique, 12.0, 20.0, 5), ras(oblique, 30.0, 26.0, 5)]
    doc = {"@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/"
                      "Schema/markups-schema-v1.0.3.json#",
           "markups": [
               {"type": "Line", "name": "long axis", "coordinateSystem": "RAS",
                "controlPoints": [{"label": "L-1", "position": line[0]}, {"label": "L-2", "position": line[1]}]},
               {"type": "Fiducial", "name": "F", "coordinateSystem": "RAS",
                "controlPoints": [{"label": "in", "position": ras(oblique, 20, 22, 5)},
                                  {"label": "-rib", "position": ras(oblique, 40, 30, 5)},
                                  {"label": "unset", "position": [0, 0, 0], "positionStatus": "undefined"}]},
               {"type": "Angle", "name": "a", "controlPoints": []},
           ]}
    objects, notes = parse_markups(doc, oblique)
    assert len(objects) == 1 and objects[0].name == "long axis"
    sp = objects[0].slices[5]
    assert np.allclose(sp.line, (12, 20, 30, 26), atol=1e-6)
    assert [(round(p.x, 6), round(p.y, 6), p.positive) for p in sp.points] == [(20, 22, True), (40, 30, False)]
    assert notes == ["markups: markups.2 (Angle 'a'): skipped (promptseg reads ROIs, lines and point lists)"]
    points_only = {"markups": [
        {"type": "Fiducial", "name": "tumour", "coordinateSystem": "LPS",
         "controlPoints": [{"position": oblique.index_to_physical(20, 22, 6).tolist()}]},
        {"type": "Fiducial", "name": "background", "coordinateSystem": "LPS",
         "controlPoints": [{"position": oblique.index_to_physical(5, 5, 6).tolist()}]}]}
    (obj,), _ = parse_markups(points_only, oblique)
    assert [p.positive for p in obj.slices[6].points] == [True, False]
    tilted = {"markups": [{"type": "Line", "controlPoints": [{"position": oblique.index_to_physical(1, 1, 2).tolist()},
                                                             {"position": oblique.index_to_physical(9, 9, 4).tolist()}]}]}
    with pytest.raises(PromptError, match=r"spans slices 2.00 to 4.00 \(voxel index k\): its points must lie on one slice"):
        parse_markups(tilted, oblique)


def test_prompt_files_in_ras_and_lps_space(tmp_path, oblique):
    ijk = {"objects": [{"name": "a", "slice": 4, "box": [10, 12, 30, 28], "points": [[20, 20], [35, 25, 0]]},
                       {"name": "b", "box3d": [5, 6, 2, 15, 16, 6]}]}
    corner = lambda i, j, k, space: (ras(oblique, i, j, k) if space == "RAS"  # noqa: E731
                                     else oblique.index_to_physical(i, j, k).tolist())
    for space in ("RAS", "LPS"):
        world = {"space": space, "objects": [
            {"name": "a", "box": [corner(10, 12, 4, space), corner(30, 28, 4, space)],
             "points": [corner(20, 20, 4, space), corner(35, 25, 4, space) + [0]]},
            {"name": "b", "box3d": [corner(5, 6, 2, space), corner(15, 16, 6, space)]}]}
        (tmp_path / "ijk.json").write_text(json.dumps(ijk))
        (tmp_path / "world.json").write_text(json.dumps(world))
        expected, _ = load_prompts(tmp_path / "ijk.json", oblique)
        got, _ = load_prompts(tmp_path / "world.json", oblique)
        for e, g in zip(expected, got):
            assert e.z_range == g.z_range and e.slices.keys() == g.slices.keys()
            for z in e.slices:
                assert np.allclose(e.slices[z].box, g.slices[z].box, atol=1e-6)
                assert [(round(p.x, 6), round(p.y, 6), p.positive) for p in g.slices[z].points] == \
                       [(p.x, p.y, p.positive) for p in e.slices[z].points]
    (tmp_path / "bad.json").write_text(json.dumps({"space": "RAS", "objects": [{"slice": 3, "box": [[0, 0, 0], [1, 1, 0]]}]}))
    with pytest.raises(PromptError, match="slice cannot be used in RAS space"):
        load_prompts(tmp_path / "bad.json", oblique)
    (tmp_path / "bad.json").write_text(json.dumps({"space": "XYZ", "objects": [{"slice": 3, "box": [0, 0, 2, 2]}]}))
    with pytest.raises(PromptError, match="space 'XYZ': use one of IJK, LPS, RAS"):
        load_prompts(tmp_path / "bad.json", oblique)


def test_label_map_prompts_take_the_largest_cross_section_and_keep_names(tmp_path):
    labels = np.zeros((6, 30, 40), np.uint8)
    labels[1:5, 5:10, 5:12] = 1  # 5 x 7 on slices 1..4
    labels[2, 12:20, 20:34] = 3  # 8 x 14 on slice 2 ...
    labels[4, 14:18, 22:30] = 3  # ... smaller on slice 4
    objects = prompts_from_label_array(labels)
    assert [(o.label, o.start_slice, o.slices[o.start_slice].box) for o in objects] == \
           [(1, 1, (5.0, 5.0, 11.0, 9.0)), (3, 2, (20.0, 12.0, 33.0, 19.0))]
    image = sitk.GetImageFromArray(labels)
    for key, value in (("Segment0_Name", "lesion"), ("Segment0_LabelValue", "3"), ("Segment1_Name", "cyst"),
                       ("Segment1_LabelValue", "1")):
        image.SetMetaData(key, value)
    sitk.WriteImage(image, str(tmp_path / "rough.seg.nrrd"))
    volume = Volume(np.zeros(labels.shape, np.int16))
    (lesion,) = load_label_prompts(tmp_path / "rough.seg.nrrd", volume, wanted=[3])
    assert (lesion.label, lesion.name, lesion.start_slice) == (3, "lesion", 2)
    with pytest.raises(PromptError, match=r"label\(s\) 2 not found \(present: 1, 3\)"):
        load_label_prompts(tmp_path / "rough.seg.nrrd", volume, wanted=[2])


def test_segment_prompt_from_a_mask_on_the_cli(tmp_path, capsys, monkeypatch):
    import promptseg.models

    monkeypatch.setattr(promptseg.models, "build_segmenter", lambda *a, **k: ThresholdSegmenter())
    array = np.full((6, 30, 40), 10, np.int16)
    array[1:5, 12:20, 20:34] = 900
    promptseg.save_volume(Volume(array), tmp_path / "scan.nii.gz")
    rough = np.zeros(array.shape, np.uint8)
    rough[2, 13:19, 21:33] = 3
    promptseg.save_mask(rough, tmp_path / "rough.nii.gz", reference=Volume(array))
    out = tmp_path / "refined.nii.gz"
    assert main(["segment", str(tmp_path / "scan.nii.gz"), "-o", str(out), "--prompt-from", str(tmp_path / "rough.nii.gz"),
                 "--labels", "3", "--no-progress"]) == 0
    refined = promptseg.load_labels(out).array
    assert sorted(np.unique(refined).tolist()) == [0, 3] and (refined[array < 900] == 0).all()
    assert (refined[2] == 3).sum() == 6 * 12 and refined[2, 13:19, 21:33].all()  # the box on the largest slice
    assert [z for z in range(6) if refined[z].any()] == [1, 2, 3, 4]  # propagated from it
    sidecar = json.loads((tmp_path / "refined.provenance.json").read_text(encoding="utf-8"))
    assert sidecar["prompt_source"].startswith(f"label map {tmp_path / 'rough.nii.gz'} (a box on each label's largest")
    assert sidecar["prompts"] == [{"label": 3, "slice": 2, "box": [21.0, 13.0, 32.0, 18.0]}]
    assert main(["segment", str(tmp_path / "scan.nii.gz"), "-o", str(out), "--prompt-from", str(tmp_path / "rough.nii.gz"),
                 "--box", "1,1,5,5", "--slice", "2"]) == 2
    assert "give one kind of prompt: --prompt-from or --box/--point/--line/--box3d/--key-box, not both" in \
           capsys.readouterr().err


def test_prompt_source_refuses_labels_without_a_map():
    with pytest.raises(PromptError, match="--labels chooses labels of --prompt-from LABELS"):
        PromptSource(labels=(1,))


def test_the_readme_example_prompt_files_are_the_lung1_box():
    """examples/prompts/*: the README's box 206,347,229,368 on slice 33 of lung1, as a Slicer ROI and in RAS mm;
    examples/batch/radiomics.csv reads as three cases."""
    from pathlib import Path

    from promptseg.batch import load_cases

    from datafiles import REPO, image

    volume = promptseg.load_volume(image("lung1"))
    (roi,), notes = load_prompts(REPO / "examples" / "prompts" / "lung1_tumour.mrk.json", volume)
    assert notes == [] and roi.slices[33].box == (206.0, 347.0, 229.0, 368.0) and roi.z_range == (32, 34)
    (box,), _ = load_prompts(REPO / "examples" / "prompts" / "lung1_tumour_ras.json", volume)
    assert list(box.slices) == [33] and np.allclose(box.slices[33].box, (206, 347, 229, 368), atol=0.01)
    cases = load_cases(REPO / "examples" / "batch" / "radiomics.csv", Path("out"))
    assert [(c.case_id, c.prompt_file is not None, c.label_map is not None) for c in cases] == \
           [("lung1", True, False), ("brain2", False, True), ("breast1", False, True)]
    assert all(c.image.is_file() for c in cases)
