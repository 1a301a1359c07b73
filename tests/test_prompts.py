import json

import numpy as np
import pytest

from promptseg.errors import PromptError
from promptseg.prompts import (
    Point, box_from_mask, interpolate_key_boxes, line_to_box, load_prompt_file, make_object,
    parse_box, parse_box3d, parse_line, parse_point, parse_prompt_document, parse_range, prompt_to_dict, validate,
)

SHAPE = (10, 40, 60)  # z, y, x


def test_parse_box_and_points():
    assert parse_box("1,2,30,20") == (1.0, 2.0, 30.0, 20.0)
    assert parse_box(" 1, 2 ,30,20") == (1.0, 2.0, 30.0, 20.0)
    assert parse_point("5,6") == Point(5, 6, True)
    assert parse_point("5,6,0") == Point(5, 6, False)
    assert parse_point("5,6,1") == Point(5, 6, True)
    assert parse_range("3,7") == (3, 7)
    assert parse_box3d("1,2,3,10,20,5") == (1, 2, 3, 10, 20, 5)


@pytest.mark.parametrize(
    "func, text, message",
    [
        (parse_box, "1,2,3", "box '1,2,3': expected 4 numbers, got 3"),
        (parse_box, "a,2,3,4", "box 'a,2,3,4': expected comma-separated numbers"),
        (parse_box, "10,2,5,8", "box 10,2,5,8: needs x0 < x1"),
        (parse_box, "1,9,5,8", "box 1,9,5,8: needs y0 < y1"),
        (parse_box, "1,2,nan,4", "numbers must be finite"),
        (parse_point, "5,6,2", "the third number must be 1 (inside) or 0 (outside)"),
        (parse_line, "3,3,3,3", "the two end points are the same"),
        (parse_range, "7,3", "needs z0 <= z1"),
        (parse_range, "1.5,3", "slices must be integers"),
        (parse_box3d, "1,2,5,10,20,3", "needs z0 <= z1"),
    ],
)
def test_parse_errors(func, text, message):
    with pytest.raises(PromptError, match=message.replace("(", r"\(").replace(")", r"\)")):
        func(text)


def test_validate_catches_prompts_outside_the_image():
    ok = make_object(slice=3, box=(0, 0, 59, 39))
    validate(ok, SHAPE)
    with pytest.raises(PromptError, match=r"box 0,0,60,39 on slice 3 is outside the image \(x 0..59, y 0..39\)"):
        validate(make_object(slice=3, box=(0, 0, 60, 39)), SHAPE)
    with pytest.raises(PromptError, match=r"slice 10 is outside the image \(slices 0..9\)"):
        validate(make_object(slice=10, box=(0, 0, 5, 5)), SHAPE)
    with pytest.raises(PromptError, match=r"point 70,5 on slice 2 is outside the image"):
        validate(make_object(slice=2, points=[Point(70, 5)]), SHAPE)
    with pytest.raises(PromptError, match=r"z-range 2,12 is outside the image"):
        validate(make_object(slice=3, box=(0, 0, 5, 5), z_range=(2, 12)), SHAPE)
    with pytest.raises(PromptError, match="the prompted slice lies outside its z-range 5,8"):
        validate(make_object(slice=3, box=(0, 0, 5, 5), z_range=(5, 8)), SHAPE)
    with pytest.raises(PromptError, match="say which slice"):
        make_object(box=(0, 0, 5, 5))
    with pytest.raises(PromptError, match="give a box, points, a line"):
        make_object(slice=1)


def test_line_becomes_the_box_of_its_circle():
    # horizontal diameter of length 20 centred at (30, 20)
    assert line_to_box((20, 20, 40, 20)) == (20.0, 10.0, 40.0, 30.0)
    obj = make_object(slice=0, line=(50, 5, 58, 5), image_shape=(40, 60))
    assert obj.slices[0].box == (50.0, 1.0, 58.0, 9.0)
    # clipped at the image border
    obj = make_object(slice=0, line=(52, 1, 59, 1), image_shape=(40, 60))
    assert obj.slices[0].box == (52.0, 0.0, 59.0, 4.5)


