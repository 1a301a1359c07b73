"""The training configuration: YAML file + ``--set key=value`` overrides, validated.

Every section is a pydantic model that forbids unknown keys, so a typo such as
``optim.learning_rate`` is an error naming ``optim.learning_rate`` instead of
being ignored. ``promptseg train --print-config`` shows the defaults.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Literal, Optional, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import PromptsegError
from ..io.common import printable


class ConfigError(PromptsegError):
    """The training configuration is invalid."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(_Section):
    name: str = "litemedsam"
    #: starting weights; None = the backend's bundled/default weights
    checkpoint: Optional[Path] = None


class DataSection(_Section):
    #: folder written by ``promptseg prepare``
    prepared: Path
    #: split file written by ``promptseg split`` (None: every case trains, nothing validates)
    split: Optional[Path] = None
    #: which fold of a k-fold split file to use
    fold: Optional[int] = None


class TrainableSection(_Section):
    """What trains. ``mode``:

    - ``full``: everything;
    - ``parts``: the listed parts (``image_encoder``, ``prompt_encoder``, ``mask_decoder``);
    - ``names``: parameters whose names match any glob in ``names``
      (``promptseg layers`` prints them);
    - ``lora``: LoRA adapters (peft) on ``lora.target_modules``, base weights frozen.
    """

    mode: Literal["full", "parts", "names", "lora"] = "parts"
    parts: list[Literal["image_encoder", "prompt_encoder", "mask_decoder"]] = Field(default_factory=lambda: ["mask_decoder"])
    names: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self):
        if self.mode == "parts" and not self.parts:
            raise ValueError("mode 'parts' needs at least one part")
        if self.mode == "names" and not self.names:
            raise ValueError("mode 'names' needs at least one name or glob")
        return self


