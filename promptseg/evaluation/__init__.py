"""Evaluation: metrics, model benchmarking with simulated prompts, summaries.

- :mod:`.metrics` -- Dice, NSD, HD95, volumes per label, with spacing in mm.
- :mod:`.evaluate` -- prediction files vs reference files -> CSV + JSON summary.
- :mod:`.simulate` -- prompts simulated from reference masks (seeded).
- :mod:`.benchmark` -- run a model over a dataset, resumable, with prompt sweeps.
- :mod:`.summary` -- mean, sd, median and IQR of metric rows per label.

Datasets are read by :mod:`promptseg.datasets`; reports are drawn by :mod:`promptseg.reporting`.
"""
