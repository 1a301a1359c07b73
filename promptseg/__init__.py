"""promptseg: promptable segmentation of medical images with Segment-Anything-family models.

The main calls, importable from the top level::

    import promptseg
    vol = promptseg.load_volume("scan.nii.gz")                 # Volume: array (z, y, x) + geometry
    model = promptseg.build_segmenter("litemedsam")            # bundled LiteMedSAM weights
    obj = promptseg.make_object(slice=33, box=(206, 347, 229, 368), label=1, name="tumour")
    result = promptseg.segment(vol, [obj], model)              # 3D propagation with automatic stop
    result.save("tumour.nii.gz")                               # on exactly the input grid

Heavy dependencies (torch, SimpleITK) are imported on first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Volume": "promptseg.volume",
    "load_volume": "promptseg.io",
    "load_labels": "promptseg.io",
    "save_mask": "promptseg.io",
    "save_volume": "promptseg.io",
    "normalize": "promptseg.intensity",
    "build_segmenter": "promptseg.models",
    "MODELS": "promptseg.models",
    "Segmenter": "promptseg.models",
    "make_object": "promptseg.prompts",
    "load_prompt_file": "promptseg.prompts",
    "ObjectPrompt": "promptseg.prompts",
    "Point": "promptseg.prompts",
    "segment": "promptseg.inference",
    "dice": "promptseg.evaluation.metrics",
    "SegmentationResult": "promptseg.inference",
    "StopRule": "promptseg.inference",
    "Stop": "promptseg.stops",
    "StopReason": "promptseg.stops",
    "save_overlay": "promptseg.reporting.overlay",
    "Session": "promptseg.session",
    "PromptsegError": "promptseg.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'promptseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
