"""SAM2 / SAM2.1 / MedSAM2 backends (being written)."""

SPECS: dict = {}
