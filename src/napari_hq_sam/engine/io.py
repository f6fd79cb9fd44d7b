"""Images in and labels out of headless runs, in one namespace for the commands.

Reading lives in :mod:`.image_files` (lazy TIFF, zarr, OME-Zarr levels, npy; the
image's pixel scale), writing in :mod:`.outputs` (output checks, temporary names,
chunked zarr and OME-Zarr labels); this module only gathers their public names, so
``from napari_hq_sam.engine import io`` gives both.
"""

from __future__ import annotations

from .image_files import (
    IMAGE_SUFFIXES,
    ZARR_METADATA,
    check_image_dtype,
    image_scale,
    labels_scale,
    pyramid_contrast_limits,
    read_image,
    zarr_root,
)
from .outputs import (
    LABEL_SUFFIXES,
    LABELS_CHUNK,
    STALE_SECONDS,
    check_not_input,
    check_output,
    check_output_space,
    commit_output,
    copy_regions,
    create_zarr_labels,
    disk_full_is_output_error,
    labels_chunks,
    partial_path,
    remove_partial,
    remove_stale_partials,
    write_labels,
)
from .pixel_scale import PixelScale

__all__ = [
    "IMAGE_SUFFIXES", "LABEL_SUFFIXES", "LABELS_CHUNK", "STALE_SECONDS", "ZARR_METADATA",
    "PixelScale", "check_image_dtype", "check_not_input", "check_output",
    "check_output_space", "commit_output", "copy_regions", "create_zarr_labels",
    "disk_full_is_output_error", "image_scale", "labels_chunks", "labels_scale",
    "partial_path", "pyramid_contrast_limits", "read_image", "remove_partial",
    "remove_stale_partials", "write_labels", "zarr_root",
]
