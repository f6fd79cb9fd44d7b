"""Training data: encoder outputs computed once per image (and per flip), and objects.

The image encoder is frozen, so its two outputs are cached: the final embedding
(1, 256, 64, 64) and the raw early ViT feature (1, 64, 64, C). The fusion layers
that turn them into ``hq_features`` are trained, so the fused feature is
recomputed at every step from the cached pair.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .._groundtruth import LabeledSlice, iter_slices
from ..errors import InputError


@dataclass
class EncodedImage:
    """One training image (possibly flipped) with its cached encoder outputs.

    Attributes
    ----------
    embeddings : torch.Tensor
        (1, 256, 64, 64) final encoder output.
    early : torch.Tensor
        (1, 64, 64, C) early ViT feature (channels last).
    labels : np.ndarray
        (H, W) instance labels, flipped like the image.
    original_size, input_size : tuple of int
        (H, W) of the image and (h, w) after resizing the long side to 1024.
    source : int
        Index of the unflipped slice in the list of training slices.
    flipped : bool
        Horizontally flipped copy.
    prompt_boxes : dict, optional
        ``{label id: (4,) XYXY}`` box prompts replacing tight boxes (flipped too).
    """

    embeddings: torch.Tensor
    early: torch.Tensor
    labels: np.ndarray
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    source: int
    flipped: bool
    prompt_boxes: dict | None = None


def collect_slices(data: Sequence[tuple]) -> list[LabeledSlice]:
    """All 2D slices that hold at least one object.

    Parameters
    ----------
    data : sequence of tuples
        ``(image, labels)``, or ``(image, labels, prompt_boxes)`` for 2D labels with
        ``{label id: (4,) XYXY}`` box prompts (see :class:`~.._groundtruth.LabeledSlice`).
    """
    slices = []
    for item in data:
        if len(item) not in (2, 3):
            raise InputError("Training data items are (image, labels) or "
                             "(image, labels, prompt_boxes).")
        slices += [s for s in iter_slices(*item) if s.labels.any()]
    if not slices:
        raise InputError("The training labels hold no objects (every value is 0): give labels "
                         "with at least one object.")
    return slices


def encode_training_images(model, slices: Sequence[LabeledSlice], flip: bool = True,
                           progress: Callable[[int, int], None] | None = None,
                           should_stop: Callable[[], bool] | None = None
                           ) -> list[EncodedImage]:
    """Encode every slice once (and its horizontal flip when ``flip``).

    The images go through the engine's encoder (:func:`~napari_hq_sam.engine.encoder.encode_slices`,
    batched on GPUs) without the HQ fusion, which is trained. ``progress(done, total)``
    is called after each encoder batch; ``should_stop()`` is polled before each and
    ends the encoding early (fewer images are returned).
    """
    from ..engine.encoder import encode_slices

    jobs = []  # (source index, flipped, rgb, labels, prompt boxes)
    for i, item in enumerate(slices):
        for flipped in ((False, True) if flip else (False,)):
            rgb, labels, boxes = item.rgb, item.labels, item.prompt_boxes
            if flipped:
                rgb, labels = rgb[:, ::-1].copy(), labels[:, ::-1].copy()
                boxes = None if boxes is None else {k: _flip_box(b, rgb.shape[1])
                                                    for k, b in boxes.items()}
            jobs.append((i, flipped, rgb, labels, boxes))
    # identical images (several label sets on one image) are encoded once
    keys = [(hashlib.sha1(job[2].tobytes()).hexdigest(), job[2].shape) for job in jobs]
    position: dict[tuple, int] = {}
    images = []
    for key, job in zip(keys, jobs):
        if key not in position:
            position[key] = len(images)
            images.append(job[2])
    encoded = encode_slices(model, images, progress=progress, should_stop=should_stop,
                            to_cpu=False, fuse=False)
    out = []
    for (i, flipped, _rgb, labels, boxes), key in zip(jobs, keys):
        if position[key] >= len(encoded):  # stopped early
            break
        raw = encoded[position[key]]
        out.append(EncodedImage(raw.embeddings, raw.early, labels, tuple(labels.shape),
                                raw.input_size, i, flipped, boxes))
    return out


def _flip_box(box, width: int) -> np.ndarray:
    """Mirror an XYXY box (max inclusive) for an image flipped left-right."""
    x0, y0, x1, y1 = np.asarray(box, dtype=np.float32).reshape(4)
    return np.array([width - 1 - x1, y0, width - 1 - x0, y1], dtype=np.float32)


def split_objects(slices: Sequence[LabeledSlice], val_fraction: float, max_val: int,
                  rng: np.random.Generator) -> tuple[set, set]:
    """Split objects, as ``(slice index, label id)`` pairs, into train and held-out sets."""
    objects = [(i, int(k)) for i, s in enumerate(slices) for k in np.unique(s.labels) if k]
    order = rng.permutation(len(objects))
    n_val = min(int(round(val_fraction * len(objects))), max_val, len(objects) - 1)
    if val_fraction > 0 and len(objects) > 1:
        n_val = max(n_val, 1)
    val = {objects[j] for j in order[:n_val]}
    return {o for o in objects if o not in val}, val


def target_masks(masks: torch.Tensor, input_size: tuple[int, int],
                 size: int = 1024) -> torch.Tensor:
    """Ground truth in the model's padded input frame.

    Parameters
    ----------
    masks : torch.Tensor
        (B, H, W) bool masks at the image size.
    input_size : tuple of int
        (h, w) of the resized image.

    Returns
    -------
    torch.Tensor
        (B, 1, size, size) float in [0, 1]: resized bilinearly to (h, w), zero-padded
        bottom/right, the frame of the decoder's 256×256 logits.
    """
    x = F.interpolate(masks[:, None].float(), input_size, mode="bilinear", align_corners=False)
    return F.pad(x, (0, size - input_size[1], 0, size - input_size[0]))
