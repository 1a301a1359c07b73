"""promptseg serve's HTTP API through FastAPI's TestClient: life cycle, results, concurrency, and refusals."""

import json
import os
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

import promptseg  # noqa: E402
from promptseg.prompts import box_from_mask, make_object  # noqa: E402
from promptseg.inference import compose_labels, propagate  # noqa: E402
from promptseg.server import Settings, create_app  # noqa: E402
from promptseg.server.masks import decode_mask, encode_mask  # noqa: E402
from promptseg.volume import Volume  # noqa: E402

from fakes import ThresholdSegmenter, ball  # noqa: E402

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SHAPE = (20, 48, 64)


def _objects():
    """Ten small bright balls in a 2 x 5 grid on slice 10, each a little brighter than the one before, uint8."""
    balls = []
    for i in range(10):
        row, col = divmod(i, 5)
        balls.append(ball(SHAPE, (10, 12 + 24 * row, 7 + 12 * col), 3 + (i % 3) * 0.5))
    image = np.full(SHAPE, 30, np.uint8)
    for i, b in enumerate(balls):
        image[b] = 150 + 10 * i
    return image, balls


@pytest.fixture()
def data(tmp_path):
    image, balls = _objects()
    folder = tmp_path / "data"
    folder.mkdir()
    volume = Volume(image, spacing=(0.8, 0.9, 2.0), origin=(5.0, -3.0, 12.0))
    promptseg.save_volume(volume, folder / "scan.nii.gz")
    promptseg.save_mask(balls[0].astype(np.uint8), folder / "ref.nii.gz", reference=volume)
    (tmp_path / "secret.nii.gz").write_bytes((folder / "scan.nii.gz").read_bytes())
    return folder, promptseg.load_volume(folder / "scan.nii.gz"), balls  # as stored (NIfTI keeps float32 geometry)


def _client(folder, **kw):
    kw.setdefault("token", TOKEN)
    settings = Settings(data_dirs=[folder], segmenter_factory=lambda name: ThresholdSegmenter(), prefetch=0, **kw)
    return TestClient(create_app(settings))


def _open(client, path="scan.nii.gz"):
    r = client.post("/api/sessions", json={"path": path}, headers=AUTH)
    assert r.status_code == 201, r.text
    return r.json()


def _propagate(client, sid, label=1):
    with client.stream("POST", f"/api/sessions/{sid}/propagate", json={"label": label}, headers=AUTH) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in r.iter_lines() if line]


def test_mask_encoding_round_trips_and_rejects_malformed_input():
    rng = np.random.default_rng(0)
    mask = np.zeros((40, 50), bool)
    mask[5:17, 9:30] = rng.random((12, 21)) > 0.4
    encoded = encode_mask(mask)
    assert encoded["bbox"][0] >= 9 and encoded["bbox"][3] <= 16
    assert np.array_equal(decode_mask(encoded, mask.shape), mask)
    assert encode_mask(np.zeros((3, 3), bool)) == {"bbox": None, "bits": ""}
    with pytest.raises(promptseg.PromptsegError, match="outside the slice"):
        decode_mask({"bbox": [0, 0, 60, 5], "bits": ""}, mask.shape)
    with pytest.raises(promptseg.PromptsegError, match="expected"):
        decode_mask({"bbox": [0, 0, 9, 9], "bits": "AAAA"}, mask.shape)


