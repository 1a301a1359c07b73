"""Batch runs: segment a folder or a manifest of cases with one model per process, resumably and in shards.

- :mod:`.cases` -- the cases of a folder of images or a CSV / JSON manifest (:func:`load_cases`);
- :mod:`.shard` -- which cases a process takes (``--shard i/n`` or its ``torchrun`` rank);
- :mod:`.engine` -- :func:`run_batch`: skip finished cases, record failures, write the summary.

>>> from promptseg.batch import BatchSettings, load_cases, run_batch
>>> from promptseg.prompts.source import PromptSource
>>> cases = load_cases("scans/", "out/", prompts_dir="prompts/")       # out/<case>.nii.gz
>>> outcomes = run_batch(cases, promptseg.build_segmenter("litemedsam"), BatchSettings(), summary="out/summary.csv")
"""

from .cases import BatchCase, BatchError, cases_from_folder, cases_from_manifest, load_cases
from .engine import BatchSettings, CaseOutcome, run_batch, write_summary
from .shard import Shard, choose_shard, parse_shard, shard_from_env

__all__ = [
    "BatchCase",
    "BatchError",
    "BatchSettings",
    "CaseOutcome",
    "Shard",
    "cases_from_folder",
    "cases_from_manifest",
    "choose_shard",
    "load_cases",
    "parse_shard",
    "run_batch",
    "shard_from_env",
    "write_summary",
]
