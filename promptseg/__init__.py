"""promptseg: promptable segmentation of medical images with Segment-Anything-family models."""

__version__ = "0.1.0"
