"""Atomic file output: write next to the destination, then rename over it.

A reader of the destination sees either the old file or the complete new one,
never a partial file; a failed write leaves the destination untouched and
removes its temporary file.
"""

from __future__ import annotations

import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import ImageWriteError
from .common import format_suffix


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ImageWriteError(
            f"cannot write {path}: cannot create folder {path.parent} ({error.strerror or error})"
        ) from None


def _unused(parent: Path, make_name) -> Path:
    while True:
        candidate = parent / make_name(secrets.token_hex(6))
        if not candidate.exists():
            return candidate


def _remove(path: Path) -> None:
    try:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def _replace(source: Path, destination: Path) -> None:
    try:
        os.replace(source, destination)
    except OSError as error:
        raise ImageWriteError(
            f"cannot write {destination}: {error.strerror or error}"
        ) from None


@contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; rename it into place on success.

    The temporary file lives in the destination folder (created if missing) and
    keeps the real extension at the end of its name, e.g.
    ``out/.mask.tmp-1a2b3c4d5e6f.nii.gz`` for ``out/mask.nii.gz``, so writers that
    choose the format from the name (SimpleITK) pick the right one.

    On any exception inside the ``with`` block the temporary file is removed, the
    destination is left as it was, and the exception propagates.

    Raises:
        ImageWriteError: the folder cannot be created, the block wrote nothing,
            or the final rename fails.
    """
    path = Path(path)
    _make_parent(path)
    suffix = format_suffix(path)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    temporary = _unused(path.parent, lambda token: f".{stem}.tmp-{token}{suffix}")
    try:
        yield temporary
        if not temporary.is_file():
            raise ImageWriteError(f"cannot write {path}: the writer produced no file")
        _replace(temporary, path)
    finally:
        _remove(temporary)


@contextmanager
def atomic_bundle(path) -> Iterator[Path]:
    """Like :func:`atomic_path` for formats that write companion files (MetaImage ``.mhd`` + ``.raw``).

    Yields ``path``'s own name inside a private temporary folder next to
    ``path`` (so the header refers to the companion by its final name). On
    success the companions are renamed into place first and the file named
    ``path`` last; on failure the folder is removed and nothing is moved.
    """
    path = Path(path)
    _make_parent(path)
    folder = _unused(path.parent, lambda token: f".{path.name}.tmp-{token}")
    try:
        folder.mkdir()
    except OSError as error:
        raise ImageWriteError(f"cannot write {path}: {error.strerror or error}") from None
    try:
        target = folder / path.name
        yield target
        if not target.is_file():
            raise ImageWriteError(f"cannot write {path}: the writer produced no file")
        for companion in sorted(folder.iterdir()):
            if companion.name != path.name:
                _replace(companion, path.parent / companion.name)
        _replace(target, path)
    finally:
        _remove(folder)
