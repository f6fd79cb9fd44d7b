"""Image/label pairs as the model sees them: 2D slices, RGB uint8, objects and boxes.

Shared by :mod:`napari_hq_sam.evaluation` and :mod:`napari_hq_sam.training`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .engine.image import default_contrast_limits, to_model_image
from .errors import InputError


@dataclass
class LabeledSlice:
    """One 2D image with its instance labels.

    Attributes
    ----------
    index : int
        Slice index in the stack (0 for a 2D image).
    rgb : np.ndarray
        (H, W, 3) uint8 image for the model.
    labels : np.ndarray
        (H, W) integer instance labels, 0 = background.
    prompt_boxes : dict, optional
        ``{label id: (4,) XYXY box}`` used as the box prompt of an object instead of
        its tight box (e.g. to reproduce another model's answer to given boxes).
    """

    index: int
    rgb: np.ndarray
    labels: np.ndarray
    prompt_boxes: dict | None = None


def iter_slices(image: np.ndarray, labels: np.ndarray, prompt_boxes: dict | None = None,
                contrast_limits: tuple[float, float] | None = None) -> Iterator[LabeledSlice]:
    """Yield the 2D slices of an image and its labels.

    Parameters
    ----------
    image : np.ndarray
        (H, W), (H, W, 3), (Z, H, W) or (Z, H, W, 3) image.
    labels : np.ndarray
        (H, W) or (Z, H, W) instance labels matching ``image``.
    prompt_boxes : dict, optional
        ``{label id: (4,) XYXY}`` box prompts (2D labels only); see :class:`LabeledSlice`.
    contrast_limits : (lo, hi), optional
        Intensities mapped to 0 and 255; default: the engine's (napari's) default for
        the whole image, so that training, evaluation and segmentation see the same input.
    """
    image, labels = np.asarray(image), np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise InputError(f"Labels must be 2D or a 3D stack, got shape {labels.shape}.")
    rgb_input = image.ndim == labels.ndim + 1 and image.shape[-1] in (3, 4)
    if image.shape[: labels.ndim] != labels.shape or not (rgb_input or image.ndim == labels.ndim):
        raise InputError(f"Image shape {image.shape} does not match labels shape {labels.shape}.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"Labels must be integers, got {labels.dtype}.")
    if prompt_boxes is not None and labels.ndim != 2:
        raise InputError("Box prompts can be given for 2D labels only.")
    limits = contrast_limits or default_contrast_limits(image)
    if labels.ndim == 2:
        yield LabeledSlice(0, to_model_image(image, limits, rgb=rgb_input), labels, prompt_boxes)
        return
    for z in range(labels.shape[0]):
        yield LabeledSlice(z, to_model_image(image[z], limits, rgb=rgb_input), labels[z])


def object_boxes(labels: np.ndarray,
                 prompt_boxes: dict | None = None) -> list[tuple[int, np.ndarray]]:
    """Tight boxes of every object of a 2D label image.

    Parameters
    ----------
    labels : np.ndarray
        (H, W) instance labels.
    prompt_boxes : dict, optional
        ``{label id: (4,) XYXY}`` boxes that replace the tight box of those objects.

    Returns
    -------
    list of (int, np.ndarray)
        ``(label id, box)`` with box (4,) float XYXY = (x_min, y_min, x_max, y_max),
        max inclusive (pixel indices), sorted by label id.
    """
    out = []
    for i, window in enumerate(ndimage.find_objects(labels)):
        if window is None:
            continue
        rows, cols = window
        box = np.array([cols.start, rows.start, cols.stop - 1, rows.stop - 1], dtype=np.float32)
        if prompt_boxes is not None and i + 1 in prompt_boxes:
            box = np.asarray(prompt_boxes[i + 1], dtype=np.float32).reshape(4)
        out.append((i + 1, box))
    return out
