"""The issue's scenario against real DICOM peers: dcmtk's storescu pushes, dcmtk's storescp receives.

20 series from allowed callers (17 good, 3 malformed) pushed in 4 associations, two at a time, plus one
association from an AE title that is not on the allow-list: 17 results at storescp (one per good series,
no duplicates), 3 series quarantined with their reasons, 1 association refused, every instance journaled.
The model is the fast stand-in of tests/fakes.py (this test is about the node, not the model); the results
are real RTSTRUCTs (promptseg.io.dicom.write_rtstruct), read back on their series.
"""

import subprocess

import pytest

from fakes import ThresholdSegmenter
from nodekit import TUMOUR_BOX, StoreSCP, dcmtk, malform, node_doc, threshold_factory, write_ct_series
import promptseg
from promptseg.io.dicom import read_dicom_series, read_rtstruct
from promptseg.node import DicomNode, validate_config
from promptseg.node.journal import DONE, QUARANTINED
from promptseg.node.quarantine import read_reason

pytestmark = pytest.mark.timeout(300)


def test_twenty_series_three_malformed_one_refused_none_lost(tmp_path):
    storescu = dcmtk("storescu")
    defects = {3: "missing-slice", 9: "truncated", 15: "mixed-size"}
    series, expected_reasons = [], {}
    for i in range(20):
        files = write_ct_series(tmp_path / "in" / f"s{i:02d}", series_number=i + 1, patient_id=f"P{i:02d}")
        if i in defects:
            expected_reasons[i] = malform(files, defects[i])
        series.append([p for p in files if p.exists()])
    intruder = write_ct_series(tmp_path / "in" / "intruder")
    uids = [pydicom_uid(files[0]) for files in series]

    with StoreSCP(tmp_path / "received") as scp:
        config = validate_config(node_doc(tmp_path / "store", quiet=0.5, destinations={"tps": scp.destination()}))
        node = DicomNode(config, segmenter_factory=threshold_factory, poll_seconds=0.05).start()
        try:
            pushes = []
            for batch in range(4):
                calling = "CT_SCANNER" if batch % 2 == 0 else "PLANNING"
                files = [str(p) for files in series[batch * 5:(batch + 1) * 5] for p in files]
                pushes.append(subprocess.Popen([storescu, "-aet", calling, "-aec", "PROMPTSEG", "127.0.0.1", str(node.port), *files],
                                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
                if batch % 2 == 1:   # two associations at a time
                    for push in pushes[-2:]:
                        _, err = push.communicate(timeout=120)
                        assert push.returncode == 0, err
            refused = subprocess.run([storescu, "-aet", "INTRUDER", "-aec", "PROMPTSEG", "127.0.0.1", str(node.port),
                                      *map(str, intruder)], capture_output=True, text=True, timeout=60)
            assert refused.returncode != 0 and "Association Rejected" in refused.stderr
            assert node.wait_idle(180)
            jobs = {job.series_uid: job for job in node.journal.jobs()}
            associations = node.journal.associations()
        finally:
            node.stop()
        received = scp.received()
        received_files = sorted(p for p in scp.folder.iterdir() if p.is_file())

    # 0 lost: every series sent by an allowed caller has a job, with every instance sent
    assert sorted(jobs) == sorted(uids)
    assert sum(a["instances"] for a in associations) == sum(len(files) for files in series) == 99
    assert [a["outcome"] for a in associations].count("refused") == 1
    assert next(a for a in associations if a["outcome"] == "refused")["calling_ae"] == "INTRUDER"
    # 17 results, one per good series, each exactly once
    assert len(received) == 17 and len({ds.SOPInstanceUID for ds in received}) == 17
    assert all(ds.Modality == "RTSTRUCT" for ds in received)
    assert all([roi.ROIName for roi in ds.StructureSetROISequence] == ["Tumour_ps"] for ds in received)
    by_series = {_referenced_series(ds): path for ds, path in zip(received, received_files)}
    good = [i for i in range(20) if i not in defects]
    assert sorted(by_series) == sorted(uids[i] for i in good)
    # one result read back on its series: the stand-in model's mask, through RTSTRUCT and back
    volume = read_dicom_series(series[good[0]][0].parent)
    expected = promptseg.segment(volume, promptseg.make_object(slice=2, box=TUMOUR_BOX, label=1), ThresholdSegmenter()).mask(1)
    back = read_rtstruct(by_series[uids[good[0]]], volume).labels.array == 1
    assert expected.sum() > 100 and promptseg.dice(back, expected) >= 0.97
    # 3 quarantined, each with its reason
    for i, uid in enumerate(uids):
        job = jobs[uid]
        if i in defects:
            assert job.state == QUARANTINED and expected_reasons[i] in job.reason
            folder = tmp_path / "store" / "quarantine" / f"{job.id}-{uid}"
            assert expected_reasons[i] in read_reason(folder)
            assert len(list(folder.glob("*.dcm"))) == len(series[i])
        else:
            assert job.state == DONE, (i, job.state, job.reason)


def pydicom_uid(path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)


def _referenced_series(ds) -> str:
    study = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
    return str(study.RTReferencedSeriesSequence[0].SeriesInstanceUID)
