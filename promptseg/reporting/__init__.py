"""Reporting: pictures and pages made from segmentations and benchmark runs.

- :mod:`.overlay` -- overlay montages: segmented slices with masks and prompts drawn on them.
- :mod:`.figures` -- figures of benchmark metrics (heatmap, box plots, sweep curves, case montages, dataset overview).
- :mod:`.report` -- the Markdown / HTML report of one or more benchmark run folders.
"""
