"""Decode object prompts on a slice larger than the model input, tile by tile.

Each object is decoded in one window of the slice (:meth:`~.tiles.Tiling.route`),
read at native resolution from a :class:`SliceSource`, so only the tiles that
prompts touch are read and embedded. When an object's mask reaches an edge of its
window that lies inside the slice, the object continues past what the model saw:
it is decoded again in a window routed from its prompts plus the mask found, grown
past each cut side by half the window (at least the halo), at most twice and at
most four tiles wide (a window longer than a tile is seen downscaled). Every
object thus comes from a single decode in a single window: one id, no seams, at
native resolution where it fits in a tile.

Masks come back cropped to their bounding box with the crop's origin in the slice
(:class:`~.segmenter.SliceResult` ``origins``), so a 20000 x 20000 slice never holds
a full-size mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..errors import InputError
from .image import ImageLayout, to_model_image
from .prompts import ObjectPrompt
from .tiles import Extent, Tiling, Window

#: windows embedded in one call to the encoder (batched on a GPU); bounds the crops held
WINDOWS_PER_CALL = 8
#: how many times an object cut by its window's edge is decoded again in a wider window
MAX_MOVES = 2
#: the widest window an object is moved to, in tiles per side (seen downscaled)
MAX_WINDOW_TILES = 4


class SliceSource:
    """One 2D slice, read window by window as the model's uint8 RGB.

    Parameters
    ----------
    image : array-like
        The N-D image (numpy, zarr, dask, memory-mapped TIFF).
    layout : ImageLayout
    index : tuple of int
        The slice's leading index.
    contrast_limits : (float, float)
        Mapped to 0 and 255, as for whole slices.
    """

    def __init__(self, image, layout: ImageLayout, index: tuple[int, ...],
                 contrast_limits: tuple[float, float]):
        self.image, self.layout = image, layout
        self.index = layout.check_index(index)
        self.contrast_limits = tuple(float(v) for v in contrast_limits)

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the slice."""
        return self.layout.spatial_shape

    def read(self, window: Window) -> np.ndarray:
        """uint8 ``(h, w, 3)`` model input of ``window`` (only that window is read)."""
        key: list = list(self.index) + [*window.slices]
        if self.layout.channel_axis is not None:
            key.insert(self.layout.channel_axis, self.layout.channel)
        return to_model_image(np.asarray(self.image[tuple(key)]), self.contrast_limits,
                              rgb=self.layout.rgb)


class ArraySource:
    """A slice already converted to the model's uint8 ``(H, W, 3)``, as a :class:`SliceSource`."""

    def __init__(self, image: np.ndarray):
        self.image = image

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.image.shape[:2])

    def read(self, window: Window) -> np.ndarray:
        return np.ascontiguousarray(self.image[window.slices])


def as_source(image) -> SliceSource | ArraySource:
    """``image`` as a window reader: a source stays one, an array is wrapped."""
    return image if hasattr(image, "read") and hasattr(image, "shape") and not isinstance(
        image, np.ndarray) else ArraySource(np.asarray(image))


def prompt_extent(prompt: ObjectPrompt) -> Extent:
    """Bounding box of a prompt's points and box, in slice pixels.

    Raises
    ------
    InputError
        The prompt is a mask alone: its low-resolution logits belong to the frame
        they were made in, not to a tile.
    """
    parts = []
    if prompt.points is not None:
        parts.append(np.asarray(prompt.points, float))
    if prompt.box is not None:
        parts.append(np.asarray(prompt.box, float).reshape(2, 2))
    if not parts:
        raise InputError(f"object {prompt.object_id}: on a tiled slice a prompt needs points or "
                         "a box (a mask prompt alone does not say where the object is).")
    xy = np.concatenate(parts)
    return Extent(float(xy[:, 1].min()), float(xy[:, 0].min()),
                  float(xy[:, 1].max()), float(xy[:, 0].max()))


def in_window(prompt: ObjectPrompt, window: Window) -> ObjectPrompt:
    """``prompt`` in the window's own pixel frame (a mask prompt is dropped: see module doc)."""
    shift = np.array([window.left, window.top], float)
    points = None if prompt.points is None else prompt.points - shift
    box = None if prompt.box is None else prompt.box - np.tile(shift, 2)
    return replace(prompt, points=points, box=box, mask=None)


@dataclass
class PlacedMask:
    """One object's mask, cropped to its bounding box.

    Attributes
    ----------
    origin : (int, int)
        ``(top, left)`` of ``mask`` in the slice.
    mask : np.ndarray
        ``(h, w)`` bool.
    score : float
    low_res : np.ndarray
        ``(1, 256, 256)`` logits, in the frame of ``window``.
    window : Window
        Where the object was decoded.
    """

    origin: tuple[int, int]
    mask: np.ndarray
    score: float
    low_res: np.ndarray
    window: Window