def test_session_life_cycle_prompt_propagate_undo_export(data, tmp_path):
    folder, volume, balls = data
    with _client(folder, output_dir=tmp_path / "out") as client:
        info = _open(client)
        sid = info["id"]
        assert info["shape"] == list(SHAPE) and info["spacing"] == pytest.approx([0.8, 0.9, 2.0])
        assert info["origin"] == pytest.approx([5.0, -3.0, 12.0])
        box = box_from_mask(balls[3][10])
        r = client.post(f"/api/sessions/{sid}/prompt", json={"label": 1, "slice": 10, "box": list(box)}, headers=AUTH)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["slice"] == 10 and body["score"] == pytest.approx(0.9)
        assert np.array_equal(decode_mask(body["mask"], SHAPE[1:]), balls[3][10])
        assert body["masks"].keys() == {"1"}
        events = _propagate(client, sid)
        assert events[-1]["type"] == "done" and events[-1]["directions"] == ["up", "down"]
        (expected,), _ = propagate(ThresholdSegmenter(), volume.array, [make_object(slice=10, box=box)],
                                   spacing_xy=volume.spacing[:2], slice_thickness=volume.spacing[2])
        assert events[-1]["stops"] == {d: str(stop) for d, stop in expected.stops.items()}
        streamed = np.zeros(SHAPE, bool)
        for e in events[:-1]:
            streamed[e["slice"]] = decode_mask(e["mask"], SHAPE[1:])
        assert np.array_equal(streamed, compose_labels([expected], SHAPE) == 1)
        assert streamed[10].sum() and np.array_equal(streamed[10], balls[3][10])
        # the label map over HTTP is on the scan's grid
        r = client.get(f"/api/sessions/{sid}/labels.nii.gz", headers=AUTH)
        (tmp_path / "labels.nii.gz").write_bytes(r.content)
        back = promptseg.load_labels(tmp_path / "labels.nii.gz", reference=volume)
        assert np.array_equal(back.array == 1, streamed)
        # the image for the viewer: same voxels, same grid
        (tmp_path / "image.nii.gz").write_bytes(client.get(f"/api/sessions/{sid}/image.nii.gz", headers=AUTH).content)
        image = promptseg.load_volume(tmp_path / "image.nii.gz")
        assert image.same_grid(volume) and np.array_equal(image.array, volume.array)
        # undo the propagation, redo it
        r = client.post(f"/api/sessions/{sid}/undo", headers=AUTH)
        assert r.json()["label"] == 1 and r.json()["labels"][0]["slices"] == [10]
        r = client.post(f"/api/sessions/{sid}/redo", headers=AUTH)
        assert r.json()["labels"][0]["slices"] == sorted(expected.logits)
        # export: a NIfTI on the grid, never overwriting an earlier export
        r = client.post(f"/api/sessions/{sid}/export", json={"format": "nii.gz"}, headers=AUTH)
        assert r.status_code == 201, r.text
        first = r.json()
        second = client.post(f"/api/sessions/{sid}/export", json={"format": "nii.gz"}, headers=AUTH).json()
        assert first["name"] == "scan_labels.nii.gz" and second["name"] == "scan_labels-1.nii.gz"
        exported = promptseg.load_labels(tmp_path / "out" / first["name"], reference=volume)
        assert exported.same_grid(volume) and np.array_equal(exported.array, back.array)
        download = client.get(first["download"], headers=AUTH)
        assert download.status_code == 200 and download.content == (tmp_path / "out" / first["name"]).read_bytes()
        r = client.post(f"/api/sessions/{sid}/export", json={"format": "rtstruct"}, headers=AUTH)
        assert r.status_code in (422, 501) and "RTSTRUCT" in r.json()["detail"]
        # compare with a reference
        r = client.post(f"/api/sessions/{sid}/reference", json={"path": "ref.nii.gz"}, headers=AUTH)
        assert r.json()["labels"]["1"] == pytest.approx(promptseg.dice(balls[3], balls[0]))
        # close
        assert client.delete(f"/api/sessions/{sid}", headers=AUTH).status_code == 204
        r = client.post(f"/api/sessions/{sid}/prompt", json={"slice": 10, "box": list(box)}, headers=AUTH)
        assert r.status_code == 404 and "was closed" in r.json()["detail"]


