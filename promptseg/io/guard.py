"""Outputs never land on inputs: the checks every command runs on its output paths before any work.

An output clashes with an input of the same run when it *is* that input (the same
file, also through a link or another spelling of the path) or when it lies inside
an input given as a folder (a DICOM series folder, a folder of predictions, a
prepared dataset): nothing is ever written among the files a run reads.
An output *folder* also clashes when one of the names the command writes into it
is, or holds, an input.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterable, Optional, Sequence

from ..errors import ImageWriteError


def destination_stat(path: Path) -> Optional[os.stat_result]:
    """``os.stat`` of an output path; None when nothing is there yet.

    Raises:
        ImageWriteError: the path cannot even be looked at (permissions, a name too long, a NUL byte).
    """
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as error:
        raise ImageWriteError(f"cannot write {path}: {getattr(error, 'strerror', None) or error}") from None


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a link loop: compare the spelled path
        return path.absolute()


def _inside(path: Path, folder: Path) -> bool:
    return folder == path or folder in path.parents


def _same(path: Path, source: Path) -> bool:
    try:
        return os.path.samefile(path, source)
    except (OSError, ValueError):
        return False


def input_clash(path, inputs: Iterable) -> Optional[str]:
    """Why writing ``path`` would touch one of ``inputs``, or None.

    Args:
        path: an output file or folder (existing or not).
        inputs: the run's input files and folders (``None`` entries are skipped).

    Returns:
        A phrase such as ``"it is an input of this run (ct.nrrd)"`` or
        ``"it is inside the input folder preds/"``.
    """
    path = Path(path)
    target = _resolved(path)
    for source in inputs:
        if source is None or str(source) == "":
            continue
        source = Path(source)
        if path.exists() and source.exists() and _same(path, source):
            return f"it is an input of this run ({source})"
        if source.is_dir() and _inside(target, _resolved(source)):
            return f"it is inside the input folder {source}"
    return None


def check_not_input(path, inputs: Iterable) -> Path:
    """Raise :class:`ImageWriteError` when ``path`` is, or lies inside, one of ``inputs``."""
    why = input_clash(path, inputs)
    if why:
        raise ImageWriteError(f"cannot write {path}: {why}; choose another name")
    return Path(path)


def check_writable_parent(path) -> None:
    """The nearest existing folder above ``path`` is a folder this process can write into."""
    path = Path(path)
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ImageWriteError(f"cannot write {path}: cannot create folder {path.parent} ({parent} is a file)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ImageWriteError(f"cannot write {path}: the folder {parent} is not writable (read-only or no permission)")


def check_output_folder(path, inputs: Sequence = (), writes: Sequence[str] = (),
                        folders_read: Sequence = ()) -> Path:
    """Fail early unless ``path`` can be a run's output folder.

    Args:
        path: the folder (created later when missing).
        inputs: the run's input files and folders (``path`` may not be, or lie inside, one).
        writes: names the command writes inside ``path`` (files or sub-folders):
            none of them may be, or hold, an input.
        folders_read: folders the run reads that ``path`` may lie inside but not be
            (a report folder inside a benchmark run folder).

    Raises:
        ImageWriteError: ``path`` is a file, is (or is inside) an input, would
            overwrite an input, or cannot be created / written.
    """
    path = Path(path)
    info = destination_stat(path)
    if info is not None and not stat.S_ISDIR(info.st_mode):
        raise ImageWriteError(f"cannot write {path}: it is a file; give a folder")
    check_not_input(path, inputs)
    for folder in folders_read:
        if folder is not None and _resolved(path) == _resolved(Path(folder)):
            raise ImageWriteError(f"cannot write {path}: it is an input folder of this run; choose another folder")
    for name in writes:
        inner = _resolved(path / name)
        for source in inputs:
            if source is not None and str(source) != "" and _inside(_resolved(Path(source)), inner):
                raise ImageWriteError(f"cannot write {path}: its {name} would overwrite the input {source}; "
                                      "choose another folder")
    if info is None:
        check_writable_parent(path)
    elif not os.access(path, os.W_OK | os.X_OK):
        raise ImageWriteError(f"cannot write {path}: the folder is not writable (read-only or no permission)")
    return path


def check_distinct(*outputs) -> None:
    """Raise :class:`ImageWriteError` when two of a run's outputs (``None`` skipped) are the same path."""
    seen: dict[Path, str] = {}
    for output in outputs:
        if output is None or str(output) == "":
            continue
        key = _resolved(Path(output))
        if key in seen:
            raise ImageWriteError(f"cannot write {output}: it is also the run's output {seen[key]}; give each output "
                                  "its own name")
        seen[key] = str(output)
