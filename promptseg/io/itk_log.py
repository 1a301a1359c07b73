"""ITK's own messages go to Python logging as one line each, never raw to the terminal.

ITK prints warnings such as ``WARNING: In .../itkGDCMSeriesFileNames.cxx, line 101
GDCMSeriesFileNames (0x55...): No Series were found`` straight to stderr, ahead of
promptseg's one-line error. :func:`route_itk_messages` installs a SimpleITK logger
(``SimpleITK.LoggerBase``, the library's hook for this) that logs the message part
on the ``promptseg.itk`` logger: INFO for warnings (``promptseg -v`` shows them),
DEBUG for the rest. The command line installs it; a program embedding promptseg
may call it too (it replaces ITK's process-wide output).
"""

from __future__ import annotations

import logging
import re

import SimpleITK as sitk

log = logging.getLogger("promptseg.itk")

_SOURCE_LINE = re.compile(r"^\s*(?:WARNING|ERROR|Debug)?:?\s*In .*, line \d+\s*$")
_OBJECT = re.compile(r"^\s*\w+ \(0x[0-9a-fA-F]+\):\s*")


def one_line(text: str) -> str:
    """The message of an ITK report, without its source-file line and object address."""
    lines = [line for line in str(text).splitlines() if line.strip() and not _SOURCE_LINE.match(line)]
    return " ".join(_OBJECT.sub("", line).strip() for line in lines)


class _ItkToLogging(sitk.LoggerBase):
    def DisplayText(self, text):  # noqa: N802 (SimpleITK's method names)
        log.debug("%s", one_line(text))

    def DisplayErrorText(self, text):  # noqa: N802
        log.info("%s", one_line(text))

    def DisplayWarningText(self, text):  # noqa: N802
        log.info("%s", one_line(text))

    def DisplayGenericOutputText(self, text):  # noqa: N802
        log.debug("%s", one_line(text))

    def DisplayDebugText(self, text):  # noqa: N802
        log.debug("%s", one_line(text))


_installed = None


def route_itk_messages() -> None:
    """Send ITK's messages to the ``promptseg.itk`` logger (idempotent)."""
    global _installed
    if _installed is None:
        _installed = _ItkToLogging()  # kept alive here: ITK holds only a pointer to it
        _installed.SetAsGlobalITKLogger()
