"""``promptseg train``: the training loop, the same on 1 CPU, 1 GPU or many (torchrun DDP).

Launch on several GPUs / nodes with torchrun (see docs/training.md)::

    torchrun --nproc_per_node 4 -m promptseg.cli train --config cfg.yaml

Each process reads ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` from torchrun's
environment; the data are sharded with a seeded ``DistributedSampler``;
gradients are averaged by ``DistributedDataParallel`` (NCCL on CUDA, gloo on
CPU). Rank 0 validates, logs and writes checkpoints.

Run folder (``logging.dir``)::

    config.yaml     the resolved configuration
    metrics.csv     epoch, step, train_loss, val_dice, lr, seconds
    events.*        TensorBoard (``tensorboard --logdir <dir>``)
    latest.pt       after every epoch: weights + everything needed to resume exactly
    best.pt         the epoch with the best validation Dice
Both ``.pt`` files load with ``promptseg segment --checkpoint``.

A kill at any moment leaves a run that ``--resume`` completes: every file is
written atomically, and at the end of an epoch ``latest.pt`` comes first, then
``best.pt``, then ``metrics.csv``. A resume continues after the epoch
``latest.pt`` holds, rewrites ``metrics.csv`` from its history (dropping the row
of an interrupted epoch) and rewrites ``best.pt`` when the kill fell between the
two checkpoints; a run killed in its first epoch starts again from epoch 1.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import ImageWriteError, PromptsegError
from ..io.atomic import atomic_path
from ..io.guard import check_output_folder
from .config import TrainConfig
from .embedding_cache import EmbeddingCache
from .prepare import read_manifest
from .samples import TrainingSamples, collate
from ..datasets.splits import read_split
from .trainable import apply_trainable, base_network, frozen_parts, inference_state_dict

log = logging.getLogger(__name__)

CSV_FIELDS = ["epoch", "step", "train_loss", "val_dice", "lr", "seconds"]


@dataclass
class TrainResult:
    """What :func:`train` did.

    Attributes:
        run_dir: the run folder (checkpoints, metrics.csv, config.yaml).
        best_val_dice: the best validation Dice (nan without validation cases).
        best_epoch: the epoch that reached it, 0-based (``metrics.csv`` and the progress bars count from 1).
        start_val_dice: the validation Dice of the starting weights, before any training step
            (nan without validation cases): fine-tuning helped only if ``best_val_dice`` beats it.
        epochs_run: epochs trained, counting those of a resumed run.
        history: one row per epoch (epoch, step, train_loss, val_dice, lr, seconds).
        encoded_for_cache: slices encoded into the embedding cache before the first epoch.
        train_samples: samples in one training epoch (all ranks together).
    """

    run_dir: Path
    best_val_dice: float
    best_epoch: int
    epochs_run: int
    history: list[dict] = field(default_factory=list)
    start_val_dice: float = float("nan")
    encoded_for_cache: int = 0
    train_samples: int = 0


# ---------------------------------------------------------------------------
# distributed helpers
def _dist_env() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def _init_distributed(device: torch.device) -> bool:
    rank, world, _ = _dist_env()
    if world <= 1:
        return False
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def _device(spec: str) -> torch.device:
    from ..device import resolve_device

    _, world, local = _dist_env()
    device = resolve_device(spec)
    if device.type == "cuda":
        if world > 1 and device.index is None:
            device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    return device


# ---------------------------------------------------------------------------
class TrainModule(torch.nn.Module):
    """Wraps the (possibly peft-wrapped) network so that ``forward(batch, device)`` is the
    training forward -- the form ``DistributedDataParallel`` needs to synchronise gradients."""

    def __init__(self, model: torch.nn.Module, segmenter) -> None:
        super().__init__()
        self.model = model
        self._train_forward = segmenter.train_forward

    def forward(self, batch: dict, device: torch.device):
        return self._train_forward(base_network(self.model), batch, device)


def _valid_region(batch: dict, shape: tuple[int, int], device) -> torch.Tensor:
    """``(B, 1, S, S)`` 1 inside each sample's resized image, 0 in the padding."""
    rows = torch.arange(shape[0], device=device)[None, :, None]
    cols = torch.arange(shape[1], device=device)[None, None, :]
    valid = batch["valid"].to(device)
    return ((rows < valid[:, 0, None, None]) & (cols < valid[:, 1, None, None])).float()[:, None]


