"""What a ``promptseg serve`` process may do: its folders, token, limits and model."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ..errors import PromptsegError

#: environment variable holding the API token (``--token`` wins over it)
TOKEN_ENV = "PROMPTSEG_TOKEN"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
#: largest JSON request body, bytes (a brush edit of a whole 512 x 512 x 300 label is about 13 MB)
MAX_BODY_BYTES = 64 * 1024**2


@dataclass
class Settings:
    """Configuration of :func:`promptseg.server.create_app`.

    Attributes:
        data_dirs: the only folders scans (and reference masks) are opened from.
        token: the API token (``Authorization: Bearer <token>`` on every ``/api`` call);
            None disables the check (only sensible behind another gate).
        upload_limit: largest upload accepted, bytes; 0 turns uploads off.
        body_limit: largest JSON request body, bytes (413 beyond it, refused before it is read whole).
        idle_timeout: seconds without a request after which a session is closed.
        max_sessions: sessions open at once.
        output_dir: where exports are written (None: a private temporary folder,
            files are only downloadable).
        cache_dir: on-disk embedding cache (None: memory only).
        cache_bytes: memory budget of the embedding cache, bytes.
        models: model names a client may ask for; the first is the default.
        checkpoint: weights file of the models that need one.
        device, runtime: where and how the model runs (``runtime``: the image encoder's).
        prefetch: slices each side of the one in view encoded in the background.
        segmenter_factory: ``name -> Segmenter`` (tests inject a shared model);
            default :func:`promptseg.models.build_segmenter`.
    """

    data_dirs: list[Path]
    token: Optional[str] = None
    upload_limit: int = 0
    body_limit: int = MAX_BODY_BYTES
    idle_timeout: float = 3600.0
    max_sessions: int = 16
    output_dir: Optional[Path] = None
    cache_dir: Optional[Path] = None
    cache_bytes: int = 1 << 30
    models: tuple[str, ...] = ("litemedsam",)
    checkpoint: Optional[Path] = None
    device: str = "cpu"
    runtime: str = "auto"
    prefetch: int = 2
    segmenter_factory: Optional[Callable] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.data_dirs:
            raise PromptsegError("give at least one --data folder: the server opens scans only from there")
        resolved = []
        for folder in self.data_dirs:
            path = Path(folder).expanduser()
            if not path.is_dir():
                raise PromptsegError(f"--data {folder}: not a folder")
            resolved.append(path.resolve())
        self.data_dirs = resolved
        if self.upload_limit < 0:
            raise PromptsegError("the upload limit must be >= 0 bytes")
        if self.body_limit <= 0:
            raise PromptsegError("the request body limit must be > 0 bytes")
        if self.idle_timeout <= 0:
            raise PromptsegError("the idle timeout must be > 0 seconds")
        if not self.models:
            raise PromptsegError("name at least one model")

    @staticmethod
    def resolve_token(given: Optional[str], generate: bool = True) -> Optional[str]:
        """``given``, else ``$PROMPTSEG_TOKEN``, else a new random token (``generate``), else None."""
        token = given or os.environ.get(TOKEN_ENV) or None
        if token is None and generate:
            token = secrets.token_urlsafe(24)
        return token
