"""Reading and writing images and label maps as :class:`~promptseg.volume.Volume`.

Public API:

* :func:`load_volume` -- NIfTI, NRRD, MetaImage, DICOM (folder or file),
  MedSAM NPZ, PNG/JPEG/TIFF/BMP.
* :func:`load_labels` -- integer label maps, optionally checked against a reference grid.
* :func:`save_mask` / :func:`save_volume` -- atomic writes on the reference grid;
  :func:`check_output_path` / :func:`check_destination` fail early on a path they cannot write.
* :func:`list_dicom_series` -- the series in a DICOM folder.
* :func:`read_budget` / :func:`set_read_budget` -- the most bytes one image may decode to
  (``PROMPTSEG_MAX_IMAGE_BYTES``); see :mod:`promptseg.io.limits` for what readers refuse.
* :data:`SUPPORTED_IMAGE_SUFFIXES` / :data:`SUPPORTED_OUTPUT_SUFFIXES`.
"""

from .atomic import atomic_path, atomic_paths
from .common import SUPPORTED_IMAGE_SUFFIXES, supported_formats_text
from .limits import read_budget, set_read_budget
from .readers import load_labels, load_volume
from .writers import (
    SUPPORTED_OUTPUT_SUFFIXES,
    check_destination,
    check_output_path,
    save_mask,
    save_volume,
)



def __getattr__(name: str):
    if name == "list_dicom_series":  # the DICOM readers import pydicom: loaded when DICOM is read
        from .dicom.series import list_dicom_series

        return list_dicom_series
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SUPPORTED_IMAGE_SUFFIXES",
    "SUPPORTED_OUTPUT_SUFFIXES",
    "atomic_path",
    "atomic_paths",
    "check_destination",
    "check_output_path",
    "list_dicom_series",
    "load_labels",
    "load_volume",
    "read_budget",
    "save_mask",
    "save_volume",
    "set_read_budget",
    "supported_formats_text",
]
