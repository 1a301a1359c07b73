"""Conversion between ``SimpleITK.Image`` and :class:`~promptseg.volume.Volume`,
and reading of the files SimpleITK handles (NIfTI, NRRD, MetaImage).

Geometry is copied as SimpleITK reports it: spacing and origin in physical
``(x, y, z)`` order (mm), direction as the 3x3 matrix of ITK's row-major flat
tuple. 2D images become one-slice volumes (z spacing 1 mm, z origin 0).
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from ..errors import GeometryError, ImageReadError
from ..volume import Volume
from .common import check_voxels, gray_if_equal_channels, one_line_sitk_error


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
    array = sitk.GetArrayFromImage(image)
    if image.GetDimension() == 2:
        array = array[np.newaxis]
    check_voxels(array, source)
    if array.ndim == 4:
        array = gray_if_equal_channels(array)
    spacing, origin, direction = _geometry_3d(image)
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


def _nifti_expected_bytes(header: bytes) -> Optional[int]:
    """Bytes a single-file NIfTI-1/-2 needs (vox_offset + voxel data), or None if not understood."""
    try:
        return _parse_nifti_size(header)
    except (struct.error, ValueError, OverflowError):
        return None


def _parse_nifti_size(header: bytes) -> Optional[int]:
    for order in ("<", ">"):
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348:
            dims = struct.unpack(order + "8h", header[40:56])
            bitpix = struct.unpack(order + "h", header[72:74])[0]
            offset = max(int(struct.unpack(order + "f", header[108:112])[0]), 352)
            break
        if len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540:
            bitpix = struct.unpack(order + "h", header[14:16])[0]
            dims = struct.unpack(order + "8q", header[16:80])
            offset = int(struct.unpack(order + "q", header[168:176])[0])
            break
    else:
        return None
    if not 1 <= dims[0] <= 7 or bitpix <= 0:
        return None
    voxels = int(np.prod([max(int(d), 1) for d in dims[1 : dims[0] + 1]], dtype=np.int64))
    return offset + voxels * bitpix // 8


def _gzip_size(path: Path, expected: int) -> int:
    """Uncompressed size of a gzip file; trusts the ISIZE trailer when it equals ``expected``."""
    with open(path, "rb") as handle:
        handle.seek(-4, os.SEEK_END)
        if struct.unpack("<I", handle.read(4))[0] == expected % 2**32:
            return expected
    total = 0
    with gzip.open(path, "rb") as stream:
        while chunk := stream.read(1 << 22):
            total += len(chunk)
    return total


def check_nifti_complete(path: Path) -> None:
    """Raise if a ``.nii`` / ``.nii.gz`` file holds less voxel data than its header promises.

    ITK's NIfTI reader does not report a short read: a truncated file comes
    back padded with zeros. This check compares the header's promise
    (vox_offset + voxels x bitpix/8) with the bytes present (for ``.nii.gz``,
    the gzip size trailer, or a full streaming decompression when the trailer
    does not match).

    Raises:
        ImageReadError: truncated or corrupt file.
    """
    compressed = path.name.lower().endswith(".gz")
    try:
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as handle:
            expected = _nifti_expected_bytes(handle.read(540))
        if expected is None:
            return
        available = _gzip_size(path, expected) if compressed else path.stat().st_size
    except (EOFError, OSError, zlib.error) as error:
        raise ImageReadError(
            f"cannot read {path}: truncated or corrupt compressed data ({error})"
        ) from None
    if available < expected:
        raise ImageReadError(
            f"cannot read {path}: the file is truncated ({available} of {expected} bytes "
            "of header and voxel data present)"
        )


def read_sitk_file(path: Path) -> Volume:
    """Read a NIfTI / NRRD / MetaImage file with SimpleITK.

    Args:
        path: existing ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha`` or ``.mhd`` file.

    Returns:
        Volume ``(z, y, x)`` (or ``(1, y, x, 3)`` for a 2D RGB image); no modality.

    Raises:
        ImageReadError: unreadable/corrupt/truncated file (one-line reason; NIfTI
            truncation is checked explicitly, see :func:`check_nifti_complete`),
            4D or vector image, empty image, non-finite voxels.
    """
    path = Path(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        check_image_layout(
            reader.GetDimension(), reader.GetSize(), reader.GetNumberOfComponents(), str(path)
        )
        if path.name.lower().endswith((".nii", ".nii.gz")):
            check_nifti_complete(path)
        image = reader.Execute()
    except RuntimeError as error:
        raise ImageReadError(f"cannot read {path}: {one_line_sitk_error(error)}") from None
    return volume_from_sitk(image, str(path))
