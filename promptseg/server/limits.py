"""Refusals before a request reaches an endpoint: oversized bodies, and invalid requests as one readable line.

* :class:`BodyLimit` -- an ASGI middleware answering 413 when a request body
  is larger than ``Settings.body_limit`` (by ``Content-Length`` before any of it
  is read, else as soon as the bytes received pass it), so a
  client cannot make the server hold an arbitrarily large JSON document.
  Uploads (``/api/uploads``) stream to disk under their own limit and pass through.
* :func:`validation_message` -- FastAPI/pydantic's list of validation errors
  as one line (``body.box: List should have at most 4 items; ...``), at most
  five, without echoing the client's input back.
"""

from __future__ import annotations

import json
from typing import Iterable

from ..io.common import printable

#: validation errors listed in one message
_SHOWN = 5


def validation_message(errors: Iterable[dict]) -> str:
    """``[{"loc": (...), "msg": ...}, ...]`` -> ``"invalid request: body.box: ...; query.name: ..."``."""
    errors = list(errors)
    parts = []
    for error in errors[:_SHOWN]:
        # locations name the client's own keys (extra fields): escaped like every echo of client text
        location = printable(".".join(str(part) for part in error.get("loc", ()) if part != "__root__"), 100)
        message = printable(" ".join(str(error.get("msg", "invalid")).split()), 200)
        parts.append(f"{location}: {message}" if location else message)
    more = f"; and {len(errors) - _SHOWN} more" if len(errors) > _SHOWN else ""
    return "invalid request: " + ("; ".join(parts) or "malformed") + more


class BodyLimit:
    """Answer 413 to requests whose body exceeds ``limit`` bytes (paths starting with ``exempt`` pass)."""

    def __init__(self, app, limit: int, exempt: tuple[str, ...] = ("/api/uploads",)) -> None:
        self.app, self.limit, self.exempt = app, limit, exempt

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path", "").startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        # read the body here (the endpoint would read all of it anyway), then hand it on
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._refuse(send)
                return
            chunks.append(message)
            more = message.get("more_body", False)
        await self.app(scope, _replay(chunks, receive), send)

    async def _refuse(self, send) -> None:
        body = json.dumps({"detail": f"request body larger than {self.limit} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _replay(messages: list, then=None):
    queue = list(messages)

    async def receive():
        if queue:
            return queue.pop(0)
        if then is not None:
            return await then()  # after the body: wait for the client's disconnect, as the server would
        return {"type": "http.disconnect"}

    return receive
