"""Where one run's prompts come from, resolved against the image: :class:`PromptSource`.

One of: prompt options typed on the command line (``--box``, ``--point``, ...,
:func:`~promptseg.prompts.parse.objects_from_options`); a prompt file -- promptseg's
JSON in IJK / RAS / LPS space or a 3D Slicer ``.mrk.json``
(:func:`~promptseg.prompts.file.load_prompts`); or a label map / mask
(:func:`~promptseg.prompts.from_labels.load_label_prompts`). The single-image
command, the batch engine and the Python API all resolve prompts through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

from ..errors import PromptError
from ..volume import Volume
from .model import ObjectPrompt, fit_to_image, validate


@dataclass(frozen=True)
class PromptSource:
    """The prompts of one run, before an image is known.

    Attributes:
        options: text prompt options as :func:`~promptseg.prompts.parse.objects_from_options`
            takes them (``{"box": "206,347,229,368", "slice": 33}``).
        prompt_file: a JSON prompt file or a Slicer markups file.
        label_map: a label map or mask on the image's grid (also an RTSTRUCT / SEG of a DICOM series).
        labels: with ``label_map``: only these label values.
    """

    options: dict = field(default_factory=dict)
    prompt_file: Optional[str] = None
    label_map: Optional[str] = None
    labels: Optional[tuple[int, ...]] = None

    @property
    def typed(self) -> bool:
        """Prompt options were typed (a box, points, ...)."""
        return any(v not in (None, (), [], "") for k, v in self.options.items() if k not in ("label", "name", "slice"))

    @property
    def empty(self) -> bool:
        """No prompt at all."""
        return not (self.typed or self.prompt_file or self.label_map)

    def __post_init__(self) -> None:
        typed = self.typed
        given = [what for what, present in (("--prompts", self.prompt_file), ("--prompt-from", self.label_map),
                                             ("--box/--point/--line/--box3d/--key-box", typed)) if present]
        if len(given) > 1:
            raise PromptError(f"give one kind of prompt: {' or '.join(given)}, not both")
        if self.labels is not None and not self.label_map:
            raise PromptError("--labels chooses labels of --prompt-from LABELS; give the label map too")
        if self.options.get("z_range") and (self.prompt_file or self.label_map):
            raise PromptError("--z-range applies to a prompt typed on the command line")

    @property
    def description(self) -> str:
        """Where the prompts came from, for summaries and the provenance sidecar."""
        if self.prompt_file:
            return f"prompt file {self.prompt_file}"
        if self.label_map:
            chosen = f", labels {','.join(map(str, self.labels))}" if self.labels else ""
            return f"label map {self.label_map} (a box on each label's largest cross-section{chosen})"
        return "command-line prompt options"

    def inputs(self) -> list:
        """The files this source reads."""
        return [p for p in (self.prompt_file, self.label_map) if p]

    def with_files(self, prompt_file: Optional[str] = None, label_map: Optional[str] = None) -> "PromptSource":
        """The same source with per-case files (a batch run)."""
        return replace(self, prompt_file=prompt_file or self.prompt_file, label_map=label_map or self.label_map)

    def resolve(self, volume: Volume) -> tuple[list[ObjectPrompt], list[str]]:
        """The objects in ``volume``'s voxel indices, each checked against it.

        Boxes reaching at most one voxel past the edge are clipped
        (:func:`~promptseg.prompts.model.fit_to_image`).

        Returns:
            ``(objects, notes)``: notes say what was clipped or skipped.

        Raises:
            PromptError: no prompt, malformed prompts, prompts outside the image.
            GeometryError: a label map on another grid.
        """
        notes: list[str] = []
        # each source's reader imported when used (the file reader needs pydantic, the label one pydicom)
        if self.prompt_file:
            from .file import load_prompts

            objects, notes = load_prompts(self.prompt_file, volume)
        elif self.label_map:
            from .from_labels import load_label_prompts

            objects = load_label_prompts(self.label_map, volume, self.labels)
        else:
            from .parse import objects_from_options

            objects = objects_from_options(num_slices=volume.num_slices, image_shape=tuple(volume.shape[1:]),
                                           **self.options)
        fitted = []
        for obj in objects:
            obj, clipped = fit_to_image(obj, volume.shape)
            notes.extend(clipped)
            validate(obj, volume.shape)
            fitted.append(obj)
        return fitted, notes


def parse_label_list(text: Optional[str]) -> Optional[tuple[int, ...]]:
    """``"1,3"`` -> ``(1, 3)`` (``--labels``); None stays None."""
    if text is None:
        return None
    values: list[int] = []
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        if not part.isdigit() or not 1 <= int(part) <= 65535:
            raise PromptError(f"--labels {text!r}: expected label values 1..65535 separated by commas")
        values.append(int(part))
    if not values:
        raise PromptError(f"--labels {text!r}: no label value")
    return tuple(values)


def single_options(*, box=None, points: Sequence[str] = (), line=None, slice=None, box3d=None,
                   key_boxes: Sequence[str] = (), z_range=None, label: int = 1, name=None) -> dict:
    """The text options of one object, in the form :class:`PromptSource` keeps them."""
    return {"box": box, "points": tuple(points), "line": line, "slice": slice, "box3d": box3d,
            "key_boxes": tuple(key_boxes), "z_range": z_range, "label": label, "name": name}
