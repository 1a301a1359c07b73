"""Conversion between ``SimpleITK.Image`` and :class:`~promptseg.volume.Volume`,
and reading of the files SimpleITK handles (NIfTI, NRRD, MetaImage).

Geometry is copied as SimpleITK reports it: spacing and origin in physical
``(x, y, z)`` order (mm), direction as the 3x3 matrix of ITK's row-major flat
tuple. 2D images become one-slice volumes (z spacing 1 mm, z origin 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from ..errors import GeometryError, ImageReadError
from ..volume import Volume
from .common import check_voxels, gray_if_equal_channels, one_line_sitk_error
from .declared import TEXT, ZLIB, DeclaredImage, check_complete, check_declared
from .limits import check_allocation, check_geometry
from .metaimage_header import declared_metaimage
from .nifti_header import declared_nifti
from .nrrd_header import declared_nrrd


def _geometry_3d(image: sitk.Image) -> tuple[tuple, tuple, np.ndarray]:
    """Spacing, origin ``(x, y, z)`` and 3x3 direction of a 2D or 3D image."""
    dim = image.GetDimension()
    spacing = list(image.GetSpacing()) + [1.0] * (3 - dim)
    origin = list(image.GetOrigin()) + [0.0] * (3 - dim)
    direction = np.eye(3)
    direction[:dim, :dim] = np.asarray(image.GetDirection(), dtype=float).reshape(dim, dim)
    return tuple(spacing), tuple(origin), direction


def check_image_layout(dimension: int, size: tuple, components: int, source: str) -> None:
    """Reject what a :class:`Volume` cannot hold, before the pixels are read.

    Accepted: scalar 2D/3D images, and RGB (3 components) 2D images or 3D
    images with one slice.

    Raises:
        ImageReadError: 4D (or higher) images, other vector images, empty images.
    """
    if dimension not in (2, 3):
        raise ImageReadError(
            f"{source}: a {dimension}D image (size {tuple(size)}) is not supported; "
            "promptseg reads 2D and 3D images only (split 4D series into 3D volumes first)"
        )
    if 0 in tuple(size):
        raise ImageReadError(f"{source}: the image is empty (size {tuple(size)}, x/y/z)")
    if components != 1:
        single_slice = dimension == 2 or size[2] == 1
        if not (components == 3 and single_slice):
            raise ImageReadError(
                f"{source}: a vector image with {components} components per voxel "
                f"(size {tuple(size)}) is not supported; only scalar images and 2D RGB images are"
            )


def volume_from_sitk(
    image: sitk.Image,
    source: str,
    modality: Optional[str] = None,
    metadata: Optional[dict] = None,
) -> Volume:
    """Wrap a 2D/3D SimpleITK image as a :class:`Volume`.

    Args:
        image: scalar 2D/3D image, or 2D (or one-slice 3D) RGB image.
        source: file name used in error messages and stored as ``metadata["source"]``.
        modality: DICOM-style modality, when known.
        metadata: extra metadata merged into the volume's.

    Returns:
        Volume with ``array`` ``(z, y, x)`` or ``(1, y, x, 3)``.
    """
    check_image_layout(
        image.GetDimension(), image.GetSize(), image.GetNumberOfComponentsPerPixel(), source
    )
    spacing, origin, direction = _geometry_3d(image)
    check_geometry(spacing, origin, direction, source)
    array = sitk.GetArrayViewFromImage(image)
    check_allocation(array.shape, array.dtype.itemsize, source)
    array = np.array(array)
    if image.GetDimension() == 2:
        array = array[np.newaxis]
    check_voxels(array, source)
    if array.ndim == 4:
        array = gray_if_equal_channels(array)
    meta = {"source": source}
    meta.update(metadata or {})
    try:
        return Volume(array, spacing, origin, direction, modality=modality or None, metadata=meta)
    except GeometryError as error:
        raise ImageReadError(f"{source}: unusable geometry: {error}") from None


def sitk_from_volume(volume: Volume, array: Optional[np.ndarray] = None) -> sitk.Image:
    """A 3D SimpleITK image holding ``array`` (default ``volume.array``) on ``volume``'s grid.

    Args:
        volume: supplies spacing/origin/direction (and the array if ``array`` is None).
        array: ``(z, y, x)`` or ``(z, y, x, 3)`` data to write instead of ``volume.array``.
    """
    data = volume.array if array is None else array
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(data), isVector=data.ndim == 4)
    image.SetSpacing(tuple(float(v) for v in volume.spacing))
    image.SetOrigin(tuple(float(v) for v in volume.origin))
    image.SetDirection(tuple(float(v) for v in np.asarray(volume.direction).ravel()))
    return image


def parse_header(path: Path) -> DeclaredImage:
    """What the header of a NIfTI, NRRD or MetaImage file declares (format chosen from the name).

    Raises:
        ImageReadError: a malformed or implausible header (one line).
    """
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return declared_nifti(path)
    if name.endswith((".nrrd", ".nhdr")):
        return declared_nrrd(path)
    return declared_metaimage(path)


def declared_image(path: Path) -> DeclaredImage:
    """:func:`parse_header`, then checked against the read budget and the file's size
    (:func:`~.declared.check_declared`) before ITK opens the file."""
    declared = parse_header(path)
    check_declared(declared, str(path), path)
    return declared


def _check_info_matches(reader: sitk.ImageFileReader, declared: DeclaredImage, path: Path) -> None:
    """ITK must see as many values as the header declares (else it guessed something)."""
    itk_count = int(np.prod(reader.GetSize(), dtype=np.int64)) * reader.GetNumberOfComponents()
    declared_count = int(np.prod(declared.size, dtype=np.int64)) * declared.components
    if itk_count != declared_count:
        raise ImageReadError(
            f"cannot read {path}: ITK reads size {reader.GetSize()} x {reader.GetNumberOfComponents()} "
            f"component(s) but the header declares {declared.size} x {declared.components}"
        )


def read_sitk_file(path: Path) -> Volume:
    """Read a NIfTI / NRRD / MetaImage file with SimpleITK, after checking its header.

    The header is parsed first (:func:`declared_image`), so malformed headers,
    images beyond the read budget and truncated data are refused before ITK
    allocates or parses anything. NIfTI voxel data are scanned for NaN/inf
    (ITK's NIfTI reader silently turns them into 0), compressed MetaImage
    data for completeness (MetaIO leaves the rest of a short stream
    uninitialised) and text-encoded data for well-formed numbers (teem
    overflows a buffer on a long token).

    Args:
        path: existing ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha`` or ``.mhd`` file.

    Returns:
        Volume ``(z, y, x)`` (or ``(1, y, x, 3)`` for a 2D RGB image); no modality.

    Raises:
        ImageReadError: unreadable/corrupt/truncated file (one-line reason),
            4D or vector image, empty image, non-finite voxels or geometry,
            an image beyond the read budget.
    """
    path = Path(path)
    declared = declared_image(path)
    if path.name.lower().endswith((".nii", ".nii.gz")):
        check_complete(declared, str(path), check_finite=True)
    elif declared.encoding in (ZLIB, TEXT):
        check_complete(declared, str(path))
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        check_image_layout(
            reader.GetDimension(), reader.GetSize(), reader.GetNumberOfComponents(), str(path)
        )
        _check_info_matches(reader, declared, path)
        image = reader.Execute()
    except RuntimeError as error:
        raise ImageReadError(f"cannot read {path}: {one_line_sitk_error(error)}") from None
    return volume_from_sitk(image, str(path))
