"""Overlay montages: the segmented slices with masks and prompts drawn on them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..prompts import ObjectPrompt, interpolate_key_boxes
from .orientation import DisplayOrientation

#: label colours (RGB, 0-1), cycled for labels beyond the list
COLOURS = [
    (1.0, 0.2, 0.2), (0.2, 0.9, 0.2), (0.3, 0.5, 1.0), (1.0, 0.85, 0.1),
    (0.9, 0.3, 0.9), (0.1, 0.9, 0.9), (1.0, 0.55, 0.1), (0.6, 0.4, 0.2),
]


def colour(label: int) -> tuple[float, float, float]:
    return COLOURS[(label - 1) % len(COLOURS)]


def montage_slices(labels: np.ndarray, prompts: Sequence[ObjectPrompt], max_slices: int = 16) -> list[int]:
    """Slices worth showing: every slice holding a label or a prompt, evenly thinned to ``max_slices``."""
    zs = sorted(set(np.nonzero(labels.reshape(labels.shape[0], -1).any(axis=1))[0].tolist())
                | {z for p in prompts for z in p.slices})
    if len(zs) > max_slices:
        keep = np.linspace(0, len(zs) - 1, max_slices).round().astype(int)
        zs = [zs[i] for i in sorted(set(keep))]
    return zs


def crop_window(labels: np.ndarray, prompts: Sequence[ObjectPrompt], min_size: int = 96) -> tuple[slice, slice]:
    """Rows/columns around all labelled voxels and prompts, with a margin as large as the objects."""
    height, width = labels.shape[1:3]
    rows, cols = np.nonzero(labels.any(axis=0))
    ys, xs = list(rows), list(cols)
    for p in prompts:
        for sp in p.slices.values():
            if sp.box is not None:
                xs += [sp.box[0], sp.box[2]]
                ys += [sp.box[1], sp.box[3]]
            xs += [pt.x for pt in sp.points]
            ys += [pt.y for pt in sp.points]
    if not xs:
        return slice(0, height), slice(0, width)
    y0, y1, x0, x1 = min(ys), max(ys), min(xs), max(xs)
    size = max(y1 - y0, x1 - x0, 1) * 2.0
    size = max(size, min_size)
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    r0, r1 = int(max(0, cy - size / 2)), int(min(height, cy + size / 2 + 1))
    c0, c1 = int(max(0, cx - size / 2)), int(min(width, cx + size / 2 + 1))
    return slice(r0, r1), slice(c0, c1)


def check_overlay_path(path: str | Path, inputs: Sequence = ()) -> Path:
    """Fail early unless ``path`` is a ``.png`` that can be written (an overlay is a PNG montage).

    Raises:
        ImageWriteError: another extension, or a destination that cannot be written.
    """
    from ..errors import ImageWriteError
    from ..io import check_destination

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ImageWriteError(f"cannot write overlay {path}: an overlay is a PNG image; name it .png")
    return check_destination(path, inputs)


def save_overlay(
    path: str | Path,
    image: np.ndarray,
    labels: np.ndarray,
    prompts: Sequence[ObjectPrompt] = (),
    slices: Optional[Sequence[int]] = None,
    reference: Optional[np.ndarray] = None,
    crop: bool = True,
    title: Optional[str] = None,
    direction: Optional[np.ndarray] = None,
) -> Path:
    """Write a PNG montage of segmented slices.

    Args:
        path: output PNG (written atomically).
        image: ``(Z, H, W)`` or ``(Z, H, W, 3)`` uint8 normalised volume.
        labels: ``(Z, H, W)`` label map.
        prompts: drawn on their slices (boxes as rectangles, lines as lines, + points
            as green crosses, - points as red crosses, interpolated key-slice boxes dashed).
        slices: which slices to show (default :func:`montage_slices`).
        reference: optional ``(Z, H, W)`` reference mask, drawn as a white contour.
        crop: zoom on the objects (default) or show whole slices.
        direction: the volume's 3x3 direction: slices are shown in radiological
            orientation (:class:`~promptseg.reporting.orientation.DisplayOrientation`, as
            3D Slicer shows them) with the patient directions at the edges; ``None``
            shows the array as stored (row 0 at the top).

    Raises:
        ImageWriteError: not a ``.png`` name, or the file cannot be written (full disk,
            read-only folder); nothing is left behind.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from ..io.atomic import atomic_path

    path = check_overlay_path(path)
    zs = list(slices) if slices is not None else montage_slices(labels, prompts)
    if not zs:
        zs = [labels.shape[0] // 2]
    rows_sl, cols_sl = crop_window(labels, prompts) if crop else (slice(None), slice(None))
    oy, ox = rows_sl.start or 0, cols_sl.start or 0
    display = DisplayOrientation.of(direction)
    ncols = min(4, len(zs))
    nrows = math.ceil(len(zs) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    present = sorted(int(v) for v in np.unique(labels) if v)
    for ax, z in zip(axes.ravel(), zs):
        view = image[z][rows_sl, cols_sl]
        shape = view.shape[:2]
        ax.imshow(display.image(view), cmap=None if view.ndim == 3 else "gray", vmin=0, vmax=255,
                  interpolation="nearest")
        lab = display.image(labels[z][rows_sl, cols_sl])
        rgba = np.zeros(lab.shape + (4,), dtype=np.float32)
        for value in present:
            sel = lab == value
            if sel.any():
                rgba[sel] = (*colour(value), 0.4)
                ax.contour(sel, levels=[0.5], colors=[colour(value)], linewidths=1.0)
        ax.imshow(rgba, interpolation="nearest")
        if reference is not None and reference[z].any():
            ax.contour(display.image(reference[z][rows_sl, cols_sl]), levels=[0.5], colors="white", linewidths=0.8,
                       linestyles="dotted")
        for p in prompts:
            c = colour(p.label)
            boxes = interpolate_key_boxes({k: sp.box for k, sp in p.slices.items()}) if p.is_key_slices else {}
            sp = p.slices.get(z)
            box, dashed = (sp.box, False) if sp is not None else (boxes.get(z), True)
            if sp is not None and sp.line is not None:
                (u0, v0), (u1, v1) = (display.point(x - ox, y - oy, shape)
                                      for x, y in (sp.line[:2], sp.line[2:]))
                ax.plot([u0, u1], [v0, v1], color=c, linewidth=1.5, marker="o", markersize=3)
            elif box is not None:
                x0, y0, x1, y1 = display.box((box[0] - ox, box[1] - oy, box[2] - ox, box[3] - oy), shape)
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=c,
                                       linewidth=1.2, linestyle="--" if dashed else "-"))
            if sp is not None:
                for pt in sp.points:
                    u, v = display.point(pt.x - ox, pt.y - oy, shape)
                    ax.plot(u, v, marker="P" if pt.positive else "X", markersize=8,
                            color="lime" if pt.positive else "red", markeredgecolor="black")
        if display.left:
            for text, (tx, ty, ha, va) in ((display.left, (0.02, 0.5, "left", "center")),
                                           (display.right, (0.98, 0.5, "right", "center")),
                                           (display.top, (0.5, 0.98, "center", "top"))):
                ax.text(tx, ty, text, transform=ax.transAxes, ha=ha, va=va, color="yellow", fontsize=8)
        ax.set_title(f"z = {z}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
    return path
