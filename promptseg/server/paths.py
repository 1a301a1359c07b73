"""Client-given paths -> files inside the ``--data`` folders, or a refusal before anything is read.

A path is relative to one of the data folders. It is refused when it is
absolute, contains ``..``, a NUL or a backslash, or -- after resolving
symbolic links -- lies outside every data folder. Only ``stat`` calls happen
before the decision; no file is opened.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Sequence

from ..errors import PromptsegError
from ..io import SUPPORTED_IMAGE_SUFFIXES
from ..io.common import format_suffix, printable


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
        raise PathRefused(f"path {printable(repr(relative), 100)} refused: NUL and backslash are not allowed")
    pure = PurePosixPath(relative)
    if pure.is_absolute() or relative.startswith("~"):
        raise PathRefused(f"path {printable(repr(relative), 100)} refused: give it relative to a data folder")
    if any(part == ".." for part in pure.parts):
        raise PathRefused(f"path {printable(repr(relative), 100)} refused: '..' is not allowed")
    for root in roots:
        candidate = root.joinpath(*pure.parts)
        try:
            if not (candidate.exists() or candidate.is_symlink()):
                continue
            real = candidate.resolve()
        except (OSError, RuntimeError) as error:  # a name too long, a link loop
            reason = getattr(error, "strerror", None) or str(error)
            raise PathNotFound(f"{printable(relative, 100)}: {reason}") from None
        if not any(_inside(real, r) for r in roots):
            raise PathRefused(f"path {printable(repr(relative), 100)} refused: it leads outside the data folders")
        if not real.exists():
            raise PathNotFound(f"{printable(relative, 100)}: a broken link")
        return real
    raise PathNotFound(f"{printable(relative, 100)}: not found in the data folders")


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def list_data_files(roots: Sequence[Path], limit: int = 2000, depth: int = 4) -> list[dict]:
    """Images in the data folders: ``[{"path": relative, "size": bytes or None, "kind": "file" | "dicom"}]``.

    Files with a readable image suffix, and folders holding ``.dcm`` files (DICOM series), at
    most ``depth`` folders down and ``limit`` entries in all (a large archive is not walked
    whole); hidden entries and links leading outside the folders are left out.
    """
    found: dict[str, dict] = {}
    for root in roots:
        for folder, subfolders, names in os.walk(root):
            here = Path(folder)
            level = len(here.relative_to(root).parts)
            subfolders[:] = sorted(d for d in subfolders if not d.startswith(".")) if level < depth else []
            if any(name.lower().endswith(".dcm") for name in names) and here != root:
                relative = here.relative_to(root).as_posix()
                found.setdefault(relative, {"path": relative, "size": None, "kind": "dicom"})
            for name in sorted(names):
                path = here / name
                suffix = format_suffix(path)
                if name.startswith(".") or suffix not in SUPPORTED_IMAGE_SUFFIXES or suffix == ".dcm":
                    continue
                try:
                    if not any(_inside(path.resolve(), r) for r in roots) or not path.is_file():
                        continue
                    relative = path.relative_to(root).as_posix()
                    found.setdefault(relative, {"path": relative, "size": path.stat().st_size, "kind": "file"})
                except OSError:
                    continue
                if len(found) >= limit:
                    return [found[k] for k in sorted(found)]
    return [found[k] for k in sorted(found)]
