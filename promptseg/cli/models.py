"""``promptseg models``: the model backends."""

from __future__ import annotations


def register(sub) -> None:
    models = sub.add_parser("models", help="list the model backends", description="List the model backends.")
    models.set_defaults(func=run)


def run(args) -> int:
    from ..models import MODELS

    for spec in MODELS.values():
        extras = ", ".join(c.value for c in sorted(spec.capabilities, key=lambda c: c.value))
        print(f"{spec.name}\n  {spec.description}\n  input {spec.input_size} px; {spec.normalisation}\n"
              f"  weights: {spec.checkpoint}\n  also: {extras or 'nothing beyond prompted 2D and chaining'}")
    return 0


