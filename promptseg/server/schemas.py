"""Request bodies of the HTTP API (validated by pydantic, listed in ``/openapi.json``)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenSession(_Body):
    path: str = Field(description="scan path relative to a --data folder (file or DICOM series folder)")
    model: Optional[str] = Field(None, description="model name (default: the server's first model)")
    modality: Optional[Literal["ct", "mr", "other"]] = Field(None, description="override the detected modality")
    window: Optional[str] = Field(None, description="model input window: preset or 'level,width' (CT)")
    series: Optional[str] = Field(None, description="DICOM SeriesInstanceUID when the folder holds several")


class PromptBody(_Body):
    label: int = Field(1, ge=1, le=65535)
    slice: int = Field(ge=0, description="z index")
    box: Optional[list[float]] = Field(None, min_length=4, max_length=4, description="[x0, y0, x1, y1] IJK pixels")
    points: list[list[float]] = Field(default_factory=list, description="[[x, y, 1|0], ...] (1 inside, 0 outside)")


class LabelBody(_Body):
    label: int = Field(1, ge=1, le=65535)


class FocusBody(_Body):
    slice: int = Field(ge=0)


class LabelUpdate(_Body):
    name: Optional[str] = Field(None, max_length=200)
    color: Optional[list[int]] = Field(None, min_length=3, max_length=3)
    visible: Optional[bool] = None


class SliceMask(_Body):
    slice: int = Field(ge=0)
    bbox: Optional[list[int]] = Field(None, min_length=4, max_length=4)
    bits: str = ""


class EditBody(_Body):
    label: int = Field(ge=1, le=65535)
    slices: list[SliceMask] = Field(min_length=1, description="the label's new mask on each painted slice")


class ReferenceBody(_Body):
    path: str = Field(description="reference label map relative to a --data folder")


class ExportBody(_Body):
    format: Literal["nii.gz", "nii", "nrrd", "mha", "rtstruct", "seg"] = "nii.gz"
    name: Optional[str] = Field(None, max_length=200, description="file name (no folders); default from the scan")
