"""``promptseg train``: fine-tune with a validated YAML config."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="fine-tune a model (full, parts, parameter globs or LoRA)",
        description="Fine-tune with a YAML config (see examples/configs/ and docs/training.md). Unknown keys and "
        "wrong types are errors naming the key. Runs on 1 CPU or GPU; under torchrun on several GPUs / nodes.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  promptseg train --config examples/configs/quickstart.yaml\n"
        "  promptseg train --config cfg.yaml --set optim.lr=1e-4 --set trainable.mode=lora\n"
        "  promptseg train --config cfg.yaml --resume            # continue after a crash, exactly\n"
        "  torchrun --nproc_per_node 4 -m promptseg.cli train --config cfg.yaml\n"
        "  promptseg train --config cfg.yaml --print-config      # the resolved config with all defaults",
    )
    p.add_argument("--config", help="YAML config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. optim.lr=1e-4 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from <logging.dir>/latest.pt")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def summary_lines(result) -> list[str]:
    """What ``promptseg train`` prints at the end: epochs, the validation Dice before and after, and a warning
    when fine-tuning did not beat the starting weights."""
    lines = [f"{result.epochs_run} epoch(s) trained on {result.train_samples} samples per epoch"]
    best, start = result.best_val_dice, result.start_val_dice
    if best != best or best < 0:
        return lines + ["no validation cases: best.pt is the last epoch's weights"]
    before = f"{start:.4f} with the starting weights, " if start == start else ""
    lines.append(f"validation Dice (cases not trained on): {before}{best:.4f} after fine-tuning "
                 f"(best.pt: epoch {result.best_epoch + 1} of {result.epochs_run})")
    if start == start and best <= start:
        lines.append("warning: fine-tuning did not beat the starting weights on the validation cases; keep using them "
                     "(or train on more cases, or with a lower learning rate)")
    return lines


def run(args) -> int:
    from ..training.config import load_config
    from ..training.loop import train

    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
    if args.config and not args.resume:  # the run folder's config.yaml is rewritten: never the user's own file
        from pathlib import Path

        from ..io.guard import check_not_input

        check_not_input(Path(cfg.logging.dir) / "config.yaml", [args.config])
    result = train(cfg, resume=args.resume, progress=not args.no_progress)
    if int(__import__("os").environ.get("RANK", 0)) == 0:
        for line in summary_lines(result):
            print(line)
        print(f"checkpoints: {result.run_dir / 'best.pt'}, {result.run_dir / 'latest.pt'}")
    return 0
