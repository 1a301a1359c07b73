"""``promptseg layers``: the parameter names of a model (for trainable.names globs)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("layers", help="list a model's parameters (names for trainable.names globs)",
                       description="List every parameter of a model with its shape and size.",
                       epilog="example: promptseg layers --model litemedsam --match 'mask_decoder.*'")
    p.add_argument("--model", default="litemedsam")
    p.add_argument("--checkpoint", help="weights (only to check they load; names do not depend on them)")
    p.add_argument("--match", metavar="GLOB", help="show only names matching this glob")
    p.set_defaults(func=run)


def run(args) -> int:
    import fnmatch

    from ..models import build_segmenter
    from ..training.trainable import parameter_table

    seg = build_segmenter(args.model, checkpoint=args.checkpoint, runtime="torch")
    rows = [r for r in parameter_table(seg.net) if not args.match or fnmatch.fnmatchcase(r[0], args.match)]
    for name, shape, count in rows:
        print(f"{name}\t{list(shape)}\t{count}")
    print(f"# {len(rows)} tensors, {sum(r[2] for r in rows):,} parameters")
    return 0