def crop_to_mask(mask: np.ndarray, window: Window) -> tuple[tuple[int, int], np.ndarray]:
    """``(origin, cropped mask)`` of a window-sized mask; an empty mask keeps one pixel."""
    rows, cols = np.nonzero(mask)
    if not len(rows):
        return (window.top, window.left), np.zeros((1, 1), bool)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    return (window.top + int(r0), window.left + int(c0)), mask[r0:r1, c0:c1].copy()


def cut_by_window(mask: np.ndarray, window: Window, shape: tuple[int, int]) -> bool:
    """Whether ``mask`` (window-sized) touches an edge of the window inside the slice."""
    top, left, bottom, right = window.inner_edges(shape)
    return bool((top and mask[0].any()) or (bottom and mask[-1].any())
                or (left and mask[:, 0].any()) or (right and mask[:, -1].any()))


def decode_tiled(segmenter, source, prompts: Sequence[ObjectPrompt], tiling: Tiling
                 ) -> list[PlacedMask]:
    """Decode every prompt on a tiled slice (module doc); results in the order of ``prompts``.

    Parameters
    ----------
    segmenter : SliceSegmenter
        Embeds windows through its cache (keys are the windows' pixel contents, so
        tiles of different sizes or halos never share an entry) and decodes.
    source : SliceSource or ArraySource
    prompts : list of ObjectPrompt
        Coordinates in slice pixels.
    tiling : Tiling
    """
    shape = source.shape
    first = [tiling.route(shape, prompt_extent(p)) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda k: (first[k].top, first[k].left))
    windows = list(dict.fromkeys(first[k] for k in order))
    out: list[PlacedMask | None] = [None] * len(prompts)
    for start in range(0, len(windows), WINDOWS_PER_CALL):
        chunk = windows[start:start + WINDOWS_PER_CALL]
        embeddings = dict(zip(chunk, segmenter.embeddings([source.read(w) for w in chunk])))
        for k in order:
            if first[k] in embeddings:
                out[k] = decode_object(segmenter, source, prompts[k], first[k],
                                        embeddings[first[k]], tiling)
    return out


def _beyond_cuts(mask: np.ndarray, window: Window, shape: tuple[int, int], extent: Extent,
                 tiling: Tiling) -> Extent:
    """Where to look for an object cut by ``window``: prompts and mask, grown past each cut.

    Each cut side grows by half the window's length along it (at least the halo), so
    an object longer than a tile is seen whole after a few moves; the result is kept
    within :data:`MAX_WINDOW_TILES` tiles of the prompts' centre.
    """
    origin, crop = crop_to_mask(mask, window)
    found = extent.union(Extent(origin[0], origin[1], origin[0] + crop.shape[0] - 1,
                                origin[1] + crop.shape[1] - 1))
    top, left, bottom, right = window.inner_edges(shape)
    grow_y, grow_x = (max(tiling.halo, n // 2) for n in window.shape)
    y0 = found.y0 - grow_y if top and mask[0].any() else found.y0
    y1 = found.y1 + grow_y if bottom and mask[-1].any() else found.y1
    x0 = found.x0 - grow_x if left and mask[:, 0].any() else found.x0
    x1 = found.x1 + grow_x if right and mask[:, -1].any() else found.x1
    reach = MAX_WINDOW_TILES * tiling.tile / 2 - tiling.halo
    cy, cx = (extent.y0 + extent.y1) / 2, (extent.x0 + extent.x1) / 2
    return Extent(max(y0, cy - reach), max(x0, cx - reach),
                  min(y1, cy + reach), min(x1, cx + reach))


def decode_object(segmenter, source, prompt: ObjectPrompt, window: Window, embedding,
                  tiling: Tiling) -> PlacedMask:
    """One object decoded in ``window`` (``embedding`` its), moved wider while cut (module doc).

    ``prompt`` is in slice pixels. Leaves the segmenter on the last window it used.
    """
    shape = source.shape
    extent = prompt_extent(prompt)
    for move in range(MAX_MOVES + 1):
        segmenter.set_embedding(embedding)
        mask, score, low_res = segmenter.decode(in_window(prompt, window))
        if move == MAX_MOVES or not cut_by_window(mask, window, shape):
            break
        wider = tiling.route(shape, _beyond_cuts(mask, window, shape, extent, tiling))
        if wider == window:
            break
        window = wider
        embedding = segmenter.embeddings([source.read(window)])[0]
    origin, crop = crop_to_mask(mask, window)
    return PlacedMask(origin, crop, score, low_res, window)
