"""Fine-tuning: prepare samples, train with a validated config (case splits: :mod:`promptseg.datasets.splits`).

- :mod:`.prepare` -- volumes + label maps -> 2D training samples at the model's input size.
- :mod:`.config` -- the validated training configuration (YAML + ``--set key=value``).
- :mod:`.trainable` -- what trains: full, parts, parameter globs, or LoRA adapters.
- :mod:`.samples` -- the training dataset and its prompt simulation.
- :mod:`.embedding_cache` -- image embeddings computed once when the encoder is frozen.
- :mod:`.loop` -- the training loop (1 CPU, 1 GPU, or torchrun DDP).
"""
