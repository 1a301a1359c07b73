"""Evaluation: metrics, labelled datasets, model benchmarking with simulated prompts, reports.

- :mod:`.metrics` -- Dice, NSD, HD95, volumes per label, with spacing in mm.
- :mod:`.evaluate` -- prediction files vs reference files -> CSV + JSON summary.
- :mod:`.datasets` -- the labelled-dataset layouts promptseg reads.
- :mod:`.simulate` -- prompts simulated from reference masks (seeded).
- :mod:`.benchmark` -- run a model over a dataset, resumable, with prompt sweeps.
- :mod:`.report` -- Markdown reports with figures from benchmark runs.
"""
