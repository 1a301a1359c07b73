"""``promptseg benchmark``: run folder, sweeps, multi-phase aggregation, resume; real LiteMedSAM on the bundled cases."""

import csv
import json
import shutil

import numpy as np
import pytest

import promptseg
from promptseg.cli import main
from promptseg.evaluation import benchmark as B
from promptseg.datasets.layouts import load_dataset
from promptseg.datasets.metrics_table import COLUMNS, read_metrics
from promptseg.evaluation.simulate import simulate_prompts
from promptseg.io import load_labels, load_volume, save_mask, save_volume
from promptseg.models import Capability
from promptseg.prompts import load_prompt_file
from promptseg.volume import Volume

from datafiles import REPO
from fakes import ThresholdSegmenter
from model_cache import litemedsam, middle_slice_box

EXAMPLE = REPO / "examples" / "datasets" / "radiomics.csv"


# ---------------------------------------------------------------------------
# a synthetic dataset the threshold fake segments exactly
# ---------------------------------------------------------------------------
def synthetic_case(i):
    """uint8 (8, 40, 50) image with two bright objects (labels 1, 2) on a dark background."""
    labels = np.zeros((8, 40, 50), np.uint8)
    labels[2:6, 10:20 + i, 10:25] = 1
    labels[3:5, 25:32, 30:40] = 2
    image = np.full(labels.shape, 20, np.uint8)
    image[labels > 0] = 200
    return Volume(image, spacing=(0.8, 0.8, 2.0)), labels


def write_dataset(root, n=3, phases=False):
    """images/ + labels/ folders (nnU-Net channel names when ``phases``); returns the folder."""
    for i in range(n):
        volume, labels = synthetic_case(i)
        if phases:
            save_volume(volume, root / "images" / f"c{i}_0000.nrrd")
            second = volume.array.copy()
            second[5][labels[5] == 1] = 100        # label 1 too dark on its last slice in the second phase
            save_volume(volume.with_array(second), root / "images" / f"c{i}_0001.nrrd")
        else:
            save_volume(volume, root / "images" / f"c{i}.nrrd")
        save_mask(labels, root / "labels" / f"c{i}.nrrd", reference=volume)
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "organ": 1, "lesion": 2}}))
    return root


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path / "ds")


def csv_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def without_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


class CountingSegment:
    """Wraps promptseg.segment: counts calls, keeps the results, optionally fails on one case."""

    def __init__(self, fail_on=None):
        self.calls, self.prompts, self.results, self.fail_on = [], [], [], fail_on

    def __call__(self, volume, prompts, segmenter, **kw):
        source = str(volume.metadata.get("source"))
        if self.fail_on and self.fail_on in source:
            raise KeyboardInterrupt("simulated interruption")
        self.calls.append(source)
        self.prompts.append(list(prompts))
        result = promptseg.segment(volume, prompts, segmenter, **kw)
        self.results.append(result)
        return result


# ---------------------------------------------------------------------------
# run folder (fake model)
# ---------------------------------------------------------------------------
def test_run_folder_holds_settings_rows_prompts_predictions_and_summary(dataset, tmp_path):
    out = B.run_benchmark(dataset, ThresholdSegmenter(), tmp_path / "run", seed=3, progress=False)
    run = json.loads((out / "run.json").read_text())
    assert run["dataset"] == "ds" and run["model"] == "threshold" and run["checkpoint"] is None
    assert run["seed"] == 3 and run["sweep"] is None and run["tolerance_mm"] == 2.0
    assert run["prompt"]["mode"] == "box-mid" and run["prompt"]["jitter_px"] == 0.0
    assert [c["case"] for c in run["cases"]] == ["c0", "c1", "c2"]
    assert run["label_names"] == {"1": "organ", "2": "lesion"}
    assert run["started"] and run["finished"] and run["promptseg_version"] == promptseg.__version__

    rows = csv_rows(out / "metrics.csv")
    assert list(rows[0]) == list(COLUMNS)
    assert [(r["case"], r["label"], r["label_name"]) for r in rows] == [
        (c, lab, name) for c in ("c0", "c1", "c2") for lab, name in (("1", "organ"), ("2", "lesion"))]
    assert {r["setting"] for r in rows} == {""} and {r["prompt_mode"] for r in rows} == {"box-mid"}
    assert all(float(r["dice"]) == 1.0 and float(r["hd95"]) == 0.0 for r in rows)   # the fake is exact on these
    for i in range(3):
        volume, labels = synthetic_case(i)
        prompts = load_prompt_file(out / "prompts" / f"c{i}.json")
        assert prompts == simulate_prompts(labels, "box-mid", seed=3, case_id=f"c{i}", names={1: "organ", 2: "lesion"})
        reference = load_volume(dataset / "images" / f"c{i}.nrrd")
        prediction = load_labels(out / "predictions" / f"c{i}.nii.gz", reference=reference)
        assert np.array_equal(prediction.array, labels)
        assert load_volume(out / "predictions" / f"c{i}.nii.gz").same_grid(reference)
        assert (out / "units" / f"c{i}.json").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert [(s["setting"], s["label"], s["n"]) for s in summary] == [("", 1, 3), ("", 2, 3)]
    assert summary[0]["dice"]["mean"] == 1.0
    assert read_metrics(out)[0]["dice"] == 1.0


