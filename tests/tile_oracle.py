"""An oracle in place of the model for tiling tests: exact masks, as a window shows them.

It "segments" by reading the ground-truth id under a prompt in the window it is
given, so every mask it returns is what a perfect model would return when it sees
only that window: cut where the window cuts the object.
"""

from __future__ import annotations

import numpy as np

from napari_hq_sam.engine.segmenter import SliceSegmenter


def ids_as_rgb(ids: np.ndarray) -> np.ndarray:
    """Object ids written into an uint8 RGB image (R low byte, G high byte)."""
    return np.stack([ids % 256, ids // 256, np.zeros_like(ids)], -1).astype(np.uint8)


def rgb_as_ids(image: np.ndarray) -> np.ndarray:
    """Inverse of :func:`ids_as_rgb`."""
    return image[..., 0].astype(int) + 256 * image[..., 1].astype(int)


class OracleSegmenter:
    """Decodes a prompt as the ground-truth object under it, seen through the window."""

    def __init__(self):
        self.windows_embedded = 0

    def embeddings(self, images):
        self.windows_embedded += len(images)
        return [rgb_as_ids(im) for im in images]

    @property
    def computed(self) -> int:
        """Encoder runs, as SliceSegmenter counts them (every window is a miss here)."""
        return self.windows_embedded

    def set_embedding(self, embedding):
        self.current = embedding

    def decode(self, prompt):
        if prompt.points is not None:
            x, y = prompt.points[0]
        else:
            x, y = (prompt.box[0] + prompt.box[2]) / 2, (prompt.box[1] + prompt.box[3]) / 2
        obj = self.current[int(round(y)), int(round(x))]
        return self.current == obj, 0.9, np.zeros((1, 256, 256), np.float32)

    segment = SliceSegmenter.segment
    _segment_tiled = SliceSegmenter._segment_tiled


def disk(shape, centre, radius):
    """``(H, W)`` bool disk."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2