def test_correction_repropagates_and_edits_are_undoable(data):
    folder, volume, balls = data
    with _client(folder) as client:
        sid = _open(client)["id"]
        box = box_from_mask(balls[2][10])
        client.post(f"/api/sessions/{sid}/prompt", json={"slice": 10, "box": list(box)}, headers=AUTH)
        _propagate(client, sid)
        # a negative point on slice 8 next to a correction box shrinking the object there
        x0, y0, x1, y1 = box_from_mask(balls[2][8])
        small = [x0 + 1, y0 + 1, x1 - 1, y1 - 1]
        r = client.post(f"/api/sessions/{sid}/prompt", json={"slice": 8, "box": small}, headers=AUTH)
        corrected = decode_mask(r.json()["mask"], SHAPE[1:])
        assert corrected.sum() < balls[2][8].sum()
        events = _propagate(client, sid)
        assert events[-1]["directions"] == ["down"] and events[-1]["start"] == 8
        assert all(e["slice"] <= 8 for e in events[:-1])
        # brush: paint label 2 on slice 3
        paint = np.zeros(SHAPE[1:], bool)
        paint[2:6, 2:9] = True
        r = client.post(f"/api/sessions/{sid}/edit",
                        json={"label": 2, "slices": [{"slice": 3, **encode_mask(paint)}]}, headers=AUTH)
        assert r.status_code == 200, r.text
        assert np.array_equal(decode_mask(r.json()["slices"][0]["mask"], SHAPE[1:]), paint)
        r = client.put(f"/api/sessions/{sid}/labels/2", json={"name": "vessel", "color": [1, 2, 3]}, headers=AUTH)
        assert r.json()["name"] == "vessel" and r.json()["color"] == [1, 2, 3]
        r = client.post(f"/api/sessions/{sid}/undo", headers=AUTH)
        assert r.json()["label"] == 2
        assert [lab["value"] for lab in r.json()["labels"]] == [1]  # label 2 came with the edit


def test_twenty_concurrent_sessions_get_their_own_masks(data):
    folder, volume, balls = data
    with _client(folder, max_sessions=20) as client:
        ids = [_open(client)["id"] for _ in range(20)]
        results, errors = {}, []
        expected = {}
        for i in range(10):
            (res,), _ = propagate(ThresholdSegmenter(), volume.array, [make_object(slice=10, box=box_from_mask(balls[i][10]))],
                                  spacing_xy=volume.spacing[:2], slice_thickness=volume.spacing[2])
            expected[i] = compose_labels([res], SHAPE) == 1
            assert expected[i][10].sum() and np.array_equal(expected[i][10], balls[i][10])  # ten different objects

        def work(i):
            try:
                box = box_from_mask(balls[i % 10][10])
                r = client.post(f"/api/sessions/{ids[i]}/prompt", json={"slice": 10, "box": list(box)}, headers=AUTH)
                assert r.status_code == 200, r.text
                events = _propagate(client, ids[i])
                got = np.zeros(SHAPE, bool)
                for e in events[:-1]:
                    got[e["slice"]] = decode_mask(e["mask"], SHAPE[1:])
                results[i] = np.array_equal(got, expected[i % 10])
            except Exception as error:  # reported below
                errors.append(error)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        assert results == {i: True for i in range(20)}
        r = client.post("/api/sessions", json={"path": "scan.nii.gz"}, headers=AUTH)
        assert r.status_code == 429 and "20 sessions" in r.json()["detail"]


# -- refusals ------------------------------------------------------------------
@pytest.fixture()
def no_reads(monkeypatch):
    """Fail the test if the server opens an image or a label map."""
    import promptseg.io as io
    import promptseg.io.readers as readers

    def forbidden(*args, **kwargs):
        raise AssertionError(f"the server read {args[0]!r}")

    for module in (io, readers):
        monkeypatch.setattr(module, "load_volume", forbidden)
        monkeypatch.setattr(module, "load_labels", forbidden)


@pytest.mark.parametrize(
    "path, status, message",
    [
        ("../secret.nii.gz", 403, "'..' is not allowed"),
        ("sub/../../secret.nii.gz", 403, "'..' is not allowed"),
        ("/etc/passwd", 403, "relative to a data folder"),
        ("~/x.nii.gz", 403, "relative to a data folder"),
        ("escape.nii.gz", 403, "leads outside the data folders"),
        ("escape_dir/secret.nii.gz", 403, "leads outside the data folders"),
        ("a\\..\\secret.nii.gz", 403, "backslash"),
        ("missing.nii.gz", 404, "not found"),
    ],
)
def test_paths_outside_the_data_folders_are_refused_before_anything_is_read(data, no_reads, path, status, message):
    folder, _, _ = data
    os.symlink(folder.parent / "secret.nii.gz", folder / "escape.nii.gz")
    os.symlink(folder.parent, folder / "escape_dir")
    with _client(folder) as client:
        r = client.post("/api/sessions", json={"path": path}, headers=AUTH)
        assert r.status_code == status and message in r.json()["detail"]
        files = [f["path"] for f in client.get("/api/files", headers=AUTH).json()["files"]]
        assert files == ["ref.nii.gz", "scan.nii.gz"]  # links out of the folder are not listed