def test_jitter_sweep_writes_one_folder_per_setting_in_sweep_order(dataset, tmp_path):
    out = B.run_benchmark(dataset, ThresholdSegmenter(), tmp_path / "run", sweep="jitter",
                          sweep_values=[0, 3, 12], labels=[2], progress=False)
    rows = read_metrics(out)
    assert [(r["case"], r["setting"], r["sweep_param"], r["sweep_value"]) for r in rows] == [
        (c, f"jitter_px={v}", "jitter_px", str(v)) for c in ("c0", "c1", "c2") for v in (0, 3, 12)]
    assert {r["label"] for r in rows} == {2}
    for v in (0, 3, 12):
        assert sorted(p.name for p in (out / "predictions" / f"jitter_px={v}").iterdir()) == [
            "c0.nii.gz", "c1.nii.gz", "c2.nii.gz"]
        assert (out / "prompts" / f"jitter_px={v}" / "c0.json").is_file()
    assert [s["setting"] for s in json.loads((out / "summary.json").read_text())] == [
        "jitter_px=0", "jitter_px=3", "jitter_px=12"]
    run = json.loads((out / "run.json").read_text())
    assert run["sweep"] == {"param": "jitter_px", "values": [0, 3, 12]} and run["labels"] == [2]
    # jitter 0 is the tight box; bigger jitter moves the box and costs Dice on the small object
    dice = {r["setting"]: r["dice"] for r in rows if r["case"] == "c0"}
    assert dice["jitter_px=0"] == 1.0 and dice["jitter_px=12"] < 1.0


def test_points_sweep_records_the_clicks_it_used(dataset, tmp_path):
    out = B.run_benchmark(dataset, ThresholdSegmenter(), tmp_path / "run", sweep="points", sweep_values=[1, 4],
                          limit=1, progress=False)
    rows = read_metrics(out)
    assert [(r["setting"], r["prompt_mode"]) for r in rows] == [("points=1", "points")] * 2 + [("points=4", "points")] * 2
    for n in (1, 4):
        prompts = load_prompt_file(out / "prompts" / f"points={n}" / "c0.json")
        assert [len(p.slices[p.start_slice].points) for p in prompts] == [n, n]
    assert json.loads((out / "run.json").read_text())["prompt"]["mode"] == "points"


def test_points_with_negatives_are_recorded_and_checked(dataset, tmp_path):
    out = B.run_benchmark(dataset, ThresholdSegmenter(), tmp_path / "run", prompt_mode="points", points=4, negatives=1,
                          limit=1, progress=False)
    prompt = load_prompt_file(out / "prompts" / "c0.json")[0]
    assert [p.positive for p in prompt.slices[prompt.start_slice].points] == [True, True, True, False]
    run = json.loads((out / "run.json").read_text())["prompt"]
    assert run["negatives"] == 1 and run["positive_points"] == "points - 1"
    for kwargs, message in [(dict(negatives=1), "applies to point prompts"),
                            (dict(prompt_mode="points", points=1, negatives=1), "leaves no positive click"),
                            (dict(sweep="points", negatives=1), "leaves no positive click with 1 point")]:
        with pytest.raises(B.BenchmarkError, match=message):
            B.run_benchmark(dataset, ThresholdSegmenter(), tmp_path / "bad", progress=False, **kwargs)


