"""The HTTP API and the page of ``promptseg serve`` (FastAPI).

All coordinates are IJK voxel indices as everywhere in promptseg (``x`` =
column, ``y`` = row, ``slice`` = z). Masks travel as
:mod:`promptseg.server.masks` (bounding box + packed bits). Every ``/api`` call
needs ``Authorization: Bearer <token>`` when the server has a token; the page
gets it from the ``?token=`` of the URL the server prints.

Propagation answers with NDJSON (one JSON object per line, flushed per slice):
unlike server-sent events (``EventSource``) it works with a POST body and an
``Authorization`` header from ``fetch``, and any HTTP client can read it line
by line.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Optional

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from .. import __version__
from ..errors import PromptError, PromptsegError
from ..session import PropagationDone, SessionBusy, SliceResult
from .limits import BodyLimit, validation_message
from .masks import decode_mask, encode_label_slice, encode_mask
from .paths import PathNotFound, PathRefused, list_data_files, resolve_data_path
from .schemas import EditBody, ExportBody, FocusBody, LabelBody, LabelUpdate, OpenSession, PromptBody, ReferenceBody
from .settings import Settings
from .store import Entry, SessionGone, SessionStore, TooManySessions

STATIC = Path(__file__).parent / "static"
#: how often idle sessions are looked for, seconds
SWEEP_INTERVAL = 30.0

_STATUS = (
    (PathRefused, 403),
    (PathNotFound, 404),
    (SessionGone, 404),
    (SessionBusy, 409),
    (TooManySessions, 429),
    (PromptsegError, 422),
)


def create_app(settings: Settings) -> FastAPI:
    """The ASGI app serving the API under ``/api`` and the page at ``/``."""
    store = SessionStore(settings)
    stop = threading.Event()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        sweeper = threading.Thread(target=_sweep, args=(store, stop), name="promptseg-expiry", daemon=True)
        sweeper.start()
        try:
            yield
        finally:
            stop.set()
            store.shutdown()

    app = FastAPI(
        title="promptseg",
        version=__version__,
        description="Interactive promptable segmentation of medical images. Coordinates are IJK voxel indices.",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's docs pages load Swagger/ReDoc from a CDN; the schema stays at /openapi.json
        redoc_url=None,
    )
    app.state.store = store
    app.state.settings = settings

    @app.exception_handler(PromptsegError)
    async def _promptseg_error(request: Request, error: PromptsegError):
        status = next(code for kind, code in _STATUS if isinstance(error, kind))
        return JSONResponse({"detail": _client_paths(str(error), settings, store)}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, error: RequestValidationError):
        return JSONResponse({"detail": validation_message(error.errors())}, status_code=422)

    app.add_middleware(BodyLimit, limit=settings.body_limit)

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    app.include_router(_api(store, settings), prefix="/api", dependencies=[Depends(_token_check(settings))])

    @app.get("/", include_in_schema=False)
    def index():
        page = STATIC / "index.html"
        if not page.is_file():
            return HTMLResponse("<p>The viewer page is not built: run <code>make web</code>.</p>", status_code=503)
        return FileResponse(page, headers={"Content-Security-Policy": _CSP})

    if (STATIC / "assets").is_dir():
        app.mount("/assets", StaticFiles(directory=STATIC / "assets"), name="assets")
    return app


#: the page loads only its own files and talks only to this server
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self' blob: data:; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def _client_paths(message: str, settings: Settings, store: SessionStore) -> str:
    """``message`` with the server's folders taken out: a client sees its own relative paths, not the server's."""
    for root in settings.data_dirs:
        message = message.replace(f"{root}/", "")
    return message.replace(f"{store.upload_dir}/", "upload:")


def _sweep(store: SessionStore, stop: threading.Event) -> None:
    while not stop.wait(min(SWEEP_INTERVAL, store.settings.idle_timeout / 2)):
        store.expire()


def _token_check(settings: Settings):
    def check(request: Request) -> None:
        if settings.token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise HTTPException(401, "missing token: send 'Authorization: Bearer <token>' (the token is in the URL "
                                     "promptseg serve printed)", headers={"WWW-Authenticate": "Bearer"})
        if not secrets.compare_digest(given.strip().encode(), settings.token.encode()):
            raise HTTPException(401, "wrong token", headers={"WWW-Authenticate": "Bearer"})

    return check


def _slice_event(result: SliceResult, labels: np.ndarray) -> dict:
    return {
        "label": result.label,
        "slice": result.z,
        "score": result.score,
        "source": result.source,
        "area": int(result.mask.sum()),
        "mask": encode_mask(result.mask),
        "masks": encode_label_slice(labels),
    }


def _summary(entry: Entry) -> dict:
    session = entry.session
    volume = session.volume
    return {
        "id": entry.id,
        "path": entry.source,
        "model": entry.model,
        "shape": list(session.shape),
        "spacing": list(volume.spacing),
        "origin": list(volume.origin),
        "direction": np.asarray(volume.direction).tolist(),
        "modality": volume.modality,
        "labels": [label.describe() for label in session.labels],
        "can_undo": session.can_undo,
        "can_redo": session.can_redo,
        "propagating": session.is_propagating(),
        "reference": entry.reference_source,
    }


def _nifti_bytes(volume, array: np.ndarray) -> bytes:
    """``array`` on ``volume``'s grid as gzipped NIfTI bytes (written by SimpleITK, so geometry is ITK's)."""
    import tempfile

    import SimpleITK as sitk

    from ..io.sitk_image import sitk_from_volume

    with tempfile.TemporaryDirectory(prefix="promptseg-nii-") as folder:
        path = Path(folder) / "image.nii.gz"
        sitk.WriteImage(sitk_from_volume(volume, array), str(path), True, 1)
        return path.read_bytes()


def _dice(entry: Entry) -> dict:
    from ..evaluation.metrics import dice

    reference = entry.reference.array
    labels = entry.session.label_map().array
    per_label = {}
    present = set(int(v) for v in np.unique(reference)) - {0}
    for label in entry.session.labels:
        ref = reference == label.value if label.value in present else reference > 0
        per_label[str(label.value)] = dice(labels == label.value, ref)
    return {"reference": entry.reference_source, "all": dice(labels > 0, reference > 0), "labels": per_label}


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def _api(store: SessionStore, settings: Settings) -> APIRouter:
    api = APIRouter()

    @api.get("/info")
    def info() -> dict:
        """Server facts: version, models, whether uploads are allowed and up to which size."""
        return {
            "version": __version__,
            "models": list(settings.models),
            "upload_limit": settings.upload_limit,
            "idle_timeout": settings.idle_timeout,
            "sessions": len(store),
        }

    @api.get("/files")
    def files() -> dict:
        """Images in the data folders (paths to pass to ``POST /api/sessions``)."""
        return {"files": list_data_files(settings.data_dirs)}

    @api.post("/sessions", status_code=201)
    def open_session(body: OpenSession) -> dict:
        """Open a scan from a data folder: ``{"path", "model"}`` -> the session's id, shape, spacing..."""
        from ..io import load_volume

        path = resolve_data_path(body.path, settings.data_dirs)
        volume = load_volume(path, series_uid=body.series)
        entry = store.open(volume, body.path, body.model, modality=body.modality, window=body.window)
        return _summary(entry)

    @api.post("/uploads", status_code=201)
    async def upload(request: Request, name: str, model: Optional[str] = None) -> dict:
        """Open an uploaded scan (the request body is the file; ``?name=scan.nii.gz`` gives its format)."""
        if settings.upload_limit <= 0:
            raise HTTPException(403, "uploads are off on this server (promptseg serve --upload-limit MB)")
        limit = settings.upload_limit
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HTTPException(413, f"upload of {int(declared)} bytes exceeds the limit of {limit} bytes")
        safe = _SAFE_NAME.sub("_", Path(name).name).lstrip(".") or "upload"
        from ..io.common import format_suffix

        if format_suffix(Path(safe)) in ("", ".dcm"):
            raise HTTPException(422, f"upload {name!r}: name a single-file format (.nii.gz, .nrrd, .mha, ...)")
        target = store.upload_dir / f"{secrets.token_hex(8)}-{safe}"
        received = 0
        try:
            with open(target, "wb") as handle:
                async for chunk in request.stream():
                    received += len(chunk)
                    if received > limit:
                        raise HTTPException(413, f"upload exceeds the limit of {limit} bytes")
                    handle.write(chunk)
            from starlette.concurrency import run_in_threadpool

            from ..io import load_volume

            volume = await run_in_threadpool(load_volume, target)
            entry = await run_in_threadpool(store.open, volume, f"upload:{safe}", model)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return _summary(entry)

    @api.get("/sessions/{session_id}")
    def session_info(session_id: str) -> dict:
        return _summary(store.get(session_id))

    @api.delete("/sessions/{session_id}", status_code=204)
    def close_session(session_id: str) -> Response:
        store.close(session_id)
        return Response(status_code=204)

    @api.get("/sessions/{session_id}/image.nii.gz")
    def image(session_id: str) -> Response:
        """The scan as gzipped NIfTI (for the viewer); voxel axes are IJK."""
        entry = store.get(session_id)
        with entry.lock:
            if entry.image_bytes is None:
                volume = entry.session.volume
                array = volume.array.mean(axis=-1).astype(np.uint8) if volume.is_rgb else volume.array
                entry.image_bytes = _nifti_bytes(volume, array)
        return Response(entry.image_bytes, media_type="application/gzip")

    @api.get("/sessions/{session_id}/labels.nii.gz")
    def labels(session_id: str) -> Response:
        """The current label map as gzipped NIfTI on the scan's grid."""
        entry = store.get(session_id)
        label_map = entry.session.label_map()
        return Response(_nifti_bytes(entry.session.volume, label_map.array), media_type="application/gzip")

    @api.post("/sessions/{session_id}/focus", status_code=204)
    def focus(session_id: str, body: FocusBody) -> Response:
        """The user looks at this slice: encode it and its neighbours in the background."""
        store.get(session_id).session.focus(body.slice)
        return Response(status_code=204)

    @api.post("/sessions/{session_id}/prompt")
    def prompt(session_id: str, body: PromptBody) -> dict:
        """Segment one slice: ``{"label", "slice", "box", "points"}`` -> the slice's mask and score."""
        session = store.get(session_id).session
        started = time.perf_counter()
        result = session.prompt(body.label, body.slice, box=body.box, points=body.points)
        event = _slice_event(result, session.label_slice(result.z))
        event["seconds"] = round(time.perf_counter() - started, 4)
        return event

    @api.post("/sessions/{session_id}/propagate")
    def propagate(session_id: str, body: LabelBody) -> StreamingResponse:
        """Propagate a label from its last prompted slice: NDJSON, one line per slice, then a ``done`` line."""
        session = store.get(session_id).session
        events = session.propagate(body.label)

        def lines():
            try:
                for event in events:
                    if isinstance(event, PropagationDone):
                        yield json.dumps({"type": "done", "label": event.label, "start": event.start,
                                          "directions": list(event.directions), "slices": sorted(event.slices),
                                          "stops": {d: str(stop) for d, stop in event.stops.items()},
                                          "reasons": {d: stop.reason.name for d, stop in event.stops.items()},
                                          "cancelled": event.cancelled}) + "\n"
                    else:
                        yield json.dumps({"type": "slice", **_slice_event(event, session.label_slice(event.z))}) + "\n"
            except PromptsegError as error:
                yield json.dumps({"type": "error", "message": str(error)}) + "\n"
            finally:
                events.close()

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @api.post("/sessions/{session_id}/cancel")
    def cancel(session_id: str, body: Optional[LabelBody] = None) -> dict:
        """Cancel a running propagation (of one label, or all)."""
        store.get(session_id).session.cancel(body.label if body else None)
        return {"cancelled": True}

    @api.post("/sessions/{session_id}/undo")
    def undo(session_id: str) -> dict:
        """Undo the last change; the page then reloads ``labels.nii.gz``."""
        entry = store.get(session_id)
        touched = entry.session.undo()
        return {"label": touched, **_summary(entry)}

    @api.post("/sessions/{session_id}/redo")
    def redo(session_id: str) -> dict:
        entry = store.get(session_id)
        touched = entry.session.redo()
        return {"label": touched, **_summary(entry)}

    @api.put("/sessions/{session_id}/labels/{value}")
    def update_label(session_id: str, value: int, body: LabelUpdate) -> dict:
        """Create a label or change its name, colour or visibility."""
        label = store.get(session_id).session.set_label(value, name=body.name, color=body.color, visible=body.visible)
        return label.describe()

    @api.delete("/sessions/{session_id}/labels/{value}")
    def delete_label(session_id: str, value: int) -> dict:
        entry = store.get(session_id)
        entry.session.remove_label(value)
        return _summary(entry)

    @api.post("/sessions/{session_id}/edit")
    def edit(session_id: str, body: EditBody) -> dict:
        """Brush / eraser: the label's new mask on each painted slice (one undo step)."""
        session = store.get(session_id).session
        masks = {}
        for item in body.slices:
            if item.slice >= session.shape[0]:
                raise PromptError(f"slice {item.slice} is outside the image (slices 0..{session.shape[0] - 1})")
            masks[item.slice] = decode_mask({"bbox": item.bbox, "bits": item.bits}, session.slice_shape)
        results = session.edit(body.label, masks)
        return {"slices": [_slice_event(r, session.label_slice(r.z)) for r in results]}

    @api.post("/sessions/{session_id}/reference")
    def reference(session_id: str, body: ReferenceBody) -> dict:
        """Load a reference label map from a data folder to compare with (Dice)."""
        from ..io import load_labels

        entry = store.get(session_id)
        path = resolve_data_path(body.path, settings.data_dirs)
        entry.reference = load_labels(path, reference=entry.session.volume)
        entry.reference_source = body.path
        return _dice(entry)

    @api.get("/sessions/{session_id}/reference.nii.gz")
    def reference_image(session_id: str) -> Response:
        entry = store.get(session_id)
        if entry.reference is None:
            raise HTTPException(404, "no reference loaded: POST /api/sessions/{id}/reference first")
        return Response(_nifti_bytes(entry.session.volume, entry.reference.array), media_type="application/gzip")

    @api.get("/sessions/{session_id}/dice")
    def dice(session_id: str) -> dict:
        """Dice of each label (and of all labels together) against the loaded reference."""
        entry = store.get(session_id)
        if entry.reference is None:
            raise HTTPException(404, "no reference loaded: POST /api/sessions/{id}/reference first")
        return _dice(entry)

    @api.post("/sessions/{session_id}/export", status_code=201)
    def export(session_id: str, body: ExportBody) -> dict:
        """Write the label map (NIfTI / NRRD / MHA; RTSTRUCT or SEG for DICOM scans) to the output folder."""
        entry = store.get(session_id)
        given = Path(body.name).name if body.name else _stem(entry.source)
        stem = _strip_suffixes(_SAFE_NAME.sub("_", given).strip("._")) or "labels"
        if body.format in ("rtstruct", "seg"):
            stem, suffix = f"{stem}_{body.format}", ".dcm"
        else:
            suffix = "." + body.format
        target = _unused(store.output_dir, stem, suffix)
        if body.format in ("rtstruct", "seg"):
            _export_dicom(entry, body.format, target)
        else:
            entry.session.export(target)
        return {"name": target.name, "format": body.format, "download": f"/api/sessions/{session_id}/exports/{target.name}",
                "saved_to": str(target) if settings.output_dir is not None else None}

    @api.get("/sessions/{session_id}/exports/{name}")
    def download(session_id: str, name: str) -> FileResponse:
        """Download an exported file."""
        store.get(session_id)
        if name != Path(name).name or name.startswith(".") or _SAFE_NAME.search(name):
            raise PathRefused(f"export name {name!r} refused")
        path = store.output_dir / name
        if not path.is_file():
            raise PathNotFound(f"no export named {name}")
        return FileResponse(path, filename=name, media_type="application/octet-stream")

    return api


