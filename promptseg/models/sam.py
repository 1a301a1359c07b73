"""SAM / MedSAM backends (being written)."""

SPECS: dict = {}
