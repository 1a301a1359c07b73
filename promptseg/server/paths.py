"""Client-given paths -> files inside the ``--data`` folders, or a refusal before anything is read.

A path is relative to one of the data folders. It is refused when it is
absolute, contains ``..``, a NUL or a backslash, or -- after resolving
symbolic links -- lies outside every data folder. Only ``stat`` calls happen
before the decision; no file is opened.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Sequence

from ..errors import PromptsegError
from ..io import SUPPORTED_IMAGE_SUFFIXES
from ..io.common import format_suffix


class PathRefused(PromptsegError):
    """A path the server will not open (HTTP 403)."""


class PathNotFound(PromptsegError):
    """No such file in the data folders (HTTP 404)."""


def resolve_data_path(relative: str, roots: Sequence[Path]) -> Path:
    """The real path of ``relative`` inside the first data folder that has it.

    Raises:
        PathRefused: absolute, ``..``, NUL/backslash, or a link leading outside the folders.
        PathNotFound: in no data folder.
    """
    if not isinstance(relative, str) or not relative.strip():
        raise PathRefused("give a path relative to a data folder")
    if "\x00" in relative or "\\" in relative:
        raise PathRefused(f"path {relative!r} refused: NUL and backslash are not allowed")
    pure = PurePosixPath(relative)
    if pure.is_absolute() or relative.startswith("~"):
        raise PathRefused(f"path {relative!r} refused: give it relative to a data folder")
    if any(part == ".." for part in pure.parts):
        raise PathRefused(f"path {relative!r} refused: '..' is not allowed")
    for root in roots:
        candidate = root.joinpath(*pure.parts)
        if not (candidate.exists() or candidate.is_symlink()):
            continue
        real = candidate.resolve()
        if not any(_inside(real, r) for r in roots):
            raise PathRefused(f"path {relative!r} refused: it leads outside the data folders")
        if not real.exists():
            raise PathNotFound(f"{relative}: a broken link")
        return real
    raise PathNotFound(f"{relative}: not found in the data folders")


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def list_data_files(roots: Sequence[Path], limit: int = 2000) -> list[dict]:
    """Images in the data folders: ``[{"path": relative, "size": bytes}]``, sorted.

    Files with a readable image suffix and folders holding ``.dcm`` files (DICOM
    series); links leading outside the folders are left out.
    """
    found: dict[str, dict] = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if len(found) >= limit:
                break
            try:
                real = path.resolve()
                if not _inside(real, root) and not any(_inside(real, r) for r in roots):
                    continue
                relative = path.relative_to(root).as_posix()
                if any(part.startswith(".") for part in PurePosixPath(relative).parts):
                    continue
                if path.is_file() and format_suffix(path) in SUPPORTED_IMAGE_SUFFIXES and format_suffix(path) != ".dcm":
                    found.setdefault(relative, {"path": relative, "size": path.stat().st_size, "kind": "file"})
                elif path.is_dir() and any(child.suffix.lower() == ".dcm" for child in path.iterdir()):
                    found.setdefault(relative, {"path": relative, "size": None, "kind": "dicom"})
            except OSError:
                continue
    return [found[k] for k in sorted(found)]