@pytest.mark.parametrize("headers, message", [
    ({}, "missing token"),
    ({"Authorization": "Bearer wrong"}, "wrong token"),
    ({"Authorization": f"Basic {TOKEN}"}, "missing token"),
])
def test_every_api_call_needs_the_token(data, no_reads, headers, message):
    folder, _, _ = data
    with _client(folder) as client:
        for method, url, body in [
            ("post", "/api/sessions", {"path": "scan.nii.gz"}),
            ("get", "/api/files", None),
            ("get", "/api/info", None),
            ("post", "/api/sessions/x/prompt", {"slice": 1, "box": [1, 1, 5, 5]}),
            ("get", "/api/sessions/x/labels.nii.gz", None),
        ]:
            r = client.request(method, url, json=body, headers=headers)
            assert r.status_code == 401 and r.json()["detail"].startswith(message)
            assert r.headers["www-authenticate"] == "Bearer"
        assert client.get("/openapi.json").status_code == 200


def test_uploads_are_off_by_default_and_bounded_when_on(data, no_reads, tmp_path):
    folder, _, _ = data
    payload = (folder / "scan.nii.gz").read_bytes()
    with _client(folder) as client:
        r = client.post("/api/uploads?name=scan.nii.gz", content=payload, headers=AUTH)
        assert r.status_code == 403 and "uploads are off" in r.json()["detail"]
    limit = len(payload) // 2
    with _client(folder, upload_limit=limit) as client:
        store = client.app.state.store
        r = client.post("/api/uploads?name=scan.nii.gz", content=payload, headers=AUTH)
        assert r.status_code == 413 and f"exceeds the limit of {limit} bytes" in r.json()["detail"]

        def chunks():  # no Content-Length: the limit is enforced while reading
            for start in range(0, len(payload), 100):
                yield payload[start:start + 100]

        r = client.post("/api/uploads?name=scan.nii.gz", content=chunks(), headers=AUTH)
        assert r.status_code == 413
        assert list(store.upload_dir.iterdir()) == []  # nothing kept


def test_an_upload_within_the_limit_opens_a_session(data):
    folder, volume, _ = data
    payload = (folder / "scan.nii.gz").read_bytes()
    with _client(folder, upload_limit=len(payload)) as client:
        r = client.post("/api/uploads?name=../../my%20scan.nii.gz", content=payload, headers=AUTH)
        assert r.status_code == 201, r.text
        assert r.json()["shape"] == list(SHAPE) and r.json()["path"] == "upload:my_scan.nii.gz"


def test_idle_sessions_expire_with_a_clear_message(data):
    folder, _, _ = data
    with _client(folder, idle_timeout=0.3) as client:
        sid = _open(client)["id"]
        time.sleep(0.6)
        r = client.get(f"/api/sessions/{sid}", headers=AUTH)
        assert r.status_code == 404
        assert r.json()["detail"] == f"session {sid} expired after 0.3 s without use: open the scan again"
        r = client.get("/api/sessions/nonexistent", headers=AUTH)
        assert r.status_code == 404 and "no session nonexistent" in r.json()["detail"]


def test_bad_requests_get_one_line_errors(data):
    folder, _, _ = data
    with _client(folder) as client:
        sid = _open(client)["id"]
        r = client.post(f"/api/sessions/{sid}/prompt", json={"slice": 10, "box": [1, 1, 500, 5]}, headers=AUTH)
        assert r.status_code == 422 and "outside the image" in r.json()["detail"]
        r = client.post(f"/api/sessions/{sid}/prompt", json={"slice": 10}, headers=AUTH)
        assert r.status_code == 422 and "box or at least one point" in r.json()["detail"]
        r = client.post(f"/api/sessions/{sid}/propagate", json={"label": 3}, headers=AUTH)
        assert r.status_code == 422 and "no label 3" in r.json()["detail"]
        r = client.post("/api/sessions", json={"path": "scan.nii.gz", "model": "nope"}, headers=AUTH)
        assert r.status_code == 422 and "not served here" in r.json()["detail"]
        r = client.get(f"/api/sessions/{sid}/exports/..%2Fscan.nii.gz", headers=AUTH)
        assert r.status_code in (403, 404)