def test_box3d_prompts_middle_slice_with_z_range():
    obj = make_object(box3d=(5, 6, 2, 20, 30, 7), label=3, name="node")
    assert obj.slices.keys() == {4}
    assert obj.slices[4].box == (5, 6, 20, 30)
    assert obj.z_range == (2, 7)


def test_key_box_interpolation_is_linear():
    boxes = interpolate_key_boxes({2: (0, 0, 10, 10), 6: (4, 8, 14, 30)})
    assert sorted(boxes) == [2, 3, 4, 5, 6]
    assert boxes[4] == (2.0, 4.0, 12.0, 20.0)
    assert boxes[6] == (4.0, 8.0, 14.0, 30.0)


def test_box_from_mask_is_tight_and_empty_mask_fails():
    m = np.zeros((10, 10), bool)
    m[2:5, 3:8] = True
    assert box_from_mask(m) == (3, 2, 7, 4)
    with pytest.raises(PromptError, match="empty mask"):
        box_from_mask(np.zeros((4, 4), bool))


def test_json_prompt_file_round_trip(tmp_path):
    doc = {
        "objects": [
            {"name": "tumour", "slice": 3, "box": [1, 2, 30, 20]},
            {"label": 5, "name": "node", "slice": 4, "points": [[10, 10], [12, 15, 0]]},
            {"name": "lesion", "slice": 2, "line": [10, 10, 20, 10]},
            {"name": "liver", "key_slices": {"1": [0, 0, 10, 10], "5": [2, 2, 12, 12]}},
            {"name": "mass", "box3d": [5, 5, 1, 15, 15, 6]},
        ]
    }
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    objs = load_prompt_file(path, image_shape=(40, 60))
    assert [o.label for o in objs] == [1, 5, 2, 3, 4]  # unlabelled objects take the free values
    assert objs[0].label == 1 and objs[0].slices[3].box == (1, 2, 30, 20)
    assert objs[1].label == 5 and objs[1].slices[4].points == (Point(10, 10, True), Point(12, 15, False))
    assert objs[2].slices[2].box == (10.0, 5.0, 20.0, 15.0)
    assert objs[3].is_key_slices and sorted(objs[3].slices) == [1, 5]
    assert objs[4].z_range == (1, 6)
    for o in objs:
        validate(o, SHAPE)
    again = parse_prompt_document({"objects": [prompt_to_dict(o) for o in objs[:2]]})
    assert again[0].slices == objs[0].slices and again[1].slices == objs[1].slices


def test_duplicate_label_in_file_is_an_error():
    doc = {"objects": [{"label": 2, "slice": 0, "box": [0, 0, 4, 4]}, {"label": 2, "slice": 0, "box": [0, 0, 4, 4]}]}
    with pytest.raises(PromptError, match="label 2 is used by both"):
        parse_prompt_document(doc)


@pytest.mark.parametrize(
    "doc, message",
    [
        ({}, "objects: Field required"),
        ({"objects": []}, "objects: List should have at least 1 item"),
        ({"objects": [{"slice": 0, "box": [1, 2, 3]}]}, "objects.0.box: Value error, needs 4 numbers"),
        ({"objects": [{"slice": 0, "box": [0, 0, 4, 4], "colour": "red"}]}, "objects.0.colour: Extra inputs are not permitted"),
        ({"objects": [{"slice": 0, "points": [[1, 2, 5]]}]}, r"each point is \[x, y\] or \[x, y, 1\|0\]"),
        ({"objects": [{"box": [0, 0, 4, 4]}]}, "objects.0: object 1: say which slice"),
        ({"objects": [{"slice": -1, "box": [0, 0, 4, 4]}]}, "objects.0.slice: Input should be greater than or equal to 0"),
    ],
)
def test_json_prompt_errors_name_the_field(doc, message):
    with pytest.raises(PromptError, match=message):
        parse_prompt_document(doc, source="p.json")


def test_prompt_file_not_found_and_bad_json(tmp_path):
    with pytest.raises(PromptError, match="prompt file not found"):
        load_prompt_file(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{objects: ")
    with pytest.raises(PromptError, match="not valid JSON"):
        load_prompt_file(bad)
