"""Datasets: the files promptseg reads and writes about labelled cases, used by evaluation and training alike.

- :mod:`.layouts` -- labelled-dataset layouts (images/labels folders, nnU-Net, CSV/JSON manifests, MedSAM NPZ).
- :mod:`.splits` -- case-level train/val/test splits and k-fold: writing them, and reading them back.
- :mod:`.metrics_table` -- the per-case metrics table (CSV) that evaluate and benchmark write and reports read.
"""