def test_invalid_requests_get_typed_one_line_errors_never_a_traceback(data):
    folder, _, _ = data
    json_type = {**AUTH, "content-type": "application/json"}
    with _client(folder) as client:
        sid = _open(client)["id"]
        url = f"/api/sessions/{sid}/prompt"
        r = client.post(url, json={"slice": -1, "box": [1, 2, 3], "colour": 1}, headers=AUTH)
        assert r.status_code == 422
        assert r.json()["detail"] == ("invalid request: body.slice: Input should be greater than or equal to 0; "
                                      "body.box: List should have at least 4 items after validation, not 3; "
                                      "body.colour: Extra inputs are not permitted")
        for content, status, message in [
            (b'{"slice": 1', 422, "invalid request: body.11: JSON decode error"),
            (b"[" * 50000 + b"]" * 50000, 400, "There was an error parsing the body"),
            (b"\xff\xfe{", 400, "There was an error parsing the body"),
            (b'{"slice": 2, "box": [NaN, 0, 5, 5]}', 422, "needs x0 < x1"),
        ]:
            r = client.post(url, content=content, headers=json_type)
            assert r.status_code == status and message in r.json()["detail"], r.text
            assert "\n" not in r.json()["detail"] and "Traceback" not in r.text
        r = client.post("/api/sessions", json={"path": "a" * 5000}, headers=AUTH)
        assert r.status_code == 404 and r.json()["detail"].endswith("...: File name too long")
        r = client.post(url, content=b'{"slice": 1, "box": [1, 1, 5, 5], "js\x7fn": 1}', headers=json_type)
        assert r.status_code == 422 and r.json()["detail"] == "invalid request: body.js\\x7fn: Extra inputs are not permitted"
        r = client.get("/api/sessions/ses%7Fion%0A", headers=AUTH)  # found by the http fuzz target: DEL echoed
        assert r.status_code == 404 and r.json()["detail"].startswith("no session ses\\x7fion\\n (it may have expired")


def test_json_bodies_over_the_limit_are_refused_before_they_are_read_whole(data):
    folder, _, _ = data
    with _client(folder, body_limit=1000) as client:
        store = client.app.state.store
        r = client.post("/api/sessions", content=b" " * 1001, headers={**AUTH, "content-type": "application/json"})
        assert r.status_code == 413 and r.json() == {"detail": "request body larger than 1000 bytes"}
        r = client.post("/api/sessions", content=(b" " * 100 for _ in range(11)),  # no Content-Length
                        headers={**AUTH, "content-type": "application/json"})
        assert r.status_code == 413
        r = client.post("/api/sessions", content=b" " * 990 + b'{"path": "scan.nii.gz"}', headers=AUTH)
        assert r.status_code == 413  # whitespace counts
        assert client.post("/api/sessions", json={"path": "scan.nii.gz"}, headers=AUTH).status_code == 201
        assert len(store) == 1


def test_a_streamed_body_is_refused_as_soon_as_it_passes_the_limit():
    """At the ASGI level (TestClient buffers a request): the rest of the body is never asked for."""
    import asyncio

    from promptseg.server.limits import BodyLimit

    asked, sent, reached = [], [], []

    async def receive():
        asked.append(1)
        return {"type": "http.request", "body": b" " * 100, "more_body": True}

    async def send(message):
        sent.append(message)

    async def endpoint(scope, receive, send):
        reached.append(1)

    scope = {"type": "http", "path": "/api/sessions", "headers": [(b"content-type", b"application/json")]}
    asyncio.run(BodyLimit(endpoint, limit=1000)(scope, receive, send))
    assert len(asked) == 11 and not reached
    assert sent[0]["status"] == 413 and json.loads(sent[1]["body"]) == {"detail": "request body larger than 1000 bytes"}
    asked.clear()
    scope["headers"].append((b"content-length", b"5000000"))
    asyncio.run(BodyLimit(endpoint, limit=1000)(scope, receive, send))
    assert asked == [] and not reached


