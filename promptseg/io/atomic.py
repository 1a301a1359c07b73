"""Atomic file output: write next to the destination, flush to disk, then rename over it.

A reader of the destination sees either the old file or the complete new one,
never a partial file; a failed write (a full disk, a read-only folder, a
writer error) leaves the destination untouched, removes its temporary file and
raises :class:`~promptseg.errors.ImageWriteError` with one line.

Temporary names carry the writer's host and process id
(``.mask.tmp-<host>-<pid>-<token>.nii.gz``), so a process killed mid-write
(``kill -9``, power loss) leaves a file that the next write to the same
destination recognises: it is removed when its process no longer runs on this
host, and reported (logged as a warning) when it belongs to another host or to
an older promptseg that did not record its process.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import ImageWriteError
from .common import format_suffix

log = logging.getLogger(__name__)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:16] or "host"


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ImageWriteError(
            f"cannot write {path}: cannot create folder {path.parent} ({error.strerror or error})"
        ) from None


def _unused(parent: Path, make_name) -> Path:
    while True:
        candidate = parent / make_name(f"{_host()}-{os.getpid()}-{secrets.token_hex(4)}")
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _temporary_pattern(prefix: str, suffix: str) -> re.Pattern:
    """Temporary names for one destination: ``<prefix>.tmp-<host>-<pid>-<token><suffix>`` or the older
    ``<prefix>.tmp-<token><suffix>``."""
    return re.compile(
        re.escape(prefix) + r"\.tmp-(?:(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-)?[0-9a-f]{8,12}" + re.escape(suffix) + "$"
    )


def clean_stale_temporaries(folder: Path, prefix: str, suffix: str = "") -> list[Path]:
    """Remove the temporary files (or folders) a killed writer left for one destination.

    Args:
        folder: the destination's folder.
        prefix: the temporary names' start (``.mask`` for ``mask.nii.gz``).
        suffix: their end (``.nii.gz``; ``""`` for MetaImage bundle folders).

    Returns:
        The paths removed. Temporaries of live processes are kept; those of
        another host or without a process id are kept and logged as warnings.
    """
    pattern = _temporary_pattern(prefix, suffix)
    removed = []
    try:
        candidates = [entry for entry in folder.iterdir() if pattern.match(entry.name)]
    except OSError:
        return removed
    for entry in candidates:
        match = pattern.match(entry.name)
        host, pid = match.group("host"), match.group("pid")
        if host == _host() and pid is not None:
            if int(pid) != os.getpid() and not _alive(int(pid)):
                _remove(entry)
                removed.append(entry)
                log.warning("removed %s, left by an interrupted write (process %s is gone)", entry, pid)
        else:
            log.warning("%s looks like the leftover of an interrupted write (not removed: %s)", entry,
                        "written on host " + host if host else "its process is unknown")
    return removed


def _replace(source: Path, destination: Path) -> None:
    try:
        os.replace(source, destination)
    except OSError as error:
        raise ImageWriteError(
            f"cannot write {destination}: {error.strerror or error}"
        ) from None


def _flush(path: Path) -> None:
    """fsync ``path`` (a file, or every file in a folder): a full disk or quota that the writer's
    buffered writes did not report shows up here, before the rename."""
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for item in files:
        fd = os.open(item, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _failure(path, error: OSError) -> ImageWriteError:
    reason = error.strerror or str(error)
    return ImageWriteError(f"cannot write {path}: {reason}")


def _begin(path: Path) -> Path:
    """Create the folder, clean leftovers of killed writes, and pick the temporary name for ``path``."""
    _make_parent(path)
    suffix = format_suffix(path)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    clean_stale_temporaries(path.parent, f".{stem}", suffix)
    return _unused(path.parent, lambda token: f".{stem}.tmp-{token}{suffix}")


def _complete(temporary: Path, path: Path) -> None:
    """The block's output exists and is on disk."""
    if not temporary.is_file():
        raise ImageWriteError(f"cannot write {path}: the writer produced no file")
    try:
        _flush(temporary)
    except OSError as error:
        raise _failure(path, error) from None


@contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; rename it into place on success.

    The temporary file lives in the destination folder (created if missing) and
    keeps the real extension at the end of its name, e.g.
    ``out/.mask.tmp-host-1234-1a2b3c4d.nii.gz`` for ``out/mask.nii.gz``, so
    writers that choose the format from the name (SimpleITK) pick the right one.
    Leftovers of killed writes to the same destination are cleaned up first
    (:func:`clean_stale_temporaries`).

    On any exception inside the ``with`` block the temporary file is removed, the
    destination is left as it was, and the exception propagates (an ``OSError``
    such as "No space left on device" as :class:`ImageWriteError`).

    Raises:
        ImageWriteError: the folder cannot be created, the block wrote nothing,
            the disk is full, or the final rename fails.
    """
    with atomic_paths(path) as (temporary,):
        yield temporary


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
    clean_stale_temporaries(path.parent, f".{path.name}")
    folder = _unused(path.parent, lambda token: f".{path.name}.tmp-{token}")
    try:
        folder.mkdir()
    except OSError as error:
        raise _failure(path, error) from None
    try:
        target = folder / path.name
        try:
            yield target
            if not target.is_file():
                raise ImageWriteError(f"cannot write {path}: the writer produced no file")
            _flush(folder)
        except OSError as error:
            raise _failure(path, error) from None
        for companion in sorted(folder.iterdir()):
            if companion.name != path.name:
                _replace(companion, path.parent / companion.name)
        _replace(target, path)
    finally:
        _remove(folder)


@contextmanager
def atomic_paths(*paths) -> Iterator[list[Path]]:
    """:func:`atomic_path` for several files that belong together (a CSV and its summary).

    Every destination is renamed into place only after the block wrote all of
    them and each is on disk; if anything fails, none is touched. (The renames
    themselves are separate steps: a crash between two of them leaves the first
    new file next to the second's old one, each complete.)
    """
    paths = [Path(p) for p in paths]
    temporaries: list[Path] = []
    try:
        for path in paths:
            temporaries.append(_begin(path))
        try:
            yield list(temporaries)
        except OSError as error:
            raise _failure(" and ".join(str(p) for p in paths), error) from None
        for temporary, path in zip(temporaries, paths):
            _complete(temporary, path)
        for temporary, path in zip(temporaries, paths):
            _replace(temporary, path)
    finally:
        for temporary in temporaries:
            _remove(temporary)
