"""The ``http`` fuzz target: requests to ``promptseg serve``'s API, replayed through FastAPI's TestClient.

An input is a request document (JSON or YAML, mutated like the prompt files)::

    {"method": "POST", "path": "/api/sessions/{session}/prompt", "json": {...}}
    {"method": "POST", "path": "/api/sessions", "raw": "{not json", "headers": {...}}
    {"method": "POST", "path": "/api/uploads?name=x.nii.gz", "file": "scan.nii.gz" | "zeros": 5000000}

``{session}`` is a live session on a small scan (opened again when an input
closed it), ``{token}`` the server's token (sent unless the document sets
``"token"``). A document that is not such a request -- mutations nest it
100,000 levels deep or replace it by a list -- is sent as the JSON body of a
prompt. The server runs in the worker process with a data folder holding a
NIfTI scan and its label, a DICOM series, a FIFO, a folder, and a link to a
scan outside the folder.

Outcomes: any 5xx, or an exception escaping the app, is *untyped*; a 4xx must
carry ``{"detail": "one line"}`` without control characters (else *untyped*) and counts as *typed*; a
2xx is *accepted* unless its JSON holds NaN/inf or a mask off the image
(*garbage*).
"""

from __future__ import annotations

import atexit
import json
import math
import os
import shutil
import re
import tempfile
import urllib.parse
from pathlib import Path
from typing import Optional

from promptseg.errors import PromptsegError

TOKEN = "fuzz-token-0123456789"
#: bytes of an upload accepted by the fuzzed server
UPLOAD_LIMIT = 2 * 1024**2
#: largest body a document may ask for (``"zeros"``), bytes
MAX_GENERATED = 80 * 1024**2


class Refused(PromptsegError):
    """A 4xx answer with a clear message (the worker checks it is one line)."""


class ServerError(Exception):
    """A 5xx answer, or a 4xx without a one-line message."""


_STATE: dict = {}


def _make_data(root: Path) -> Path:
    """The data folder the fuzzed server may open (see the module docstring)."""
    import SimpleITK as sitk

    from promptseg.io.dicom import write_series
    from promptseg.io.sitk_image import volume_from_sitk

    from .seeds import _crop_volume

    data = root / "data"
    data.mkdir(parents=True)
    image, label = _crop_volume()
    sitk.WriteImage(image, str(data / "scan.nii.gz"), True)
    sitk.WriteImage(label, str(data / "ref.nii.gz"), True)
    sitk.WriteImage(image, str(root / "secret.nii.gz"), True)
    write_series(volume_from_sitk(image, "crop", modality="MR"), data / "series")
    (data / "empty").mkdir()
    os.mkfifo(data / "fifo.nii.gz")
    (data / "link.nii.gz").symlink_to(root / "secret.nii.gz")
    (data / "text.nii.gz").write_bytes(b"not an image\n" * 10)
    return data