class SizedFake(ThresholdSegmenter):
    """A fake whose input size can change (the fixed-size LiteMedSAM cannot)."""

    capabilities = frozenset({Capability.RESIZABLE_INPUT})
    made = []

    def __init__(self, size=64):
        super().__init__()
        self.input_size = size

    def with_input_size(self, size):
        SizedFake.made.append(size)
        return SizedFake(size)


def test_input_size_sweep_only_for_backends_that_allow_it(dataset, tmp_path):
    with pytest.raises(B.BenchmarkError, match="model litemedsam has a fixed input size of 256"):
        B.run_benchmark(dataset, litemedsam(), tmp_path / "run", sweep="input-size", progress=False)
    assert not (tmp_path / "run").exists()
    SizedFake.made.clear()
    out = B.run_benchmark(dataset, SizedFake(), tmp_path / "run2", sweep="input_size", sweep_values=[128, 512],
                          limit=1, progress=False)
    assert SizedFake.made == [128, 512]
    assert [r["setting"] for r in read_metrics(out)] == ["input_size=128"] * 2 + ["input_size=512"] * 2


def test_bad_settings_fail_before_any_work(dataset, tmp_path):
    fake = ThresholdSegmenter()
    cases = [
        (dict(prompt_mode="scribble"), "unknown prompt mode"),
        (dict(prompt_mode="points", jitter_px=3), "jitter applies to box prompts"),
        (dict(prompt_mode="points", sweep="jitter"), "jitter applies to box prompts"),
        (dict(sweep="colour"), "unknown sweep"),
        (dict(sweep="points", sweep_values=[0]), "bad value 0"),
        (dict(sweep="aggregate", sweep_values=["mean"]), "bad value 'mean'"),
        (dict(sweep="aggregate"), "needs cases with phases"),
        (dict(sweep_values=[1]), "without a sweep"),
        (dict(seed=-1), "--seed"),
        (dict(labels=[0]), "--labels"),
    ]
    for kwargs, message in cases:
        with pytest.raises(B.BenchmarkError, match=message):
            B.run_benchmark(dataset, fake, tmp_path / "run", progress=False, **kwargs)
    assert not (tmp_path / "run").exists()
    with pytest.raises(B.BenchmarkError, match="none of the labels 7 occurs"):
        B.run_benchmark(dataset, fake, tmp_path / "run", labels=[7], progress=False)


def test_a_folder_with_another_run_is_refused_unless_overwritten(dataset, tmp_path):
    fake = ThresholdSegmenter()
    out = B.run_benchmark(dataset, fake, tmp_path / "run", limit=1, progress=False)
    with pytest.raises(B.BenchmarkError, match=r"other settings \(seed: 0 there, 1 now\).*--overwrite"):
        B.run_benchmark(dataset, fake, out, limit=1, seed=1, progress=False)
    with pytest.raises(B.BenchmarkError, match="the case list"):
        B.run_benchmark(dataset, fake, out, limit=2, progress=False)
    B.run_benchmark(dataset, fake, out, limit=1, seed=1, overwrite=True, progress=False)
    assert json.loads((out / "run.json").read_text())["seed"] == 1
    (out / "run.json").unlink()
    with pytest.raises(B.BenchmarkError, match="no run.json"):
        B.run_benchmark(dataset, fake, out, limit=1, progress=False)


