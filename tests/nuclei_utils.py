"""Helpers the model tests share: the real nuclei image as SAM's RGB input, and boxes."""

from __future__ import annotations

import numpy as np


def grey_to_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) from a grey image scaled by its maximum."""
    grey = np.clip(image.astype(np.float32) / image.max() * 255.0, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def largest_boxes(labels: np.ndarray, count: int) -> list[np.ndarray]:
    """XYXY boxes of the ``count`` largest labelled objects."""
    ids, sizes = np.unique(labels[labels > 0], return_counts=True)
    boxes = []
    for i in ids[np.argsort(sizes)[::-1][:count]]:
        ys, xs = np.nonzero(labels == i)
        boxes.append(np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=float))
    return boxes