def _client():
    if "client" not in _STATE:
        from fastapi.testclient import TestClient

        from promptseg.server import Settings, create_app
        from tests.fakes import ThresholdSegmenter

        root = Path(tempfile.mkdtemp(prefix="promptseg-fuzz-http-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
        atexit.register(shutil.rmtree, root, True)
        data = _make_data(root)
        settings = Settings(data_dirs=[data], token=TOKEN, upload_limit=UPLOAD_LIMIT, max_sessions=6,
                            output_dir=root / "out", segmenter_factory=lambda name: ThresholdSegmenter(), prefetch=0)
        (root / "out").mkdir()
        _STATE.update(client=TestClient(create_app(settings)), data=data, session=None)
    return _STATE["client"]


def _session(client) -> str:
    """A live session on ``scan.nii.gz`` (opened again when an input closed it or it expired)."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    session = _STATE.get("session")
    if session is None or client.get(f"/api/sessions/{session}", headers=auth).status_code != 200:
        answer = client.post("/api/sessions", json={"path": "scan.nii.gz"}, headers=auth)
        if answer.status_code == 429:  # inputs opened the most sessions: close them all
            for entry in list(_STATE.get("opened", [])):
                client.delete(f"/api/sessions/{entry}", headers=auth)
            _STATE["opened"] = []
            answer = client.post("/api/sessions", json={"path": "scan.nii.gz"}, headers=auth)
        session = answer.json()["id"]
        _STATE["session"] = session
    return session


def _text(value, session: str) -> str:
    return str(value).replace("{session}", session).replace("{token}", TOKEN)


_UNSENDABLE = re.compile(r"[^\x21-\x7e]")


def _sendable(text: str) -> str:
    """``text`` with what no HTTP client puts in a URL or header (controls, spaces, non-ASCII) percent-encoded,
    as a client would send it (httpx refuses such a URL or header itself, before the server sees it)."""
    return _UNSENDABLE.sub(lambda m: urllib.parse.quote(m.group(), safe=""), text)


def _request(document, session: str) -> dict:
    """httpx arguments for ``document`` (see the module docstring)."""
    if isinstance(document, str):
        return {"method": "POST", "url": f"/api/sessions/{session}/prompt", "content": document.encode("utf-8", "replace"),
                "headers": {"content-type": "application/json", "Authorization": f"Bearer {TOKEN}"}}
    if not (isinstance(document, dict) and isinstance(document.get("path"), str) and document["path"].startswith("/")):
        return {"method": "POST", "url": f"/api/sessions/{session}/prompt", "content": json.dumps(document),
                "headers": {"content-type": "application/json", "Authorization": f"Bearer {TOKEN}"}}
    method = document.get("method") if isinstance(document.get("method"), str) else "GET"
    headers = {}
    if isinstance(document.get("headers"), dict):
        headers = {_sendable(str(k)[:100]) or "x": _sendable(_text(v, session)[:1000]) for k, v in document["headers"].items()}
    token = document.get("token", "{token}")
    if token is not None:
        headers.setdefault("Authorization", f"Bearer {_sendable(_text(token, session))}")
    request = {"method": _sendable(method.upper()[:10]) or "GET", "url": _sendable(_text(document["path"], session)),
               "headers": headers}
    if "json" in document:
        request["content"] = json.dumps(document["json"], allow_nan=True)
        headers.setdefault("content-type", "application/json")
    elif "raw" in document:
        request["content"] = _text(document["raw"], session).encode("utf-8", "surrogatepass")
    elif "file" in document:
        name = Path(str(document["file"])).name
        path = _STATE["data"] / name
        request["content"] = path.read_bytes() if path.is_file() else b""
    elif "zeros" in document:
        count = document["zeros"]
        count = int(count) if isinstance(count, (int, float)) and math.isfinite(count) else 0
        request["content"] = bytes(max(0, min(count, MAX_GENERATED)))
    return request


def _strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"{constant} in a JSON answer")

    return json.loads(text, parse_constant=refuse)


def _check_answer(url: str, body) -> Optional[str]:
    """What is wrong with a 2xx JSON answer, or None."""
    if not isinstance(body, dict):
        return None
    if url.endswith("/prompt"):
        shape = _STATE.get("shape")
        if shape and not 0 <= body.get("slice", -1) < shape[0]:
            return f"prompt answered for slice {body.get('slice')} of an image with {shape[0]} slices"
        bbox = (body.get("mask") or {}).get("bbox")
        if bbox and shape and not (0 <= bbox[0] <= bbox[2] < shape[2] and 0 <= bbox[1] <= bbox[3] < shape[1]):
            return f"mask bbox {bbox} off the {shape[2]} x {shape[1]} slice"
    if "shape" in body and isinstance(body.get("id"), str) and body.get("path") == "scan.nii.gz":
        _STATE["shape"] = body["shape"]
        _STATE.setdefault("opened", []).append(body["id"])
    return None


def call(path: Path, labels: bool) -> Optional[str]:
    """Send the request document in ``path``; see the module docstring for the outcome."""
    import yaml

    client = _client()
    session = _session(client)
    if "shape" not in _STATE:
        _check_answer("", client.get(f"/api/sessions/{session}", headers={"Authorization": f"Bearer {TOKEN}"}).json())
    text = path.read_bytes().decode("utf-8", "replace")
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        try:  # mutations write half of the documents as YAML; a large one is sent as it is (YAML parses slowly)
            document = yaml.safe_load(text) if len(text) < 65536 else text
        except (yaml.YAMLError, RecursionError, ValueError):
            document = text
    request = _request(document, session)
    answer = client.request(**request)
    status = answer.status_code
    content_type = answer.headers.get("content-type", "")
    if status >= 500:
        raise ServerError(f"HTTP {status} for {request['method']} {request['url'][:100]}: {answer.text[:300]}")
    if status >= 400:
        try:
            detail = _strict_json(answer.text).get("detail")
        except (ValueError, AttributeError):
            detail = None
        if not isinstance(detail, str) or not detail.strip() or any(ch < " " or ch == "\x7f" for ch in detail):
            raise ServerError(f"HTTP {status} without a one-line detail: {answer.text[:300]}")
        raise Refused(f"HTTP {status}: {detail}")
    if "ndjson" in content_type:
        for line in answer.text.splitlines():
            try:
                event = _strict_json(line)
            except ValueError as error:
                return f"NDJSON line is not strict JSON ({error})"
            if event.get("type") == "error":
                raise Refused(f"HTTP {status} stream error: {event.get('message')}")
    elif "json" in content_type:
        try:
            return _check_answer(request["url"], _strict_json(answer.text))
        except ValueError as error:
            return f"answer is not strict JSON ({error})"
    return None
