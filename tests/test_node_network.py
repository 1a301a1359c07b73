"""DICOM node on the network (127.0.0.1): C-ECHO, allow-list refusals, durable C-STORE, size limit, late and
duplicate instances, unidentifiable instances, retry with back-off, restart recovery, TLS.

The model here is the deterministic stand-in of tests/fakes.py (``threshold_factory``): these tests check the
node, not the model. Results are real RTSTRUCT / SEG files (promptseg.io.dicom).
Peers: dcmtk's echoscu/storescu/storescp where installed (else skipped with the reason), pynetdicom otherwise.
"""

import shutil
import subprocess
import time

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification

from nodekit import StoreSCP, dcmtk, free_port, node_doc, storescu, threshold_factory, write_ct_series
from promptseg.node import DicomNode, validate_config
from promptseg.node.journal import DONE, FAILED, QUARANTINED

pytestmark = pytest.mark.timeout(120)


def _node(tmp_path, *, start=True, **doc_options) -> DicomNode:
    config = validate_config(node_doc(tmp_path / "store", **doc_options))
    node = DicomNode(config, segmenter_factory=threshold_factory, poll_seconds=0.05)
    return node.start() if start else node


def _wait(predicate, timeout=30.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def _associate(port, calling="CT_SCANNER", called="PROMPTSEG", contexts=(CTImageStorage, Verification), tls_args=None):
    ae = AE(ae_title=calling)
    for context in contexts:
        ae.add_requested_context(context)
    ae.acse_timeout = ae.network_timeout = 10
    return ae.associate("127.0.0.1", port, ae_title=called, tls_args=tls_args)


def test_echo_and_refusals(tmp_path):
    node = _node(tmp_path, callers=[{"ae_title": "CT_SCANNER"}, {"ae_title": "REMOTE", "addresses": ["10.9.9.0/24"]}])
    try:
        echo = subprocess.run([dcmtk("echoscu"), "-aet", "CT_SCANNER", "-aec", "PROMPTSEG", "127.0.0.1", str(node.port)],
                              capture_output=True, text=True, timeout=30)
        assert echo.returncode == 0, echo.stderr
        refused = subprocess.run([dcmtk("echoscu"), "-aet", "STRANGER", "-aec", "PROMPTSEG", "127.0.0.1", str(node.port)],
                                 capture_output=True, text=True, timeout=30)
        assert refused.returncode != 0 and "Calling AE Title Not Recognized" in refused.stderr
        assoc = _associate(node.port, calling="REMOTE")            # allowed AE title, but not from 127.0.0.1
        assert assoc.is_rejected
        assoc = _associate(node.port, called="SOMEONE_ELSE")       # the node's own AE title is required
        assert assoc.is_rejected
        assert assoc.acceptor.primitive.diagnostic == 0x07          # called AE title not recognised
        assoc = _associate(node.port)
        assert assoc.is_established and assoc.send_c_echo().Status == 0x0000
        assoc.release()
        rows = [(r["calling_ae"], r["outcome"], r["reason"]) for r in node.journal.associations()]
        assert ("STRANGER", "refused", "calling AE title 'STRANGER' is not on the allow-list") in rows
        assert ("REMOTE", "refused", "calling AE title 'REMOTE' is not allowed from 127.0.0.1") in rows
        assert ("CT_SCANNER", "refused", "called AE title 'SOMEONE_ELSE' is not this node's ('PROMPTSEG')") in rows
        assert sum(outcome == "refused" for _, outcome, _ in rows) == 3
        assert node.journal.jobs() == []
    finally:
        node.stop()


def test_store_is_on_disk_and_journaled_before_success(tmp_path):
    files = write_ct_series(tmp_path / "in")
    node = _node(tmp_path, quiet=30)   # long quiet period: nothing is processed during the test
    try:
        assoc = _associate(node.port)
        for path in files:
            ds = pydicom.dcmread(path)
            status = assoc.send_c_store(ds)
            assert status.Status == 0x0000
            # the success status came back: the instance is durable and journaled already
            stored = node.storage.instance_path(ds.SeriesInstanceUID, ds.SOPInstanceUID)
            assert pydicom.dcmread(stored).SOPInstanceUID == ds.SOPInstanceUID
            assert node.journal.has_instance(ds.SOPInstanceUID)
        assoc.release()
        assert len(node.journal.job_instances(node.journal.jobs()[0])) == 5
        stored_pixels = pydicom.dcmread(node.storage.instance_path(ds.SeriesInstanceUID, ds.SOPInstanceUID)).PixelData
        assert stored_pixels == pydicom.dcmread(files[-1]).PixelData   # bytes as sent
    finally:
        node.stop()


def test_size_limit_per_association(tmp_path):
    files = write_ct_series(tmp_path / "in")
    one = len(files[0].read_bytes())
    node = _node(tmp_path, quiet=30, max_association_bytes=int(2.5 * one))
    try:
        assoc = _associate(node.port)
        statuses = [assoc.send_c_store(pydicom.dcmread(p)).Status for p in files]
        assoc.release()
        assert statuses == [0x0000, 0x0000, 0xA700, 0xA700, 0xA700]
        (row,) = node.journal.associations()
        assert (row["instances"], row["refused_instances"]) == (2, 3)
        # a new association has its own budget
        assoc = _associate(node.port)
        assert assoc.send_c_store(pydicom.dcmread(files[2])).Status == 0x0000
        assoc.release()
    finally:
        node.stop()


def test_instance_without_series_uid_is_kept_in_quarantine_and_refused(tmp_path):
    ds = pydicom.dcmread(write_ct_series(tmp_path / "in")[0])
    del ds.SeriesInstanceUID
    node = _node(tmp_path, quiet=30)
    try:
        assoc = _associate(node.port)
        assert assoc.send_c_store(ds).Status == 0xC210
        assoc.release()
        (kept,) = (node.storage.quarantine / "unidentified").glob("*.dcm")
        assert pydicom.dcmread(kept).SOPInstanceUID == ds.SOPInstanceUID
        reason = kept.with_suffix(".reason.txt").read_text()
        assert reason.startswith("reason: no Series Instance UID\n") and "calling AE: CT_SCANNER" in reason
        assert node.journal.jobs() == []
    finally:
        node.stop()


def test_late_instances_make_a_new_job_and_duplicates_are_ignored(tmp_path):
    files = write_ct_series(tmp_path / "in")
    with StoreSCP(tmp_path / "received") as scp:
        node = _node(tmp_path, destinations={"tps": scp.destination()})
        try:
            assert storescu(files[:3], node.port).returncode == 0
            assert _wait(lambda: [j.state for j in node.journal.jobs()] == [DONE])
            assert storescu(files[3:], node.port).returncode == 0      # the rest of the series, late
            assert _wait(lambda: [j.state for j in node.journal.jobs()] == [DONE, DONE])
            first, second = node.journal.jobs()
            assert (first.version, second.version, first.series_uid) == (1, 2, second.series_uid)
            assert len(node.journal.job_instances(first)) == 3 and len(node.journal.job_instances(second)) == 5
            assert storescu(files, node.port).returncode == 0          # the whole series again: all duplicates
            time.sleep(1.0)
            assert len(node.journal.jobs()) == 2
            assert node.journal.associations()[-1]["duplicates"] == 5
        finally:
            node.stop()
        assert len(scp.received()) == 2                                # one result per job, nothing merged
        assert len({ds.SOPInstanceUID for ds in scp.received()}) == 2


def test_retry_with_backoff_until_the_destination_is_up(tmp_path):
    files = write_ct_series(tmp_path / "in")
    scp = StoreSCP(tmp_path / "received")                 # not started yet: the destination is down
    node = _node(tmp_path, destinations={"tps": scp.destination()},
                 retry={"max_attempts": 20, "initial_delay_seconds": 0.2, "backoff_factor": 2, "max_delay_seconds": 1})
    try:
        assert storescu(files, node.port).returncode == 0
        assert _wait(lambda: any(d.attempts >= 2 for d in node.journal.deliveries()), timeout=30)
        (delivery,) = node.journal.deliveries()
        assert delivery.state == "pending" and "no association" in delivery.last_error
        scp.start()
        assert _wait(lambda: [j.state for j in node.journal.jobs()] == [DONE], timeout=30)
        (delivery,) = node.journal.deliveries()
        assert delivery.state == "sent" and delivery.attempts >= 3 and delivery.last_error is None
    finally:
        node.stop()
        scp.stop()
    assert len(scp.received()) == 1


def test_bounded_attempts_then_failed(tmp_path):
    files = write_ct_series(tmp_path / "in")
    down = {"ae_title": "NOBODY", "host": "127.0.0.1", "port": free_port()}
    node = _node(tmp_path, destinations={"tps": down},
                 retry={"max_attempts": 3, "initial_delay_seconds": 0.1, "backoff_factor": 2, "max_delay_seconds": 1})
    try:
        assert storescu(files, node.port).returncode == 0
        assert _wait(lambda: [j.state for j in node.journal.jobs()] == [FAILED], timeout=30)
        (delivery,) = node.journal.deliveries()
        assert (delivery.state, delivery.attempts) == ("failed", 3)
        assert node.journal.job(delivery.job_id).result_path  # the result is kept for a manual resend
    finally:
        node.stop()


def test_restart_delivers_what_was_pending_exactly_once(tmp_path):
    """Stop the node while results wait for a destination that is down, restart with it up: each result once."""
    series = [write_ct_series(tmp_path / f"in{i}") for i in range(3)]
    scp = StoreSCP(tmp_path / "received")
    options = dict(destinations={"tps": scp.destination()},
                   retry={"max_attempts": 50, "initial_delay_seconds": 0.2, "backoff_factor": 1, "max_delay_seconds": 0.2})
    node = _node(tmp_path, **options)
    for files in series:
        assert storescu(files, node.port).returncode == 0
    assert _wait(lambda: len(node.journal.deliveries()) == 3)
    node.stop()
    # instance files that were stored but not journaled when the node died, and a half-written temporary
    for extra in write_ct_series(tmp_path / "in-extra"):
        ds = pydicom.dcmread(extra)
        orphan = node.storage.instance_path(ds.SeriesInstanceUID, ds.SOPInstanceUID)
        orphan.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(extra, orphan)
    (orphan.parent / ".tmp-0000-half.dcm").write_bytes(b"half")
    with scp:
        node = _node(tmp_path, **options)
        try:
            assert _wait(lambda: not node.pending() and len(node.journal.jobs()) == 4, timeout=30)
            assert [j.state for j in node.journal.jobs()] == [DONE] * 4
            assert len(node.journal.job_instances(node.journal.jobs()[-1])) == 5   # the adopted series
        finally:
            node.stop()
        assert not (orphan.parent / ".tmp-0000-half.dcm").exists()
        received = scp.received()
    assert len(received) == 4 and len({ds.SOPInstanceUID for ds in received}) == 4


def _self_signed(tmp_path):
    x509 = pytest.importorskip("cryptography.x509", reason="TLS test needs cryptography (pip install cryptography)")
    import datetime
    import ipaddress

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "promptseg-node-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "node.crt", tmp_path / "node.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_node_and_tls_destination(tmp_path):
    """The node listens with TLS and sends its result over TLS to a pynetdicom SCP that checks the node's certificate."""
    import ssl

    from pynetdicom import evt
    from pynetdicom.sop_class import RTStructureSetStorage

    cert, key = _self_signed(tmp_path)
    received = []
    dest_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    dest_context.load_cert_chain(str(cert), str(key))
    dest_context.load_verify_locations(cafile=str(cert))
    dest_context.verify_mode = ssl.CERT_REQUIRED        # the destination wants the node's client certificate
    dest_ae = AE(ae_title="TLS_TPS")
    dest_ae.add_supported_context(RTStructureSetStorage)
    dest_port = free_port()
    server = dest_ae.start_server(("127.0.0.1", dest_port), block=False, ssl_context=dest_context,
                                  evt_handlers=[(evt.EVT_C_STORE, lambda event: received.append(event.dataset) or 0x0000)])
    tls_client = {"ca_certificates": str(cert), "certificate": str(cert), "private_key": str(key)}
    node = _node(tmp_path, tls={"certificate": str(cert), "private_key": str(key), "ca_certificates": str(cert),
                                "require_client_certificate": True},
                 destinations={"tps": {"ae_title": "TLS_TPS", "host": "127.0.0.1", "port": dest_port, "tls": tls_client}})
    try:
        plain = _associate(node.port)
        assert not plain.is_established                    # no TLS: no association
        client = ssl.create_default_context(cafile=str(cert))
        client.load_cert_chain(str(cert), str(key))
        assoc = _associate(node.port, tls_args=(client, "127.0.0.1"))
        assert assoc.is_established
        for path in write_ct_series(tmp_path / "in"):
            assert assoc.send_c_store(pydicom.dcmread(path)).Status == 0x0000
        assoc.release()
        assert _wait(lambda: [j.state for j in node.journal.jobs()] == [DONE])
    finally:
        node.stop()
        server.shutdown()
    assert len(received) == 1 and received[0].Modality == "RTSTRUCT"


def test_rules_pick_prompts_and_outputs_and_unmatched_series_are_quarantined(tmp_path):
    prompt_file = tmp_path / "prompts.json"
    prompt_file.write_text('{"objects": [{"slice": 2, "box": [16, 16, 48, 48], "label": 3, "name": "FromFile"}]}')
    out = tmp_path / "out"
    rules = [
        {"name": "planning", "match": {"modality": ["CT"], "calling_ae": ["PLANNING"]},
         "prompt_file": str(prompt_file), "output": {"format": "seg", "folder": str(out)}},
        {"name": "thorax", "match": {"series_description": ".*thorax.*"},
         "prompts": [{"box": [16, 16, 48, 48], "name": "Boxed"}], "output": {"folder": str(out)}},
    ]
    planning = write_ct_series(tmp_path / "in1", description="ABDOMEN")
    thorax = write_ct_series(tmp_path / "in2", description="CT Thorax 5mm")
    nothing = write_ct_series(tmp_path / "in3", description="ABDOMEN")
    node = _node(tmp_path, rules=rules)
    try:
        assert storescu(planning, node.port, calling="PLANNING").returncode == 0
        assert storescu(thorax, node.port).returncode == 0
        assert storescu(nothing, node.port).returncode == 0
        assert _wait(lambda: len(node.journal.jobs()) == 3 and not node.pending())
        first, second, third = node.journal.jobs()
    finally:
        node.stop()
    assert (first.state, first.rule, second.state, second.rule) == (DONE, "planning", DONE, "thorax")
    assert third.state == QUARANTINED
    assert third.reason == ("no rule matches this series (modality CT, calling AE CT_SCANNER, body part 'CHEST', "
                            "series description 'ABDOMEN')")
    from promptseg.io.dicom import read_dicom_series, read_rtstruct, read_seg

    seg = read_seg(out / f"{first.series_uid}-v1-seg.dcm", read_dicom_series(planning[0].parent))
    rtstruct = read_rtstruct(out / f"{second.series_uid}-v1-rtstruct.dcm", read_dicom_series(thorax[0].parent))
    assert [roi.name for roi in seg.rois] == ["FromFile"] and seg.labels.array.any()
    assert [roi.name for roi in rtstruct.rois] == ["Boxed"] and rtstruct.labels.array.any()
    # the same stand-in model and box on the same pixels: the same mask, through SEG and through RTSTRUCT
    assert (seg.labels.array > 0).sum() == (rtstruct.labels.array > 0).sum()
