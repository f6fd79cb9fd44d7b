"""Sample data contributed to napari: real images bundled with the package (no Qt).

Each function returns a list of napari ``LayerData`` tuples ``(data, kwargs, layer_type)``.
The files and their licences live in ``_sample_data/`` next to this module
(see ``_sample_data/README.md`` for sources).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_DIR = Path(__file__).resolve().parent / "_sample_data"


def _read(name: str) -> np.ndarray:
    import tifffile

    return tifffile.imread(SAMPLE_DIR / name)


def nuclei2d() -> list[tuple]:
    """Fluorescence nuclei, 2D (512, 512) uint16, with its 125-nucleus ground truth."""
    return [
        (_read("nuclei2d_image.tif"), {"name": "nuclei2d", "colormap": "gray"}, "image"),
        (_read("nuclei2d_labels.tif"), {"name": "nuclei2d ground truth", "opacity": 0.4,
                                        "visible": False}, "labels"),
    ]


def nuclei3d() -> list[tuple]:
    """Fluorescence nuclei, 3D (31, 61, 57) ZYX uint16 stack, with its ground truth."""
    return [
        (_read("nuclei3d_image.tif"), {"name": "nuclei3d", "colormap": "gray"}, "image"),
        (_read("nuclei3d_labels.tif"), {"name": "nuclei3d ground truth", "opacity": 0.4,
                                        "visible": False}, "labels"),
    ]


def mri_brain() -> list[tuple]:
    """Brain MRI (EPI), (24, 96, 128) ZYX int16 axial stack."""
    data = _read("mri_brain_stack.tif")
    return [(data, {"name": "MRI brain", "colormap": "gray",
                    "contrast_limits": (float(data.min()), float(data.max()))}, "image")]
