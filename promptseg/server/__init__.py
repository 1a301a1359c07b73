"""``promptseg serve``: the web viewer and its HTTP API (FastAPI + uvicorn).

>>> from promptseg.server import Settings, create_app
>>> app = create_app(Settings(data_dirs=["scans/"], token="secret"))   # an ASGI app
>>> # uvicorn.run(app, host="127.0.0.1", port=8765)

See :mod:`promptseg.server.app` for the API and docs/viewer.md for the page.
"""

from .app import create_app
from .settings import Settings

__all__ = ["Settings", "create_app"]
