"""Intensity normalisation to uint8, the way the MedSAM family was trained.

MedSAM's pre-processing (``pre_CT_MR.py``) turns every scan into uint8 before
the model sees it:

* **CT**: clip to a window ``[level - width/2, level + width/2]`` HU (default
  soft tissue, level 40 / width 400, i.e. -160..240 HU), scale linearly to
  0..255 and cast with ``np.uint8`` (truncation).
* **MR and everything else**: clip to the 0.5th..99.5th percentiles of the
  voxels > 0 over the whole volume, scale to 0..255, truncate, and keep the
  voxels that were <= 0 at exactly 0.
* 8-bit images (uint8, grayscale or RGB) are already in model range and pass
  through unchanged, unless a window is asked for explicitly.

One deliberate difference: MedSAM scales the clipped CT by the *actual*
minimum/maximum of the clipped volume; promptseg scales by the window bounds,
so a crop or a slice gets the same grey values as the whole scan. Both are
identical whenever the volume reaches both window ends (any CT with air and
bone for the default window).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np

from .errors import ImageReadError, PromptsegError
from .volume import Volume

#: Named CT windows, ``(level, width)`` in HU.
WINDOWS: dict[str, tuple[float, float]] = {
    "soft-tissue": (40, 400),
    "lung": (-600, 1500),
    "brain": (40, 80),
    "bone": (400, 1800),
}
#: Window used for CT when none is given.
DEFAULT_CT_WINDOW = WINDOWS["soft-tissue"]
#: Percentiles (of voxels > 0) used for MR and other modalities.
PERCENTILES = (0.5, 99.5)
#: Modality names :func:`normalize` accepts.
MODALITIES = ("ct", "mr", "other")
#: :func:`guess_modality`: a 0.5th percentile below this (HU) means CT (air is about -1000 HU).
CT_AIR_THRESHOLD = -500.0

WindowSpec = Union[str, Sequence[float], None]


def resolve_window(spec: WindowSpec) -> Optional[tuple[float, float]]:
    """Parse a window specification into ``(level, width)`` HU.

    Args:
        spec: None; a preset name from :data:`WINDOWS` (case-insensitive,
            ``_`` or ``-``); a ``"level,width"`` string such as ``"40,400"``;
            or a ``(level, width)`` pair.

    Returns:
        ``(level, width)`` as floats, or None when ``spec`` is None.

    Raises:
        PromptsegError: unknown preset, malformed string, width <= 0 or non-finite values.
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        name = spec.strip().lower().replace("_", "-")
        if name in WINDOWS:
            return tuple(float(v) for v in WINDOWS[name])  # type: ignore[return-value]
        parts = name.split(",")
        try:
            values = [float(part) for part in parts]
        except ValueError:
            values = []
        if len(values) != 2:
            raise PromptsegError(
                f"unknown window {spec!r}: use a preset ({', '.join(WINDOWS)}) "
                "or 'level,width' in HU such as '40,400'"
            )
    else:
        try:
            values = [float(v) for v in spec]
        except (TypeError, ValueError):
            raise PromptsegError(f"a window must be (level, width) numbers, got {spec!r}") from None
        if len(values) != 2:
            raise PromptsegError(f"a window must be (level, width), got {len(values)} values")
    level, width = values
    if not (np.isfinite(level) and np.isfinite(width)):
        raise PromptsegError(f"window level and width must be finite, got {level}, {width}")
    if width <= 0:
        raise PromptsegError(f"window width must be > 0, got {width:g}")
    return (level, width)


def _modality_name(value: str) -> str:
    """Map a user or DICOM modality string to ``ct`` / ``mr`` / ``other``."""
    name = value.strip().lower()
    if name == "ct":
        return "ct"
    if name in ("mr", "mri"):
        return "mr"
    return "other"


def guess_modality(volume: Volume) -> str:
    """Guess ``"ct"``, ``"mr"`` or ``"other"`` for a volume.

    Rules, in order:

    1. the DICOM modality when known (``CT`` -> ct, ``MR`` -> mr, anything
       else such as PT/US/CR -> other);
    2. uint8, bool or RGB data -> other (already display-range);
    3. signed or float data whose 0.5th percentile is below -500 -> ct (CT in
       HU has air at about -1000 HU);
    4. everything else -> mr.

    CT stored without its rescale (unsigned raw values) is therefore guessed
    as mr; the guess is always overridable with ``normalize(..., modality=...)``
    (CLI ``--modality``) or an explicit window.
    """
    if volume.modality:
        return _modality_name(volume.modality)
    array = volume.array
    if array.dtype in (np.uint8, np.bool_) or volume.is_rgb:
        return "other"
    if array.dtype.kind in "if" and array.size:
        if float(np.percentile(array, PERCENTILES[0])) < CT_AIR_THRESHOLD:
            return "ct"
    return "mr"


def resolve_modality(volume: Volume, modality: Optional[str] = None) -> str:
    """The modality rule to use: explicit ``modality`` > ``volume.modality`` > :func:`guess_modality`.

    Args:
        volume: the image.
        modality: ``"ct"``, ``"mr"`` (or ``"mri"``), ``"other"``, or ``None``/``"auto"``;
            case-insensitive.

    Raises:
        PromptsegError: an unknown modality name.
    """
    if modality is not None and modality.strip().lower() != "auto":
        name = modality.strip().lower()
        if name not in MODALITIES and name != "mri":
            raise PromptsegError(
                f"unknown modality {modality!r}: use one of {', '.join(MODALITIES)} (or auto)"
            )
        return _modality_name(name)
    return guess_modality(volume)


