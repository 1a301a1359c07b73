"""Strict checkpoint loading shared by every model family.

Accepted layouts (what users actually have on disk):

* a plain state dict ``{"image_encoder.x.weight": tensor, ...}``;
* a wrapper dict with the state dict under ``"model"`` or ``"state_dict"``
  (promptseg's own training checkpoints, MedSAM/SAM2 training scripts,
  PyTorch Lightning);
* keys prefixed by ``"module."`` (saved from ``DataParallel`` /
  ``DistributedDataParallel``) or, in Lightning checkpoints, by the attribute
  name of the wrapped network (``"model."``, ``"net."``, ``"sam."``...): when the
  model's own keys are known, a prefix shared by every checkpoint key and by
  none of the model's is stripped.

Whatever the layout, the keys must match the model exactly: missing keys,
unexpected keys and shape mismatches raise :class:`CheckpointError` naming them.
A partial load (``strict=False``) never happens silently.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Optional

from ..errors import CheckpointError
from ..io.digest import sha256_file

if TYPE_CHECKING:  # torch is imported where a checkpoint is read: file_digest alone never needs it
    import torch

#: wrapper keys under which training scripts store the weights, tried in order
WRAPPER_KEYS = ("model", "state_dict")
#: prefixes added by wrappers such as DistributedDataParallel
STRIP_PREFIXES = ("module.",)
_MAX_LISTED = 8


def read_checkpoint(path: str | Path) -> object:
    """Load a checkpoint file onto the CPU without executing pickled code.

    Raises:
        CheckpointError: the file is missing, truncated, not a PyTorch file, or
            holds pickled Python objects (refused: unpickling runs code).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    with open(path, "rb") as handle:
        head = handle.read(4)
    # torch.save writes a zip archive (PK..) or, in the legacy format, a pickle (protocol byte 0x80)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle)")
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path} holds pickled Python objects that promptseg will not unpickle "
            f"(only tensors and plain containers are loaded safely): {first}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {first}") from None


def extract_state_dict(obj: object, source: str = "checkpoint", expected: Optional[Iterable[str]] = None) -> dict[str, torch.Tensor]:
    """Find the state dict inside a loaded checkpoint and normalise its keys.

    Args:
        obj: what :func:`read_checkpoint` returned.
        source: name used in error messages (usually the file path).
        expected: the target model's keys, to strip wrapper prefixes (Lightning).
    """
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and _all_tensors(inner):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{source} holds no state dict (found {type(obj).__name__})")
    if not _all_tensors(obj):
        keys = ", ".join(sorted(str(k) for k in obj.keys())[:_MAX_LISTED])
        raise CheckpointError(
            f"{source} is not a state dict and has no 'model' or 'state_dict' entry "
            f"(top-level keys: {keys})"
        )
    state = dict(obj)
    for prefix in STRIP_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    if expected is not None:
        state = _strip_wrapper_prefix(state, set(expected))
    return state


def _strip_wrapper_prefix(state: dict, expected: set) -> dict:
    """Drop leading ``name.`` segments shared by every key while the keys do not match ``expected``."""
    while state and not set(state) & expected:
        first = {k.split(".", 1)[0] for k in state}
        if len(first) != 1 or not all("." in k for k in state):
            break
        prefix = first.pop() + "."
        if any(k.startswith(prefix) for k in expected):
            break
        state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _all_tensors(mapping: Mapping) -> bool:
    import torch

    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in mapping.items())


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return shown + (f" (+{more} more)" if more > 0 else "")


def check_state_dict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise :class:`CheckpointError` unless ``state`` fits ``model`` key for key.

    The message names the missing keys, the unexpected keys and the tensors
    whose shapes differ (first few of each, with counts).
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {_listing(mismatched)}")
    if problems:
        raise CheckpointError(f"{source} does not match the {type(model).__name__} model: " + "; ".join(problems))


def load_weights(model: torch.nn.Module, path: str | Path) -> str:
    """Load a checkpoint file into ``model`` strictly; return its SHA-256 digest.

    Raises:
        CheckpointError: unreadable file, no state dict, or any key/shape mismatch.
    """
    obj = read_checkpoint(path)
    state = extract_state_dict(obj, source=str(path), expected=model.state_dict().keys())
    check_state_dict(model, state, source=str(path))
    model.load_state_dict(state, strict=True)
    return file_digest(path)


def file_digest(path: str | Path) -> str:
    """The 16-hex-digit SHA-256 prefix that identifies weights in caches and logs."""
    return sha256_file(path, 16)
