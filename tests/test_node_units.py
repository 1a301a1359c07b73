"""DICOM node parts without the network: completion timing, journal (dedupe, late instances, states),
series checks on real CT instances, quarantine reason files, ROI prompts."""

import numpy as np
import pytest

from nodekit import lung_crop, malform, write_ct_series
from promptseg.node.checks import SeriesRejected, check_series
from promptseg.node.completion import Completion
from promptseg.node.journal import (DONE, FAILED, PROCESSING, QUARANTINED, QUEUED, RECEIVING, SENDING, InstanceInfo,
                                    Journal)
from promptseg.prompts.roi import largest_slice_box
from promptseg.node.quarantine import quarantine_job, read_reason
from promptseg.node.storage import Storage, safe_name, write_durable


def _info(sop, series="1.2.3", study="1.2", modality="CT"):
    return InstanceInfo(sop_uid=sop, series_uid=series, study_uid=study, modality=modality, sop_class_uid="1.2.840.10008.5.1.4.1.1.2")


def test_completion_needs_the_association_ended_and_the_quiet_period(tmp_path):
    journal = Journal(tmp_path / "j.sqlite3")
    completion = Completion(quiet_seconds=2.0)
    completion.opened("assoc-a")
    completion.sending("assoc-a", "1.2.3")
    journal.add_instance(_info("1.1"), tmp_path / "a", 10, "CT", 1, now=100.0)
    receiving = journal.jobs(RECEIVING)
    assert completion.due(receiving, now=1000.0) == []          # association still open: never complete
    completion.ended("assoc-a")
    assert completion.due(receiving, now=101.9) == []           # quiet for 1.9 s < 2 s
    assert [j.series_uid for j in completion.due(receiving, now=102.0)] == ["1.2.3"]
    # another association sending the same series keeps it open
    completion.sending("assoc-b", "1.2.3")
    assert completion.due(receiving, now=200.0) == []
    completion.ended("assoc-b")
    assert len(completion.due(receiving, now=200.0)) == 1


def test_a_series_waits_for_the_other_series_of_its_study(tmp_path):
    journal = Journal(tmp_path / "j.sqlite3")
    completion = Completion(quiet_seconds=2.0)
    journal.add_instance(_info("1.1", series="ct", study="s1"), tmp_path / "a", 10, "CT", 1, now=100.0)
    journal.add_instance(_info("2.1", series="rs", study="s1", modality="RTSTRUCT"), tmp_path / "b", 10, "CT", 2, now=100.0)
    journal.add_instance(_info("3.1", series="other", study="s2"), tmp_path / "c", 10, "CT", 2, now=100.0)
    completion.sending("assoc-2", "rs")              # the structure set is still arriving
    due = completion.due(journal.jobs(RECEIVING), now=110.0)
    assert [job.series_uid for job in due] == ["other"]
    completion.ended("assoc-2")
    assert [job.series_uid for job in completion.due(journal.jobs(RECEIVING), now=110.0)] == ["ct", "rs", "other"]


def test_journal_dedupes_and_starts_a_new_job_for_late_instances(tmp_path):
    journal = Journal(tmp_path / "j.sqlite3")
    first = journal.add_instance(_info("1.1"), tmp_path / "1", 10, "CT", 1)
    second = journal.add_instance(_info("1.2"), tmp_path / "2", 10, "CT", 1)
    assert first.new_job and not first.late and second.job_id == first.job_id and not second.new_job
    assert journal.add_instance(_info("1.1"), tmp_path / "1", 10, "CT", 2) is None  # duplicate SOP Instance UID
    job = journal.job(first.job_id)
    assert journal.transition(job.id, QUEUED, "complete", expect=RECEIVING, quiet_since=job.last_instance_at)
    assert not journal.transition(job.id, QUEUED, "again", expect=RECEIVING)          # state changed already
    late = journal.add_instance(_info("1.3"), tmp_path / "3", 10, "CT", 3)
    assert late.new_job and late.late and late.job_id != job.id
    new = journal.job(late.job_id)
    assert (new.version, new.state) == (2, RECEIVING)
    # version 2 processes every instance of the series received so far; version 1 keeps its own
    assert [p.name for p in journal.job_instances(new)] == ["1", "2", "3"]
    assert [p.name for p in journal.job_instances(journal.job(job.id))] == ["1", "2"]
    assert journal.transitions(job.id) == [(RECEIVING, "version 1"), (QUEUED, "complete")]


