"""``promptseg split``: train / val / test by case."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "split", help="split cases into train / val / test (never by slice)",
        description="Split the cases of a prepared folder (or a dataset) by case; seeded; optional k-fold.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  promptseg split prepared/ -o split.json\n  promptseg split prepared/ -o folds.json --k 5 --test 0.2",
    )
    p.add_argument("source", help="a prepared folder (promptseg prepare) or a dataset")
    p.add_argument("-o", "--output", required=True, help="split file to write (JSON)")
    p.add_argument("--train", type=float, default=0.8)
    p.add_argument("--val", type=float, default=0.1)
    p.add_argument("--test", type=float, default=0.1)
    p.add_argument("--k", type=int, help="k-fold: hold out --test, deal the rest into k folds (--train/--val ignored)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..datasets.splits import split_cases, write_split
    from ..io import check_destination
    from ..training.prepare import PREPARED_FILES, read_manifest

    source = Path(args.source)
    if (source / "manifest.csv").is_file():  # a prepared folder: the split file may go inside it
        check_destination(args.output, inputs=[source / name for name in PREPARED_FILES])
        _, rows = read_manifest(source)
        cases = sorted({r["case"] for r in rows})
    else:
        from ..datasets.layouts import load_dataset

        dataset = load_dataset(source)
        check_destination(args.output, inputs=[source, *dataset.files()])
        cases = [c.case_id for c in dataset.cases]
    if args.k:
        split = split_cases(cases, (1 - args.test, 0.0, args.test), seed=args.seed, k=args.k)
    else:
        split = split_cases(cases, (args.train, args.val, args.test), seed=args.seed)
    path = write_split(split, args.output)
    if args.k:
        print(f"{len(cases)} cases: test {len(split['test'])}, {args.k} folds of the rest -> {path}")
    else:
        print(f"{len(cases)} cases: train {len(split['train'])}, val {len(split['val'])}, test {len(split['test'])} -> {path}")
    return 0
