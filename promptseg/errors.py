"""Exceptions raised by promptseg.

Every error a user can cause (a bad file, a bad prompt, a bad checkpoint) is a
:class:`PromptsegError`; the CLI prints its message on one line and exits with
status 2. Anything else is a bug.
"""

from __future__ import annotations


class PromptsegError(Exception):
    """Base class for errors caused by user input."""


class ImageReadError(PromptsegError):
    """An image or volume could not be read, or holds unusable data."""


class ImageWriteError(PromptsegError):
    """An output file could not be written."""


class GeometryError(PromptsegError):
    """Two images do not share a voxel grid, or a mask does not fit its image."""


class PromptError(PromptsegError):
    """A prompt is malformed or does not fit the image."""


class CheckpointError(PromptsegError):
    """A checkpoint file is missing, unreadable or does not match the model."""


class ModelError(PromptsegError):
    """An unknown model name or an unusable model configuration."""


class DicomError(PromptsegError):
    """A DICOM object (RTSTRUCT, SEG, series) is malformed, or does not fit the series it refers to."""


class NodeConfigError(PromptsegError):
    """A DICOM node configuration file is missing, not valid YAML, or breaks a rule of its schema."""


class OptionError(PromptsegError, ValueError):
    """An option is out of range or unusable (stop-rule parameters, a device name, ...).

    Also a ``ValueError``, so code that validated options with ``ValueError`` keeps working.
    """