def test_quiet_since_guards_against_an_instance_arriving_meanwhile(tmp_path):
    journal = Journal(tmp_path / "j.sqlite3")
    added = journal.add_instance(_info("1.1"), tmp_path / "1", 10, "CT", 1, now=100.0)
    journal.add_instance(_info("1.2"), tmp_path / "2", 10, "CT", 1, now=105.0)
    assert not journal.transition(added.job_id, QUEUED, expect=RECEIVING, quiet_since=103.0)
    assert journal.transition(added.job_id, QUEUED, expect=RECEIVING, quiet_since=105.0)


def test_journal_survives_reopening_and_requeues_interrupted_jobs(tmp_path):
    path = tmp_path / "j.sqlite3"
    journal = Journal(path)
    a = journal.add_instance(_info("1.1", series="9.1"), tmp_path / "1", 10, "CT", 1).job_id
    b = journal.add_instance(_info("2.1", series="9.2"), tmp_path / "2", 10, "CT", 1).job_id
    for job_id in (a, b):
        journal.transition(job_id, QUEUED, expect=RECEIVING)
    assert journal.next_queued().id == a                   # oldest first, now processing
    journal.start_sending(b, tmp_path / "r.dcm", ["x", "y"], "rule")
    journal.delivery_sent(b, "x")
    journal.close()                                         # as if the process died here
    journal = Journal(path)
    assert journal.requeue_interrupted() == [a]
    assert journal.job(a).state == QUEUED
    assert [(d.destination, d.state) for d in journal.deliveries(b)] == [("x", "sent"), ("y", "pending")]
    assert journal.settle(b) is None                        # y still pending
    journal.delivery_failed(b, "y", "down", retry_at=None)
    assert journal.settle(b) == FAILED
    assert journal.job(b).state == FAILED
    assert journal.transition(a, PROCESSING, expect=QUEUED)
    assert journal.transition(a, QUARANTINED, "bad", expect=PROCESSING, reason="bad")
    assert journal.job(a).reason == "bad"
    journal.start_sending(a, tmp_path / "r.dcm", [], "rule")
    assert journal.settle(a) == DONE and SENDING not in {j.state for j in journal.jobs()}


def test_write_durable_and_safe_names(tmp_path):
    write_durable(tmp_path / "a" / "b.dcm", b"data")
    assert (tmp_path / "a" / "b.dcm").read_bytes() == b"data"
    assert list((tmp_path / "a").iterdir()) == [tmp_path / "a" / "b.dcm"]  # no temporary left
    assert safe_name("1.2.840.10008.1") == "1.2.840.10008.1"
    assert safe_name("../../etc/passwd").startswith("x") and "/" not in safe_name("../../etc/passwd")


def test_series_checks_accept_a_real_series_and_name_each_defect(tmp_path):
    files = write_ct_series(tmp_path / "ok")
    header = check_series(files)
    assert (header.count, header.rows, header.columns) == (5, 64, 64)
    assert header.slice_step == pytest.approx(lung_crop().spacing[2])
    for kind in ("missing-slice", "truncated", "mixed-size"):
        broken = write_ct_series(tmp_path / kind)
        words = malform(broken, kind)
        with pytest.raises(SeriesRejected, match=words):
            check_series([p for p in broken if p.exists()])
    duplicate = write_ct_series(tmp_path / "dup")
    import pydicom

    ds = pydicom.dcmread(duplicate[2])
    ds.ImagePositionPatient = pydicom.dcmread(duplicate[1]).ImagePositionPatient
    ds.save_as(duplicate[2])
    with pytest.raises(SeriesRejected, match="two instances at the same slice position"):
        check_series(duplicate)
    with pytest.raises(SeriesRejected, match="the series has no instances"):
        check_series([])
    (tmp_path / "junk.dcm").write_bytes(b"not dicom at all")
    with pytest.raises(SeriesRejected, match="junk.dcm is not readable DICOM"):
        check_series([tmp_path / "junk.dcm"])


def test_quarantine_folder_holds_the_instances_and_a_reason(tmp_path):
    storage = Storage(tmp_path / "store")
    journal = Journal(storage.journal)
    files = write_ct_series(tmp_path / "in")
    added = journal.add_instance(_info("1.1", series="1.2.3.4"), files[0], 10, "CT_SCANNER", 1)
    folder = quarantine_job(storage, journal.job(added.job_id), files, "missing slices: a gap of 10.00 mm")
    assert folder.name == f"{added.job_id}-1.2.3.4"
    assert sorted(p.name for p in folder.glob("*.dcm")) == sorted(p.name for p in files)
    assert read_reason(folder) == "missing slices: a gap of 10.00 mm"
    text = (folder / "reason.txt").read_text()
    assert "calling AE: CT_SCANNER" in text and "Test^Node" not in text and "NODE-TEST" not in text  # no patient data


