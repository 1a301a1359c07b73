"""One entry point per direction for label maps in DICOM: RTSTRUCT or SEG, chosen by name or by the file."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

from ...errors import DicomError
from ...volume import Volume
from .objects import modality_of
from .rtstruct_read import RoiLabels, read_rtstruct
from .rtstruct_write import write_rtstruct
from .seg import read_seg, write_seg

#: Output formats of :func:`write_dicom_labels`.
DICOM_LABEL_FORMATS = ("rtstruct", "seg")


def write_dicom_labels(
    labels: Volume,
    reference: Volume,
    path,
    format: str = "rtstruct",
    *,
    names: Optional[Mapping[int, str]] = None,
    colors: Optional[Mapping[int, tuple]] = None,
    add_to=None,
    seg_type: str = "LABELMAP",
    series_description: str = "promptseg",
    algorithm: Optional[str] = None,
) -> Path:
    """Write ``labels`` on the DICOM series ``reference`` as ``"rtstruct"`` or ``"seg"``.

    ``add_to`` applies to RTSTRUCT only, ``seg_type`` (``"LABELMAP"`` / ``"BINARY"``)
    to SEG only; the rest as :func:`~promptseg.io.dicom.write_rtstruct`.

    Raises:
        DicomError: unknown format, ``add_to`` with SEG, and as the writers.
    """
    kind = str(format).lower()
    if kind not in DICOM_LABEL_FORMATS:
        raise DicomError(f"unknown DICOM label format {format!r}; choose {' or '.join(DICOM_LABEL_FORMATS)}")
    options = dict(names=names, colors=colors, series_description=series_description, algorithm=algorithm)
    if kind == "seg":
        if add_to is not None:
            raise DicomError("adding to an existing object works for RTSTRUCT only (--format rtstruct)")
        return write_seg(labels, reference, path, segmentation_type=seg_type, **options)
    return write_rtstruct(labels, reference, path, add_to=add_to, **options)


def read_dicom_labels(path, reference: Volume) -> RoiLabels:
    """Read an RTSTRUCT or a SEG (told apart by its Modality) as a label map on ``reference``.

    Raises:
        DicomError: not an RTSTRUCT or SEG, and as the readers.
    """
    modality = modality_of(path) if Path(path).is_file() else None
    if modality == "SEG":
        return read_seg(path, reference)
    if modality == "RTSTRUCT" or modality is None:
        return read_rtstruct(path, reference)
    raise DicomError(f"{path} is a DICOM {modality} object, not an RTSTRUCT or SEG")