def _stem(source: str) -> str:
    return _strip_suffixes(Path(source.split(":", 1)[-1]).name) + "_labels"


def _strip_suffixes(stem: str) -> str:
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".dcm", ".npz"):
        if stem.lower().endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def _unused(folder: Path, stem: str, suffix: str) -> Path:
    candidate = folder / f"{stem}{suffix}"
    number = 1
    while candidate.exists():
        candidate = folder / f"{stem}-{number}{suffix}"
        number += 1
    return candidate


def _export_dicom(entry: Entry, kind: str, target: Path) -> None:
    try:
        from ..io.dicom import write_rtstruct, write_seg
    except ImportError:
        raise HTTPException(501, f"{kind.upper()} export needs promptseg's DICOM-RT writers, which this build "
                                 "does not have yet: export NIfTI instead") from None
    volume = entry.session.volume
    if getattr(volume, "dicom", None) is None:
        raise HTTPException(422, f"{kind.upper()} export needs a scan opened from a DICOM series; "
                                 "this one is not: export NIfTI or NRRD instead")
    names = {lab.value: lab.name for lab in entry.session.labels}
    colors = {lab.value: lab.color for lab in entry.session.labels}
    writer = write_rtstruct if kind == "rtstruct" else write_seg
    writer(entry.session.label_map(), volume, target, names=names, colors=colors)
