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


def check_labels(labels, image=None, *, name: str = "labels", image_name: str = "image",
                 require_objects: bool = False) -> np.ndarray:
    """Instance labels as integer ids, or an :class:`InputError` saying what is wrong.

    Parameters
    ----------
    labels : array-like
        (H, W) or (Z, H, W) instance labels, 0 = background. Integer dtypes are kept;
        a float array is accepted when every value is a whole number (it becomes int64).
    image : array-like, optional
        The image the labels belong to: (H, W), (H, W, 3|4), (Z, H, W) or
        (Z, H, W, 3|4). Its leading shape must equal the labels' shape.
    name, image_name : str
        How messages call the labels and the image (e.g. their file names).
    require_objects : bool
        Refuse labels without any object (every id 0).

    Returns
    -------
    np.ndarray
        The labels, integer, with ids >= 0.

    Raises
    ------
    InputError
        Not 2D or 3D, not the image's shape, not whole numbers, negative ids, or no
        objects when ``require_objects``.
    """
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise InputError(f"{name} must be 2D (Y, X) or a 3D stack (Z, Y, X), got shape "
                         f"{labels.shape}: give the instance labels of the image.")
    if image is not None:
        shape = tuple(np.shape(image))
        rgb = len(shape) == labels.ndim + 1 and shape[-1] in (3, 4)
        if shape[: labels.ndim] != labels.shape or not (rgb or len(shape) == labels.ndim):
            raise InputError(f"{name} has shape {labels.shape} but {image_name} has shape "
                             f"{shape}: give the labels of this image (same Z, Y and X sizes).")
    if labels.dtype.kind == "f":
        # above 2**53 a float no longer tells neighbouring ids apart
        safe = np.isfinite(labels) & (np.abs(labels) <= 2.0**53)
        whole = safe & (labels == np.round(np.where(safe, labels, 0)))
        if not whole.all():
            bad = labels[~whole].flat[0]
            raise InputError(f"{name} holds values that are not whole-number ids (e.g. {bad}): "
                             "labels are integer object ids, 0 = background; save them with "
                             "an integer type.")
        labels = labels.astype(np.int64)
    elif labels.dtype.kind not in "iu":
        raise InputError(f"{name} has type {labels.dtype}: labels are integer object ids, "
                         "0 = background; save them with an integer type.")
    if labels.dtype.kind == "i" and labels.size and labels.min() < 0:
        raise InputError(f"{name} holds negative ids (lowest {labels.min()}): ids are 0 for "
                         "background and positive for objects; relabel them.")
    if require_objects and not labels.any():
        raise InputError(f"{name} holds no objects (every value is 0): give labels with at "
                         "least one object.")
    return labels


def iter_slices(image: np.ndarray, labels: np.ndarray, prompt_boxes: dict | None = None,
                contrast_limits: tuple[float, float] | None = None) -> Iterator[LabeledSlice]:
    """Yield the 2D slices of an image and its labels.

    Parameters
    ----------
    image : np.ndarray
        (H, W), (H, W, 3), (Z, H, W) or (Z, H, W, 3) image.
    labels : np.ndarray
        (H, W) or (Z, H, W) instance labels matching ``image``; checked by
        :func:`check_labels`.
    prompt_boxes : dict, optional
        ``{label id: (4,) XYXY}`` box prompts (2D labels only); see :class:`LabeledSlice`.
    contrast_limits : (lo, hi), optional
        Intensities mapped to 0 and 255; default: the engine's (napari's) default for
        the whole image, so that training, evaluation and segmentation see the same input.
    """
    image = np.asarray(image)
    labels = check_labels(labels, image)
    rgb_input = image.ndim == labels.ndim + 1
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
    ids = None
    if labels.size and labels.max() > labels.size:
        # find_objects allocates one entry per id up to the largest: number sparse ids
        # 1..n first, so that an id such as 3_000_000_000 costs no memory
        ids, dense = np.unique(labels, return_inverse=True)
        labels = dense.reshape(labels.shape)
        if ids[0] != 0:
            ids, labels = np.concatenate([[0], ids]), labels + 1
    out = []
    for i, window in enumerate(ndimage.find_objects(labels)):
        if window is None:
            continue
        label = i + 1 if ids is None else int(ids[i + 1])
        rows, cols = window
        box = np.array([cols.start, rows.start, cols.stop - 1, rows.stop - 1], dtype=np.float32)
        if prompt_boxes is not None and label in prompt_boxes:
            box = np.asarray(prompt_boxes[label], dtype=np.float32).reshape(4)
        out.append((label, box))
    return out