def test_resume_redoes_only_unfinished_units_and_gives_the_same_metrics(dataset, tmp_path, monkeypatch):
    fake = ThresholdSegmenter()
    whole = B.run_benchmark(dataset, fake, tmp_path / "whole", sweep="jitter", sweep_values=[0, 8], progress=False)

    broken = CountingSegment(fail_on="c1.nrrd")
    monkeypatch.setattr(B, "segment", broken)
    with pytest.raises(KeyboardInterrupt):
        B.run_benchmark(dataset, fake, tmp_path / "part", sweep="jitter", sweep_values=[0, 8], progress=False)
    assert len(broken.calls) == 2                                       # c0 at both settings
    assert json.loads((tmp_path / "part" / "run.json").read_text())["finished"] is None
    # a unit whose prediction was written but whose record was not is unfinished
    (tmp_path / "part" / "units" / "jitter_px=8" / "c0.json").unlink()

    counting = CountingSegment()
    monkeypatch.setattr(B, "segment", counting)
    B.run_benchmark(dataset, fake, tmp_path / "part", sweep="jitter", sweep_values=[0, 8], progress=False)
    assert len(counting.calls) == 5                                     # not c0 at jitter 0
    assert without_seconds(csv_rows(tmp_path / "part" / "metrics.csv")) == without_seconds(csv_rows(whole / "metrics.csv"))
    for path in (whole / "prompts").rglob("*.json"):
        assert (tmp_path / "part" / path.relative_to(whole)).read_text() == path.read_text()
    run = json.loads((tmp_path / "part" / "run.json").read_text())
    assert run["finished"] and len(run["resumed"]) == 1


# ---------------------------------------------------------------------------
# multi-phase aggregation
# ---------------------------------------------------------------------------
def test_combine_logits_mean_over_slices_all_phases_have_max_over_any():
    a = {1: np.array([[1.0, -2.0]], np.float16), 2: np.array([[3.0, 3.0]], np.float16)}
    b = {1: np.array([[-3.0, 4.0]], np.float16), 3: np.array([[0.5, -1.0]], np.float16)}
    avg = B.combine_logits([a, b], "avg")
    assert list(avg) == [1] and np.array_equal(avg[1], np.array([[-1.0, 1.0]], np.float32))
    top = B.combine_logits([a, b], "max")
    assert list(top) == [1, 2, 3]
    assert np.array_equal(top[1], [[1.0, 4.0]]) and np.array_equal(top[2], [[3.0, 3.0]])
    assert np.array_equal(top[3], [[0.5, -1.0]]) and top[1].dtype == np.float32
    assert B.combine_logits([a], "avg").keys() == a.keys()
    with pytest.raises(ValueError):
        B.combine_logits([a], "median")


