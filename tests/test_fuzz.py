"""The short fuzz budget of ``make test`` (``make fuzz`` runs 10,000 inputs per target), and
property tests (hypothesis) of the checks the readers and parsers rely on.

Every target gets its seeds plus mutations; each input runs in a memory-capped
worker process with a time limit (see tests/fuzz/). Any untyped exception, hang,
crash or garbage volume fails the test and names the input's outcome.
"""

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.harness import run_campaign
from fuzz.seeds import make_seeds
from fuzz.targets import TARGETS

#: inputs per target in ``make test`` (well under a minute in all)
SHORT_BUDGET = 150
SHORT_TARGETS = list(TARGETS)


@pytest.fixture(scope="module")
def scratch():
    root = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="promptseg-fuzz-", dir=root) as folder:
        folder = Path(folder)
        yield folder, make_seeds(folder / "seeds")


@pytest.mark.parametrize("target", SHORT_TARGETS)
def test_short_fuzz_budget(scratch, target):
    folder, seeds = scratch
    counts = run_campaign(target, SHORT_BUDGET, seed=20240601, scratch=folder, seeds=seeds, timeout=30.0)
    assert counts.inputs == SHORT_BUDGET
    assert counts.bad == 0, counts.examples
    assert counts.accepted >= len(seeds[target])  # the unmutated seeds are read


# ---------------------------------------------------------------------------
# properties
from promptseg.errors import ImageReadError, PromptError  # noqa: E402
from promptseg.io.jsonfile import MAX_JSON_DEPTH, json_depth, parse_json  # noqa: E402
from promptseg.io.limits import geometry_problem  # noqa: E402
from promptseg.prompts import parse_prompt_document  # noqa: E402

floats = st.floats(allow_nan=True, allow_infinity=True, width=64)


@given(st.lists(floats, min_size=3, max_size=3), st.lists(floats, min_size=3, max_size=3),
       st.lists(floats, min_size=9, max_size=9))
def test_geometry_is_accepted_only_when_finite_in_range_and_non_singular(spacing, origin, direction):
    matrix = np.array(direction).reshape(3, 3)
    problem = geometry_problem(spacing, origin, matrix)
    finite = all(map(math.isfinite, spacing + origin + direction))
    if problem is None:
        assert finite and all(1e-6 <= s <= 1e5 for s in spacing) and all(abs(o) <= 1e9 for o in origin)
        norms = np.linalg.norm(matrix, axis=0)
        assert np.all(np.abs(norms - 1) <= 1e-2) and abs(np.linalg.det(matrix / norms)) >= 1e-3


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=30,
)


@given(json_values)
def test_json_depth_matches_the_nesting_python_builds(value):
    def depth(node):
        if isinstance(node, list):
            return 1 + max((depth(v) for v in node), default=0)
        if isinstance(node, dict):
            return 1 + max((depth(v) for v in node.values()), default=0)
        return 0

    assert json_depth(json.dumps(value)) == depth(value)
    if depth(value) <= MAX_JSON_DEPTH:
        assert parse_json(json.dumps(value), "x") == value


objects = st.fixed_dictionaries(
    {},
    optional={
        "label": st.integers(-5, 70000), "slice": st.integers(-3, 8),
        "box": st.lists(st.floats(-10, 40, allow_nan=False), min_size=3, max_size=5),
        "points": st.lists(st.lists(st.integers(-5, 40), min_size=2, max_size=3), max_size=3),
        "key_slices": st.dictionaries(st.integers(-1, 6).map(str), st.lists(st.integers(0, 30), min_size=3, max_size=5), max_size=3),
        "z_range": st.lists(st.integers(-2, 8), min_size=1, max_size=3),
        "line": st.lists(st.floats(0, 30, allow_nan=False), min_size=4, max_size=4),
        "box3d": st.lists(st.integers(0, 30), min_size=5, max_size=7),
        "name": st.text(max_size=8),
    },
)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(objects, max_size=4) | json_values)
def test_prompt_documents_either_parse_or_raise_prompt_error(doc):
    """Any JSON document: a list of sound objects, or a PromptError (never another exception)."""
    document = {"objects": doc} if isinstance(doc, list) else doc
    try:
        parsed = parse_prompt_document(document, image_shape=(20, 24))
    except PromptError as error:
        assert "\n" not in str(error)
        return
    labels = [p.label for p in parsed]
    assert len(set(labels)) == len(labels) and all(1 <= v <= 65535 for v in labels)


@settings(deadline=None, max_examples=60)
@given(st.binary(max_size=600))
def test_npz_reader_refuses_arbitrary_bytes_with_a_typed_error(tmp_path_factory, data):
    from promptseg.io import load_volume

    path = tmp_path_factory.mktemp("npz") / "x.npz"
    path.write_bytes(b"PK\x03\x04" + data)
    with pytest.raises(ImageReadError):
        load_volume(path)
