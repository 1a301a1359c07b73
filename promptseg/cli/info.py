"""``promptseg info``: grid, orientation, modality and intensities of an image (the ROIs of an RTSTRUCT)."""

from __future__ import annotations

from .common import add_image_args, load_image


def register(sub) -> None:
    info = sub.add_parser("info", help="print shape, spacing, orientation, modality and intensity range",
                          description="Describe an image: grid, orientation, modality (and how it was found), intensities.")
    add_image_args(info)
    info.set_defaults(func=run)



def run(args) -> int:
    from ..intensity import describe_intensity, guess_modality

    if _print_rois(args.image):
        return 0
    volume = load_image(args)
    z, y, x = volume.shape
    print(f"file:        {args.image}")
    print(f"size:        {x} x {y} x {z} voxels (x, y, z){' RGB' if volume.is_rgb else ''}; array (z, y, x) = {volume.array.shape}")
    print("spacing:     " + " x ".join(f"{s:.6g}" for s in volume.spacing) + " mm (x, y, z)")
    print("origin:      " + ", ".join(f"{o:.6g}" for o in volume.origin) + " mm")
    print(f"orientation: {_orientation(volume)}  direction {[round(float(v), 6) for v in volume.direction.ravel()]}")
    if volume.modality:
        print(f"modality:    {volume.modality} (from the file)")
    else:
        print(f"modality:    {guess_modality(volume).upper()} (guessed from intensities; override with --modality)")
    stats = describe_intensity(volume)
    print("intensity:   " + ", ".join(f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items()))
    if volume.metadata.get("series_uid"):
        print(f"series:      {volume.metadata['series_uid']}")
    if volume.dicom is not None:
        d = volume.dicom
        print(f"DICOM:       patient {d.patient_id or '(no ID)'}, study {d.study_instance_uid}, "
              f"frame of reference {d.frame_of_reference_uid or '(none)'}, {d.num_slices} images")
    return 0


def _print_rois(path) -> bool:
    """An RTSTRUCT or SEG describes structures of a series: list them. True if ``path`` was one."""
    from ..io.dicom import dicom_modality, list_rois, list_segments

    kind = dicom_modality(path)
    if kind not in ("RTSTRUCT", "SEG"):
        return False
    rois = list_rois(path) if kind == "RTSTRUCT" else list_segments(path)
    what = "ROIs" if kind == "RTSTRUCT" else "segments"
    print(f"file:        {path}")
    print(f"{kind + ':':<12} {len(rois)} {what}; to get them as a label map on their series: "
          f"promptseg convert {path} -o labels.nii.gz --reference SERIES_DIR")
    for roi in rois:
        print(f"  {roi.describe()}")
    return True


def _orientation(volume) -> str:
    """Three-letter code of the axes' directions (e.g. LPS, RAS), as ITK names it."""
    import SimpleITK as sitk

    try:
        return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(volume.direction.ravel().tolist())
    except Exception:  # pragma: no cover - non-orthogonal direction
        return "oblique"