@dataclass(frozen=True)
class IntensityMapping:
    """A linear intensity -> uint8 mapping, fixed once per volume and applied to any part of it.

    Values are clipped to ``[lower, upper]`` and scaled to 0..255 (truncated as
    ``np.uint8`` does); with ``zero_nonpositive`` voxels <= 0 map to 0 (MedSAM's MR
    rule). ``lower is None`` means "already uint8: pass through".
    """

    lower: Optional[float]
    upper: Optional[float]
    zero_nonpositive: bool = False

    def __call__(self, array: np.ndarray) -> np.ndarray:
        """Map ``array`` (any shape) to uint8 of the same shape."""
        if self.lower is None:
            return np.array(array, dtype=np.uint8, copy=True)
        if self.upper <= self.lower:
            return np.zeros(array.shape, dtype=np.uint8)
        scaled = (np.clip(array.astype(np.float64), self.lower, self.upper) - self.lower) / (self.upper - self.lower)
        scaled *= 255.0
        if self.zero_nonpositive:
            scaled[array <= 0] = 0.0
        return scaled.astype(np.uint8)


def window_mapping(level: float, width: float) -> IntensityMapping:
    """Clip to ``[level - width/2, level + width/2]``, lower -> 0, upper -> 255."""
    return IntensityMapping(level - width / 2.0, level + width / 2.0)


def percentile_mapping(
    array: np.ndarray, percentiles: tuple[float, float] = PERCENTILES, source: str = "the image"
) -> IntensityMapping:
    """MedSAM's MR rule: bounds = percentiles of the voxels > 0 of the whole ``array``.

    Raises:
        ImageReadError: no voxel is > 0.
    """
    positive = array[array > 0]
    if positive.size == 0:
        raise ImageReadError(
            f"{source} has no voxel > 0, so the MR/percentile normalisation is undefined; "
            "pass modality='ct' or a window (CLI: --modality ct / --window L,W)"
        )
    lower, upper = (float(v) for v in np.percentile(positive, percentiles))
    return IntensityMapping(lower, upper, zero_nonpositive=True)


def intensity_mapping(
    volume: Volume,
    modality: Optional[str] = None,
    window: WindowSpec = None,
) -> IntensityMapping:
    """The mapping :func:`normalize` applies to ``volume`` (statistics over the whole volume).

    Use it to normalise slices one at a time with exactly the same result as
    normalising the whole volume: ``intensity_mapping(vol)(vol.array[z])``.
    """
    resolved_window = resolve_window(window)
    if resolved_window is not None:
        return window_mapping(*resolved_window)
    if volume.array.dtype == np.uint8:
        return IntensityMapping(None, None)
    if resolve_modality(volume, modality) == "ct":
        return window_mapping(*DEFAULT_CT_WINDOW)
    return percentile_mapping(volume.array, source=str(volume.metadata.get("source", "the image")))


def normalize(
    volume: Volume,
    modality: Optional[str] = None,
    window: WindowSpec = None,
) -> np.ndarray:
    """Intensities of ``volume`` as the uint8 the MedSAM-family models expect.

    Args:
        volume: image ``(z, y, x)`` or ``(z, y, x, 3)``.
        modality: ``"ct"``, ``"mr"``, ``"other"`` or None (then ``volume.modality``,
            then :func:`guess_modality`).
        window: ``(level, width)``, ``"level,width"`` or a preset name
            (:data:`WINDOWS`). When given, windowing is applied whatever the
            modality or dtype.

    Returns:
        uint8 array with the same shape as ``volume.array``.

    Raises:
        PromptsegError: bad window or modality; ImageReadError when the
            percentile rule finds no voxel > 0.
    """
    return intensity_mapping(volume, modality, window)(volume.array)


def describe_intensity(volume: Volume) -> dict:
    """Summary statistics of the voxel values, for ``promptseg info``.

    Returns:
        ``{"dtype": str, "min", "max", "mean", "p0.5", "p99.5": float}`` over all
        voxels (all channels for RGB).
    """
    array = volume.array
    low, high = (float(v) for v in np.percentile(array, PERCENTILES))
    return {
        "dtype": str(array.dtype),
        "min": float(array.min()),
        "max": float(array.max()),
        "mean": float(array.mean(dtype=np.float64)),
        "p0.5": low,
        "p99.5": high,
    }


class NormalizedSlices:
    """Slices of a volume normalised on first access (and kept), all with one mapping.

    Segmenting a few slices of a large scan then normalises only those; the
    result is identical to indexing :func:`normalize`'s output. Supports
    ``len()``, ``.shape``, and ``slices[z]`` -> ``(H, W)`` or ``(H, W, 3)`` uint8.
    """

    def __init__(self, array: np.ndarray, mapping: IntensityMapping) -> None:
        self.array, self.mapping = array, mapping
        self._done: dict[int, np.ndarray] = {}

    @classmethod
    def of(cls, volume: Volume, modality: Optional[str] = None, window: WindowSpec = None) -> "NormalizedSlices":
        return cls(volume.array, intensity_mapping(volume, modality, window))

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    def __len__(self) -> int:
        return self.array.shape[0]

    def __getitem__(self, z: int) -> np.ndarray:
        z = int(z)
        if z not in self._done:
            self._done[z] = self.mapping(self.array[z])
        return self._done[z]

    def __array__(self, dtype=None, copy=None):
        out = self.mapping(self.array)
        return out if dtype is None else out.astype(dtype)