class LoraSection(_Section):
    rank: int = Field(default=8, ge=1)
    alpha: float = Field(default=16.0, gt=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    #: regular expression matched against full module names (peft ``target_modules``); the default
    #: adapts the attention projections of the mask decoder's two-way transformer
    target_modules: str = r".*mask_decoder\.transformer\..*\.(q_proj|k_proj|v_proj|out_proj)"


class LossSection(_Section):
    dice: float = Field(default=1.0, ge=0)
    bce: float = Field(default=1.0, ge=0)
    #: MSE between the IoU head's prediction and the real IoU of the mask
    iou_mse: float = Field(default=0.0, ge=0)


class OptimSection(_Section):
    lr: float = Field(default=5e-5, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["constant", "cosine", "step"] = "cosine"
    warmup_steps: int = Field(default=0, ge=0)
    step_size: int = Field(default=10, ge=1, description="epochs per decay for schedule 'step'")
    gamma: float = Field(default=0.5, gt=0, le=1)
    grad_clip: Optional[float] = Field(default=1.0, gt=0)
    accumulate: int = Field(default=1, ge=1)
    #: mixed precision on CUDA ("auto" = bf16 if supported else fp16); always fp32 on CPU
    amp: Literal["auto", "off", "fp16", "bf16"] = "auto"


class PromptSection(_Section):
    """How training prompts are simulated from the reference masks.

    - ``box``: the mask's tight box, each side jittered by up to ``jitter_px``
      (in model-input pixels), as MedSAM trains;
    - ``fixed-box``: always ``fixed_box`` (model-input pixels; None = the whole
      image) -- the breast-MRI "no radiologist" mode; empty slices train too;
    - ``points``: ``points`` clicks, at least one inside, the rest outside.
    """

    mode: Literal["box", "fixed-box", "points"] = "box"
    jitter_px: float = Field(default=5.0, ge=0)
    fixed_box: Optional[tuple[float, float, float, float]] = None
    points: int = Field(default=1, ge=1)
    flips: bool = True


class TrainSection(_Section):
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=8, ge=1)
    seed: int = 0
    #: stop when the validation Dice has not improved for this many epochs (None: never)
    early_stopping: Optional[int] = Field(default=None, ge=1)
    #: compute image embeddings once and reuse them when the image encoder is frozen
    cache_embeddings: bool = True
    num_workers: int = Field(default=0, ge=0)
    #: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto``
    device: str = "auto"

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        from ..device import check_device_name

        return check_device_name(value)
    #: stop after this many optimiser steps (tests, smoke runs); None = full epochs
    max_steps: Optional[int] = Field(default=None, ge=1)


class LoggingSection(_Section):
    #: run folder: checkpoints, metrics.csv, TensorBoard events, the resolved config
    dir: Path = Path("runs/finetune")
    tensorboard: bool = True
    #: W&B project; None = off. ``wandb_mode: offline`` logs without network.
    wandb_project: Optional[str] = None
    wandb_mode: Literal["online", "offline", "disabled"] = "offline"


class TrainConfig(_Section):
    """The whole training configuration (see ``examples/configs/``)."""

    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection
    trainable: TrainableSection = Field(default_factory=TrainableSection)
    lora: LoraSection = Field(default_factory=LoraSection)
    loss: LossSection = Field(default_factory=LossSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    prompts: PromptSection = Field(default_factory=PromptSection)
    train: TrainSection = Field(default_factory=TrainSection)
    logging: LoggingSection = Field(default_factory=LoggingSection)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


#: largest config file read (a real one is a few KiB; PyYAML needs seconds per 100 KiB)
MAX_CONFIG_BYTES = 64 * 1024
#: most values (after YAML aliases are expanded) a config may hold
MAX_CONFIG_NODES = 100_000
#: problems listed in one error message
MAX_PROBLEMS = 5


def _count_nodes(doc: object, limit: int) -> int:
    """Values in ``doc``, counting shared (aliased) ones each time they appear; stops past ``limit``."""
    count, stack = 0, [doc]
    while stack and count <= limit:
        node = stack.pop()
        count += 1
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
    return count


def read_yaml(path: Path) -> object:
    """Parse a YAML config file, bounded: a regular file of at most :data:`MAX_CONFIG_BYTES`, nesting
    Python can recurse through, and at most :data:`MAX_CONFIG_NODES` values once aliases are expanded.

    Raises:
        ConfigError: one line naming the file.
    """
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path}: cannot read (not a regular file)")
        if info.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {info.st_size} bytes; a config file may have at most {MAX_CONFIG_BYTES}")
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config") from None
    if _count_nodes(loaded, MAX_CONFIG_NODES) > MAX_CONFIG_NODES:
        raise ConfigError(f"{path}: more than {MAX_CONFIG_NODES} values once YAML aliases are expanded")
    return loaded


def _set_path(doc: dict, dotted: str, value: object) -> None:
    keys = dotted.split(".")
    node = doc
    for key in keys[:-1]:
        if not isinstance(node.get(key, {}), dict):
            raise ConfigError(f"--set {dotted}: {key} is not a section")
        node = node.setdefault(key, {})
    node[keys[-1]] = value


def parse_overrides(items: Sequence[str]) -> list[tuple[str, object]]:
    """``["optim.lr=1e-4", "trainable.parts=[mask_decoder]"]`` -> ``[(key, value), ...]`` (values parsed as YAML)."""
    out = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. optim.lr=1e-4")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        out.append((key.strip(), value))
    return out


def load_config(path: Optional[str | Path] = None, overrides: Sequence[str] = (), base: Optional[dict] = None) -> TrainConfig:
    """Read a YAML config, apply ``key=value`` overrides, validate.

    Raises:
        ConfigError: unreadable YAML, unknown keys or wrong types -- the message
            names the key's dotted path.
    """
    doc: dict = dict(base or {})
    if path is not None:
        path = Path(path)
        loaded = read_yaml(path) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        doc.update(loaded)
        # relative paths in a config file are relative to the file
        _resolve_relative(doc, path.parent)
    for key, value in parse_overrides(overrides):
        _set_path(doc, key, value)
    try:
        return TrainConfig.model_validate(doc)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = printable(".".join(str(p) for p in err["loc"]), 80)
            problems.append(f"{where}: {printable(err['msg'], 200)}")
        more = f"; and {len(problems) - MAX_PROBLEMS} more" if len(problems) > MAX_PROBLEMS else ""
        raise ConfigError("invalid training config: " + "; ".join(problems[:MAX_PROBLEMS]) + more) from None


def _resolve_relative(doc: dict, folder: Path) -> None:
    for section, key in (("data", "prepared"), ("data", "split"), ("model", "checkpoint"), ("logging", "dir")):
        node = doc.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), str):
            if "\x00" in node[key]:
                raise ConfigError(f"{section}.{key}: a path cannot contain a NUL character")
            if not Path(node[key]).is_absolute():
                node[key] = str((folder / node[key]).resolve())
