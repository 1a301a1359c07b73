"""Why propagation ended in a direction: one vocabulary for every propagation engine.

Chaining (:mod:`promptseg.inference.chain`) and SAM2 memory propagation
(:mod:`promptseg.models.sam2_memory`) both report, per object and direction
(``"up"`` = increasing z, ``"down"``), a :class:`Stop`: a :class:`StopReason` a
program can test, the slice where the decision fell (when there is one), and a
sentence with the measured values for people (``str(stop)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Optional


class StopReason(str, Enum):
    """Why a direction of propagation ended."""

    #: the volume's first / last slice was reached
    END_OF_VOLUME = "end of volume"
    #: the object's given z-range (or its last key slice) was reached
    END_OF_Z_RANGE = "end of z-range"
    #: the prompted slice itself gave no mask: nothing to propagate
    NOTHING_ON_PROMPTED_SLICE = "no object found on the prompted slice"
    #: the previous slice's mask was empty, so no box for this one
    PREVIOUS_SLICE_EMPTY = "previous slice empty"
    #: the model's mask on this slice was empty (or below the minimum area)
    EMPTY_MASK = "empty mask"
    #: the stop rule's appearance test: the mask does not look like the prompted object
    NOT_OBJECT_LIKE = "does not look like the object"
    #: the stop rule's extent test: beyond the object's expected reach without clear overlap
    BEYOND_REACH = "beyond the object's reach"
    #: SAM2's object score says the object is absent
    NO_OBJECT_SCORE = "no object"
    #: the caller cancelled (an interactive session)
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Stop:
    """Where and why one direction ended.

    Attributes:
        reason: the kind of stop.
        slice: the slice the decision was made on (None for the end of the volume / range).
        text: the explanation with measured values (default: the reason's own words).
    """

    reason: StopReason
    slice: Optional[int] = None
    text: str = ""

    def __str__(self) -> str:
        body = self.text or self.reason.value
        return body if self.slice is None else f"slice {self.slice}: {body}"
