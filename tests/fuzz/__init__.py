"""promptseg's fuzz harness: mutated real files against every reader, the prompt-file parser and
the training config, each target running in a memory-capped worker process with a time limit.

``make fuzz`` runs the long campaign (``python -m tests.fuzz``); ``tests/test_fuzz.py`` runs a short
one inside ``make test``. See docs/reliability.md for the outcome classes and the measured counts.
"""