def test_the_page_is_served_with_a_strict_content_policy(data):
    folder, _, _ = data
    with _client(folder) as client:
        r = client.get("/")
        assert r.status_code == 200 and "<canvas" in r.text
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assert "http" not in r.text.split("<body", 1)[0].replace("http-equiv", "")  # no remote resources


# -- the real model ------------------------------------------------------------
@pytest.mark.slow
def test_prompt_and_propagation_over_http_equal_the_library_on_the_bundled_ct(tmp_path):
    from datafiles import image
    from model_cache import case, litemedsam

    volume, reference = case("lung1")
    settings = Settings(data_dirs=[image("lung1").parent], token=TOKEN,
                        segmenter_factory=lambda name: litemedsam(), prefetch=0)
    box = [206, 347, 229, 368]
    with TestClient(create_app(settings)) as client:
        sid = _open(client, "lung1_image.nrrd")["id"]
        r = client.post(f"/api/sessions/{sid}/prompt", json={"slice": 33, "box": box}, headers=AUTH)
        mask33 = decode_mask(r.json()["mask"], volume.shape[1:])
        events = _propagate(client, sid)
    library = promptseg.segment(volume, make_object(slice=33, box=box), litemedsam())
    assert np.array_equal(mask33, library.mask(1)[33])
    got = np.zeros(volume.shape, bool)
    for e in events[:-1]:
        got[e["slice"]] = decode_mask(e["mask"], volume.shape[1:])
    assert np.array_equal(got, library.mask(1))
    assert events[-1]["stops"] == {d: str(stop) for d, stop in library.objects[0].stops.items()}
    assert events[-1]["reasons"] == {d: stop.reason.name for d, stop in library.objects[0].stops.items()}
    assert promptseg.dice(got, reference) == pytest.approx(0.795, abs=0.001)


def test_promptseg_serve_command_line_errors_are_one_line(tmp_path, capsys):
    from promptseg.cli import main

    assert main(["serve", "--data", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip() == f"promptseg: error: --data {tmp_path / 'missing'}: not a folder"
    assert main(["serve", "--data", str(tmp_path), "--token", "x", "--no-token"]) == 2
    assert "not both" in capsys.readouterr().err


@pytest.mark.slow
def test_promptseg_serve_prints_a_url_whose_token_opens_the_api(tmp_path):
    """The real command: starts, loads the model, prints the URL, answers only with its token."""
    import socket
    import subprocess
    import sys

    import httpx

    from datafiles import REPO

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(REPO), PROMPTSEG_TOKEN="from-the-environment")
    server = subprocess.Popen(
        [sys.executable, "-m", "promptseg.cli", "serve", "--data", str(REPO / "promptseg" / "data"), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lines = []
        for line in server.stdout:
            lines.append(line)
            if "open http" in line:
                break
        url = lines[-1].split("open ", 1)[1].strip()
        assert url == f"http://127.0.0.1:{port}/?token=from-the-environment"
        base = url.split("?", 1)[0].rstrip("/")
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(f"{base}/api/info", headers={"Authorization": "Bearer from-the-environment"})
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert response.status_code == 200 and response.json()["models"] == ["litemedsam"]
        assert httpx.get(f"{base}/api/info").status_code == 401
        assert "<canvas" in httpx.get(url).text
    finally:
        server.terminate()
        server.wait(30)


def test_file_listing_shows_images_and_dicom_folders_but_not_hidden_or_outside(tmp_path):
    import shutil as _shutil

    from datafiles import CT_SLICE
    from promptseg.server.paths import list_data_files

    root = tmp_path / "data"
    (root / "series1").mkdir(parents=True)
    _shutil.copy(CT_SLICE, root / "series1" / "ct.0.dcm")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "x.nii.gz").write_bytes(b"x")
    (root / "notes.txt").write_text("not an image")
    (root / "a.nrrd").write_bytes(b"x")
    (tmp_path / "outside.nii.gz").write_bytes(b"x")
    os.symlink(tmp_path / "outside.nii.gz", root / "link.nii.gz")
    listed = list_data_files([root])
    assert [(f["path"], f["kind"]) for f in listed] == [("a.nrrd", "file"), ("series1", "dicom")]
    assert len(list_data_files([root], limit=1)) == 1