def segmentation_loss(logits, iou_pred, target, weights) -> torch.Tensor:
    """Dice (MONAI, sigmoid, squared) + BCE on the logits, optionally + MSE of the IoU head."""
    from monai.losses import DiceLoss

    loss = logits.new_zeros(())
    if weights.dice:
        loss = loss + weights.dice * DiceLoss(sigmoid=True, squared_pred=True, reduction="mean")(logits, target)
    if weights.bce:
        loss = loss + weights.bce * F.binary_cross_entropy_with_logits(logits, target)
    if weights.iou_mse:
        with torch.no_grad():
            pred = logits > 0
            inter = (pred & (target > 0.5)).flatten(1).sum(1).float()
            union = (pred | (target > 0.5)).flatten(1).sum(1).float()
            real_iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
        loss = loss + weights.iou_mse * F.mse_loss(iou_pred[:, 0].float(), real_iou)
    return loss


def _dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    pred = (logits > 0).flatten(1).float()
    ref = (target > 0.5).flatten(1).float()
    total = pred.sum(1) + ref.sum(1)
    return torch.where(total > 0, 2 * (pred * ref).sum(1) / total.clamp(min=1), torch.ones_like(total))


def _lr_lambda(optim, steps_per_epoch: int, epochs: int):
    total = max(1, steps_per_epoch * epochs)

    def factor(step: int) -> float:
        if optim.warmup_steps and step < optim.warmup_steps:
            return (step + 1) / optim.warmup_steps
        if optim.schedule == "cosine":
            progress = (step - optim.warmup_steps) / max(1, total - optim.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if optim.schedule == "step":
            return optim.gamma ** ((step // max(1, steps_per_epoch)) // optim.step_size)
        return 1.0

    return factor


class _Loggers:
    def __init__(self, cfg: TrainConfig, run_dir: Path, enabled: bool) -> None:
        self.enabled, self.run_dir = enabled, run_dir
        self.tb = self.wandb = None
        if not enabled:
            return
        if cfg.logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(run_dir))
        if cfg.logging.wandb_project:
            try:
                import wandb
            except ImportError:
                raise PromptsegError("logging.wandb_project is set but the wandb package is not installed") from None
            self.wandb = wandb.init(project=cfg.logging.wandb_project, mode=cfg.logging.wandb_mode,
                                    dir=str(run_dir), config=cfg.model_dump(mode="json"), resume="allow")
        self.csv_path = run_dir / "metrics.csv"

    def log(self, row: dict) -> None:
        if not self.enabled:
            return
        for key in ("train_loss", "val_dice", "lr"):
            if row.get(key) is not None and row[key] == row[key]:
                if self.tb is not None:
                    self.tb.add_scalar(key, row[key], row["epoch"])
        if self.tb is not None:
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in row.items() if v is not None}, step=row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _save(path: Path, payload: dict) -> None:
    """``torch.save`` through an atomic write: ``path`` holds the old or the new checkpoint, never a part."""
    try:
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
    except RuntimeError as error:  # torch's zip writer reports a full disk as RuntimeError
        raise ImageWriteError(f"cannot write {path}: {str(error).splitlines()[0]}") from None


def write_metrics(run_dir: Path, history: list[dict]) -> Path:
    """Rewrite ``metrics.csv`` (atomically) with one row per epoch of ``history``.

    Written after ``latest.pt``, so the CSV never lists an epoch that the last
    checkpoint does not hold; a resume rewrites it from the checkpoint's history,
    dropping the row of an epoch that was interrupted.
    """
    path = run_dir / "metrics.csv"
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(history)
    return path


def _reconcile_best(run_dir: Path, latest: Path, state: dict) -> None:
    """After a kill between ``latest.pt`` and ``best.pt``: the best epoch is the latest one but
    ``best.pt`` is older (or missing) -- write it from ``latest.pt``'s weights."""
    best_path = run_dir / "best.pt"
    if state["best_epoch"] != state["epoch"]:
        return
    if best_path.is_file():
        try:
            if torch.load(best_path, map_location="cpu", weights_only=True).get("epoch") == state["epoch"]:
                return
        except Exception:  # noqa: BLE001 - an unreadable best.pt is rewritten below
            pass
    payload = torch.load(latest, map_location="cpu", weights_only=True)
    payload.pop("train_state", None)
    _save(best_path, payload)


def _model_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


#: what :func:`train` writes into ``logging.dir`` (TensorBoard adds its ``events.out.tfevents.*`` files)
TRAINING_RUN_FILES = ("config.yaml", "metrics.csv", "best.pt", "latest.pt", "ddp_ranks.json", "wandb")


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, segmenter=None,
          stop_after_epoch: Optional[int] = None) -> TrainResult:
    """Fine-tune a model as ``cfg`` says. See the module docstring for the outputs.

    Args:
        cfg: the validated configuration.
        resume: continue from ``<logging.dir>/latest.pt`` (same config) exactly.
        segmenter: an already-built starting model (default: built from ``cfg.model``).
        stop_after_epoch: end after this epoch as if interrupted (tests of resume).
    """
    from ..models import Capability, build_segmenter, has, require

    rank, world, _ = _dist_env()
    device = _device(cfg.train.device)
    distributed = _init_distributed(device)
    is_main = rank == 0
    torch.manual_seed(cfg.train.seed)
    run_dir = check_output_folder(cfg.logging.dir, inputs=(cfg.data.prepared, cfg.data.split, cfg.model.checkpoint),
                                  writes=TRAINING_RUN_FILES)
    latest = run_dir / "latest.pt"
    if resume and not latest.is_file():
        if not (run_dir / "config.yaml").is_file():
            raise PromptsegError(f"--resume: no run in {run_dir} (no latest.pt, no config.yaml)")
        log.warning("--resume: %s has no complete checkpoint yet (interrupted in its first epoch); "
                    "starting from epoch 1", run_dir)
        resume = False
    if not resume and latest.is_file():
        raise PromptsegError(f"{run_dir} already holds a run (latest.pt); use --resume or another logging.dir")
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(run_dir / "config.yaml") as tmp:
            Path(tmp).write_text(cfg.to_yaml(), encoding="utf-8")

    if segmenter is None:
        require(cfg.model.name, Capability.FINE_TUNING)
        segmenter = build_segmenter(cfg.model.name, checkpoint=cfg.model.checkpoint, runtime="torch")
    require(segmenter, Capability.FINE_TUNING)
    net = segmenter.net.to(device)
    model = apply_trainable(net, cfg.trainable, cfg.lora)
    frozen = frozen_parts(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise PromptsegError("nothing to train: the trainable section selects no parameter")

    info, rows = read_manifest(cfg.data.prepared)
    if info.get("model") != segmenter.name or int(info.get("input_size", -1)) != segmenter.input_size:
        raise PromptsegError(
            f"{cfg.data.prepared} was prepared for {info.get('model')} ({info.get('input_size')} px), "
            f"not {segmenter.name} ({segmenter.input_size} px): run 'promptseg prepare --model {segmenter.name}'"
        )
    cases = sorted({r["case"] for r in rows})
    sets = read_split(cfg.data.split, cfg.data.fold) if cfg.data.split else {"train": cases, "val": [], "test": []}
    unknown = sorted(set(sets["train"]) - set(cases))
    if unknown:
        raise PromptsegError(f"split names cases that are not in {cfg.data.prepared}: {', '.join(unknown[:5])}")

    cache, encoded = None, 0
    base = base_network(model)
    use_cache = "image_encoder" in frozen and cfg.train.cache_embeddings
    if use_cache and not has(segmenter, Capability.CACHED_EMBEDDINGS):
        use_cache = False
        if is_main:
            log.info("%s: image features are not cached (the backend re-encodes every sample)", segmenter.name)
    if use_cache:
        if is_main:
            cache, encoded = EmbeddingCache.build(cfg.data.prepared, sorted(set(sets["train"]) | set(sets["val"])),
                                                  base.image_encoder, segmenter.model_input, device, progress)
        if distributed:
            torch.distributed.barrier()
        if not is_main:
            cache, _ = EmbeddingCache.build(cfg.data.prepared, [], base.image_encoder, segmenter.model_input, device, False)
    train_rows = [r for r in rows if r["case"] in set(sets["train"])]
    val_rows = [r for r in rows if r["case"] in set(sets["val"])]
    train_set = TrainingSamples(cfg.data.prepared, train_rows, segmenter.model_input, cfg.prompts, cfg.train.seed, True, cache)
    val_set = TrainingSamples(cfg.data.prepared, val_rows, segmenter.model_input, cfg.prompts, cfg.train.seed, False, cache)
    if len(train_set) == 0:
        raise PromptsegError("no training sample: check the split and the prompt mode (empty slices train only with fixed-box)")
    sampler = torch.utils.data.DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True,
                                                  seed=cfg.train.seed, drop_last=False) if distributed else None
    generator = torch.Generator()
    loader_kwargs = dict(batch_size=cfg.train.batch_size, collate_fn=collate, num_workers=cfg.train.num_workers)

    module = TrainModule(model, segmenter)
    if distributed:
        # single-mask decoding leaves the other mask tokens' hypernetworks without gradients
        module = torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    optimizer = torch.optim.AdamW(trainable, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, betas=cfg.optim.betas)
    steps_per_epoch = math.ceil(math.ceil(len(train_set) / world) / cfg.train.batch_size / cfg.optim.accumulate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg.optim, steps_per_epoch, cfg.train.epochs))
    amp_dtype = None
    if device.type == "cuda" and cfg.optim.amp != "off":
        amp_dtype = torch.bfloat16 if cfg.optim.amp == "bf16" or (cfg.optim.amp == "auto" and torch.cuda.is_bf16_supported()) else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    start_epoch, step, best, best_epoch, history, stale = 0, 0, -1.0, -1, [], 0
    start_dice = float("nan")
    if not resume and is_main and len(val_set):  # the baseline fine-tuning has to beat
        start_dice = evaluate_samples(base_network(model), val_set, device, cfg.train.batch_size,
                                      segmenter.train_forward)
        log.info("validation Dice of the starting weights: %.4f", start_dice)
    if resume:
        state = torch.load(latest, map_location="cpu", weights_only=True)["train_state"]
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, step = state["epoch"] + 1, state["step"]
        best, best_epoch, history, stale = state["best"], state["best_epoch"], state["history"], state["stale"]
        start_dice = state.get("start_val_dice", float("nan"))
        if is_main:  # undo what an interrupted epoch wrote after latest.pt
            write_metrics(run_dir, history)
            _reconcile_best(run_dir, latest, state)

    loggers = _Loggers(cfg, run_dir, is_main)
    net = base_network(model)
    epoch = start_epoch - 1
    try:
        for epoch in range(start_epoch, cfg.train.epochs):
            t0 = time.perf_counter()
            train_set.set_epoch(epoch)
            if sampler is not None:
                sampler.set_epoch(epoch)
                loader = torch.utils.data.DataLoader(train_set, sampler=sampler, **loader_kwargs)
            else:
                generator.manual_seed(cfg.train.seed * 1_000_003 + epoch)
                loader = torch.utils.data.DataLoader(train_set, shuffle=True, generator=generator, **loader_kwargs)
            module.train()
            for part in frozen:
                getattr(net, part).eval()
            losses = []
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", unit="batch", leave=False,
                       disable=not (progress and is_main))
            optimizer.zero_grad(set_to_none=True)
            for i, batch in enumerate(bar):
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits, iou = module(batch, device)
                    valid = _valid_region(batch, logits.shape[-2:], device)
                    target = batch["mask"].to(device)
                    loss = segmentation_loss(logits.float() * valid - 1e4 * (1 - valid), iou, target, cfg.loss)
                scaler.scale(loss / cfg.optim.accumulate).backward()
                losses.append(float(loss.detach()))
                if (i + 1) % cfg.optim.accumulate == 0 or i + 1 == len(loader):
                    if cfg.optim.grad_clip:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(trainable, cfg.optim.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    scheduler.step()
                    step += 1
                    bar.set_postfix(loss=f"{losses[-1]:.4f}")
                    if cfg.train.max_steps and step >= cfg.train.max_steps:
                        break
            train_loss = float(np.mean(losses)) if losses else float("nan")
            if distributed:
                t = torch.tensor([train_loss], device=device)
                torch.distributed.all_reduce(t)
                train_loss = float(t) / world
            val_dice = (evaluate_samples(net, val_set, device, cfg.train.batch_size, segmenter.train_forward)
                        if (is_main and len(val_set)) else float("nan"))
            row = {"epoch": epoch + 1, "step": step, "train_loss": train_loss, "val_dice": val_dice,
                   "lr": scheduler.get_last_lr()[0], "seconds": round(time.perf_counter() - t0, 2)}
            history.append(row)
            improved = val_dice == val_dice and val_dice > best
            if improved or (val_dice != val_dice and best < 0):
                best, best_epoch, stale = (val_dice if val_dice == val_dice else best), epoch, 0
            else:
                stale += 1
            if is_main:
                # latest.pt first: whatever a kill interrupts after it, a resume repairs from it
                weights = inference_state_dict(model)
                meta = {"epoch": epoch, "val_dice": val_dice, "model_name": cfg.model.name,
                        "config": cfg.model_dump(mode="json")}
                _save(latest, {"model": weights, **meta, "train_state": {
                    "model": _model_state(model), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch, "step": step,
                    "best": best, "best_epoch": best_epoch, "history": history, "stale": stale,
                    "start_val_dice": start_dice}})
                if improved:
                    _save(run_dir / "best.pt", {"model": weights, **meta})
                write_metrics(run_dir, history)
                loggers.log(row)
            if distributed:
                torch.distributed.barrier()
            if cfg.train.max_steps and step >= cfg.train.max_steps:
                break
            if cfg.train.early_stopping and stale >= cfg.train.early_stopping:
                break
            if stop_after_epoch is not None and epoch >= stop_after_epoch:
                break
    finally:
        loggers.close()
    if distributed:
        _record_rank_agreement(model, run_dir, rank, world)
    if is_main and not (run_dir / "best.pt").exists() and latest.exists():
        # no validation set: the last epoch is the best we know
        payload = torch.load(latest, map_location="cpu", weights_only=True)
        payload.pop("train_state", None)
        _save(run_dir / "best.pt", payload)
    return TrainResult(run_dir, best, best_epoch, epoch + 1, history, encoded_for_cache=encoded,
                       train_samples=len(train_set), start_val_dice=start_dice)


def _record_rank_agreement(model: torch.nn.Module, run_dir: Path, rank: int, world: int) -> None:
    """Gather every rank's weight digest; rank 0 writes them to ``ddp_ranks.json`` (they must be equal)."""
    from ..io.jsonfile import write_json
    from .embedding_cache import module_digest

    digests: list = [None] * world
    torch.distributed.all_gather_object(digests, module_digest(base_network(model), length=64))
    if rank == 0:
        write_json(run_dir / "ddp_ranks.json", {"world_size": world, "weight_digests": digests})
        if len(set(digests)) != 1:
            raise PromptsegError(f"DDP ranks ended with different weights: {digests}")


@torch.no_grad()
def evaluate_samples(net: torch.nn.Module, samples: TrainingSamples, device: torch.device, batch_size: int = 8,
                     train_forward=None) -> float:
    """Mean Dice (model-input grid, padding excluded) of ``net`` on deterministic prompts.

    ``train_forward`` is the backend's ``train_forward`` (:class:`~promptseg.models.capabilities.Trainable`)
    (default: the SAM-style one).
    """
    from ..models.sam_core import sam_style_train_forward

    train_forward = train_forward or sam_style_train_forward
    was_training = net.training
    net.eval()
    loader = torch.utils.data.DataLoader(samples, batch_size=batch_size, shuffle=False, collate_fn=collate)
    scores = []
    for batch in loader:
        logits, _ = train_forward(net, batch, device)
        valid = _valid_region(batch, logits.shape[-2:], device)
        logits = logits.float() * valid - 1e4 * (1 - valid)
        scores.append(_dice(logits, batch["mask"].to(device)).cpu())
    net.train(was_training)
    return float(torch.cat(scores).mean()) if scores else float("nan")