def test_largest_cross_section_box():
    mask = np.zeros((4, 10, 10), bool)
    mask[1, 2:4, 2:4] = True
    mask[2, 3:8, 1:6] = True   # the largest
    mask[3, 5, 5] = True
    obj = largest_slice_box(mask)
    assert (obj.start_slice, obj.slices[2].box) == (2, (1.0, 3.0, 5.0, 7.0))


class _Roi:
    def __init__(self, name, label):
        self.name, self.label = name, label


class _StandInDicom:
    """list_rois / read_roi_mask of one RTSTRUCT holding ``rois`` {name: mask}."""

    def __init__(self, rois, error=None):
        self.rois, self.error = rois, error

    def list_rois(self, path):
        return [_Roi(name, i + 1) for i, name in enumerate(self.rois)]

    def read_roi_mask(self, path, reference, pattern):
        import re

        from promptseg.errors import PromptError

        if self.error is not None:
            raise self.error
        (name,) = [n for n in self.rois if re.fullmatch(pattern, n, re.IGNORECASE)]
        if not self.rois[name].any():
            raise PromptError(f"ROI '{name}' has no voxel on this series")
        return self.rois[name], None


def _rule(prompts):
    from nodekit import node_doc
    from promptseg.node import validate_config

    doc = node_doc(__import__("pathlib").Path("/tmp/unused"), rules=[
        {"name": "r", "prompts": prompts, "output": {"folder": "/tmp/unused-out"}}])
    return validate_config(doc).rules[0]


def test_roi_prompts_box_on_the_largest_cross_section_and_clear_reasons(tmp_path):
    """ROI prompt logic with a stand-in RTSTRUCT reader (the real one runs in test_node_rtstruct.py)."""
    from promptseg.node.prompting import build_prompts

    volume = lung_crop()
    gtv = np.zeros(volume.shape, bool)
    gtv[1, 10:20, 10:30] = True          # largest on slice 2
    gtv[2, 8:22, 6:34] = True
    ctv = np.zeros(volume.shape, bool)
    ctv[2, 40:50, 40:50] = True
    dicom = _StandInDicom({"GTV_1": gtv, "CTV": ctv, "GTV_empty": np.zeros(volume.shape, bool)})
    rtstructs = [tmp_path / "rs.dcm"]

    prompts, names = build_prompts(_rule([{"roi": "gtv_1", "label": 4}, {"box": [1, 2, 30, 40], "label": 2, "name": "Box"}]),
                                   volume, rtstructs, dicom=dicom)
    (z, slice_prompt), = prompts[0].slices.items()
    assert (z, slice_prompt.box, prompts[0].label) == (2, (6.0, 8.0, 33.0, 21.0), 4)
    (z, slice_prompt), = prompts[1].slices.items()
    assert (z, slice_prompt.box) == (volume.num_slices // 2, (1.0, 2.0, 30.0, 40.0))
    assert names == {4: "GTV_1_promptseg", 2: "Box"}

    def reason(prompts, rtstructs=rtstructs, dicom=dicom):
        with pytest.raises(SeriesRejected) as info:
            build_prompts(_rule(prompts), volume, rtstructs, dicom=dicom)
        return str(info.value)

    assert reason([{"roi": "GTV.*"}]) == "ROI pattern 'GTV.*' matches several ROIs (GTV_1, GTV_empty); make it specific"
    assert reason([{"roi": "PTV"}]) == "no ROI matching 'PTV' in the study's RTSTRUCT (ROIs: CTV, GTV_1, GTV_empty)"
    assert reason([{"roi": "GTV_empty"}]) == "ROI 'GTV_empty' has no contour on this series"
    assert reason([{"roi": "GTV_1"}], rtstructs=[]) == (
        "no RTSTRUCT came with the study, so there is no ROI matching 'GTV_1' to prompt from")
    from promptseg.errors import DicomError

    other = _StandInDicom({"GTV_1": gtv}, error=DicomError("rs.dcm: Frame of Reference 1.2.3 is not the series' 4.5.6"))
    assert reason([{"roi": "GTV_1"}], dicom=other) == (
        "no RTSTRUCT of the study with an ROI matching 'GTV_1' refers to this series "
        "(rs.dcm: Frame of Reference 1.2.3 is not the series' 4.5.6)")
    assert reason([{"box": [1, 2, 30, 40], "slice": 9}]).startswith("prompt: ")