def test_aggregate_sweep_segments_each_phase_once_and_combines(tmp_path, monkeypatch):
    root = write_dataset(tmp_path / "ds", n=1, phases=True)
    ds = load_dataset(root)
    assert [p.name for p in ds.cases[0].phases] == ["c0_0001.nrrd"]
    spy = CountingSegment()
    monkeypatch.setattr(B, "segment", spy)
    out = B.run_benchmark(ds, ThresholdSegmenter(), tmp_path / "run", sweep="aggregate", progress=False)
    assert len(spy.calls) == 2                                          # one per phase, shared by avg and max
    _, labels = synthetic_case(0)
    avg = load_labels(out / "predictions" / "aggregate=avg" / "c0.nii.gz").array
    top = load_labels(out / "predictions" / "aggregate=max" / "c0.nii.gz").array
    assert np.array_equal(top, labels)                                  # the first phase alone is exact
    expected = labels.copy()
    expected[5][labels[5] == 1] = 0                                     # the second phase misses label 1 on slice 5 ...
    assert np.array_equal(avg, expected)                                # ... so the mean drops it there
    rows = read_metrics(out)
    assert {r["phases"] for r in rows} == {2}
    assert json.loads((out / "run.json").read_text())["cases"][0]["phases"][0].endswith("c0_0001.nrrd")


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------
def test_cli_runs_prints_the_summary_and_resumes(dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("promptseg.models.build_segmenter", lambda *a, **k: ThresholdSegmenter())
    out = tmp_path / "run"
    assert main(["benchmark", str(dataset), "-o", str(out), "--sweep", "jitter", "--sweep-values", "0,2",
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "jitter_px=0" in text and "dice mean (sd)" in text and "12 rows over 3 case(s)" in text
    before = (out / "metrics.csv").read_text()
    spy = CountingSegment()
    monkeypatch.setattr(B, "segment", spy)
    assert main(["benchmark", str(dataset), "-o", str(out), "--sweep", "jitter", "--sweep-values", "0,2",
                 "--no-progress"]) == 0
    assert spy.calls == [] and (out / "metrics.csv").read_text() == before


@pytest.mark.parametrize("argv, message", [
    (["benchmark", "nowhere", "-o", "r"], "no such dataset: "),
    (["benchmark", str(EXAMPLE), "-o", "r", "--sweep-values", "1,2"], "--sweep-values needs --sweep"),
    (["benchmark", str(EXAMPLE), "-o", "r", "--sweep", "points", "--prompt", "box-mid"], "drop --prompt box-mid"),
    (["benchmark", str(EXAMPLE), "-o", "r", "--prompt", "points", "--jitter", "4"], "jitter applies to box prompts"),
    (["benchmark", str(EXAMPLE), "-o", "r", "--labels", "1,x"], "--labels '1,x'"),
    (["benchmark", str(EXAMPLE), "-o", "r", "--sweep", "points", "--sweep-values", "1,-5"], "bad value '-5'"),
])
def test_cli_bad_input_is_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("promptseg: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_cli_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["benchmark", "--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and "--sweep" in text and "examples/datasets/radiomics.csv" in text


# ---------------------------------------------------------------------------
# the real model on the bundled real cases (about 5 encoder passes per case and phase)
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """box-mid on lung1, brain2, breast1 with the bundled LiteMedSAM, uninterrupted; the segment calls it made."""
    spy = CountingSegment()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(B, "segment", spy)
        out = B.run_benchmark(EXAMPLE, litemedsam(), tmp_path_factory.mktemp("real") / "run", progress=False)
    return out, spy


@pytest.mark.slow
def test_real_cases_metrics_are_the_dice_promptseg_segment_gives_for_the_recorded_prompts(real_run):
    out, spy = real_run
    rows = {r["case"]: r for r in read_metrics(out)}
    cases = load_dataset(EXAMPLE).cases
    assert list(rows) == [c.case_id for c in cases] == ["lung1", "brain2", "breast1"]
    assert len(spy.calls) == 3
    for case, source, prompts, result in zip(cases, spy.calls, spy.prompts, spy.results):
        assert source == str(case.image)
        volume = load_volume(case.image)
        reference = load_labels(case.label, reference=volume).array
        # the prompt file holds exactly what promptseg.segment was given: the expert mask's tight box on its middle slice
        recorded = load_prompt_file(out / "prompts" / f"{case.case_id}.json")
        assert recorded == prompts == simulate_prompts(reference, "box-mid", seed=0, case_id=case.case_id,
                                                       names={1: "lesion"})
        z, box = middle_slice_box(reference == 1)
        assert recorded[0].slices[z].box == box
        # metrics.csv holds the Dice of promptseg.segment's output, which is what predictions/ holds
        assert rows[case.case_id]["dice"] == pytest.approx(promptseg.dice(result.mask(1), reference == 1), abs=1e-12)
        prediction = load_labels(out / "predictions" / f"{case.case_id}.nii.gz", reference=volume)
        assert np.array_equal(prediction.array, result.labels.array)
        assert load_volume(out / "predictions" / f"{case.case_id}.nii.gz").same_grid(volume)
        voxel_ml = np.prod(volume.spacing) / 1000
        assert rows[case.case_id]["ref_ml"] == pytest.approx((reference == 1).sum() * voxel_ml, rel=1e-6)
        assert rows[case.case_id]["encoded_slices"] == len(result.encoded_slices)
    # the values tests/test_real_cases.py and the README report for this prompt
    assert rows["lung1"]["dice"] >= 0.775
    assert [round(rows[c]["dice"], 3) for c in ("lung1", "brain2", "breast1")] == [0.795, 0.484, 0.462]


@pytest.mark.slow
def test_real_run_makes_a_report(real_run, tmp_path):
    from promptseg.reporting.report import build_report

    out, _ = real_run
    page = build_report([out], tmp_path / "report", best_worst=1).read_text()
    assert "| run | radiomics | litemedsam | box-mid |" in page and "lung1" in page


@pytest.mark.slow
def test_real_run_interrupted_after_one_case_resumes_to_the_same_metrics(real_run, tmp_path, monkeypatch):
    """breast1 then brain2; interrupted while segmenting brain2; resumed: brain2 only, rows as in the uninterrupted run."""
    out, _ = real_run
    by_case = {c.case_id: c for c in load_dataset(EXAMPLE).cases}
    manifest = tmp_path / "radiomics.csv"                               # same dataset name, two of its cases
    manifest.write_text("case,image,label,label_names\n" + "".join(
        f"{c},{by_case[c].image},{by_case[c].label},1:lesion\n" for c in ("breast1", "brain2")))
    monkeypatch.setattr(B, "segment", CountingSegment(fail_on="brain2_image"))
    with pytest.raises(KeyboardInterrupt):
        B.run_benchmark(manifest, litemedsam(), tmp_path / "run", progress=False)
    assert [p.name for p in (tmp_path / "run" / "units").iterdir()] == ["breast1.json"]
    calls = CountingSegment()
    monkeypatch.setattr(B, "segment", calls)
    B.run_benchmark(manifest, litemedsam(), tmp_path / "run", progress=False)
    assert calls.calls == [str(by_case["brain2"].image)]               # breast1 is not recomputed
    resumed = {r["case"]: r for r in without_seconds(csv_rows(tmp_path / "run" / "metrics.csv"))}
    whole = {r["case"]: r for r in without_seconds(csv_rows(out / "metrics.csv"))}
    assert list(resumed) == ["breast1", "brain2"]
    assert resumed == {c: whole[c] for c in ("breast1", "brain2")}
    for c in ("breast1", "brain2"):
        assert (tmp_path / "run" / "prompts" / f"{c}.json").read_text() == (out / "prompts" / f"{c}.json").read_text()


@pytest.mark.slow
def test_real_multi_phase_breast1_avg_and_max_of_the_phase_logits(tmp_path, monkeypatch):
    """breast1 with a synthetic second phase (a non-linear intensity change of the same scan)."""
    src = load_dataset(EXAMPLE).cases[2]
    volume = load_volume(src.image)
    other = volume.with_array(np.power(volume.array.astype(np.float32), 0.7))
    save_volume(other, tmp_path / "breast1_other.nrrd")
    shutil.copy(src.image, tmp_path / "breast1.nrrd")
    shutil.copy(src.label, tmp_path / "breast1_label.nrrd")
    (tmp_path / "phases.csv").write_text("case,image,label,phases\nbreast1,breast1.nrrd,breast1_label.nrrd,breast1_other.nrrd\n")
    spy = CountingSegment()
    monkeypatch.setattr(B, "segment", spy)
    out = B.run_benchmark(tmp_path / "phases.csv", litemedsam(), tmp_path / "run", sweep="aggregate", progress=False)
    assert len(spy.calls) == 2                                          # one per phase, shared by avg and max
    first, second = (r.objects for r in spy.results)
    assert any(z not in second[0].logits or not np.array_equal(first[0].logits[z], second[0].logits[z])
               for z in first[0].logits)                                # the phases give different logits
    prompts = load_prompt_file(out / "prompts" / "aggregate=avg" / "breast1.json")
    assert prompts == load_prompt_file(out / "prompts" / "aggregate=max" / "breast1.json") == spy.prompts[0]
    for how in ("avg", "max"):
        expected = B.aggregate_labels(prompts, [first, second], how, volume.shape)
        saved = load_labels(out / "predictions" / f"aggregate={how}" / "breast1.nii.gz", reference=volume).array
        assert np.array_equal(saved, expected)
    avg = load_labels(out / "predictions" / "aggregate=avg" / "breast1.nii.gz").array > 0
    top = load_labels(out / "predictions" / "aggregate=max" / "breast1.nii.gz").array > 0
    single = [r.labels.array > 0 for r in spy.results]
    assert np.all(avg <= top) and np.all(single[0] <= top) and np.all(single[1] <= top)
    rows = read_metrics(out)
    assert [r["setting"] for r in rows] == ["aggregate=avg", "aggregate=max"]
    assert {r["phases"] for r in rows} == {2}
    reference = load_labels(src.label, reference=volume).array == 1
    # the numbers docs/evaluation.md quotes
    assert [round(promptseg.dice(m, reference), 3) for m in single] == [0.462, 0.482]
    assert [round(r["dice"], 3) for r in rows] == [0.484, 0.482]
    print({r["setting"]: round(r["dice"], 4) for r in rows}, [round(promptseg.dice(m, reference), 4) for m in single])
