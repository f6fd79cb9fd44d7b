"""What the widget reads from napari before a task: image layout, slice, prompts (no Qt).

Everything here runs in the GUI thread and returns plain numpy/engine objects
that a worker thread may then use without touching napari layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..engine.image import ImageLayout, describe_layout
from ..engine.prompt_tables import prompts_from_layers
from ..engine.prompts import ObjectPrompt


@dataclass(frozen=True)
class ImageContext:
    """The image layer to segment and how to read it.

    Attributes
    ----------
    layer : napari.layers.Image
    layout : ImageLayout
        Slice / spatial / RGB / channel axes of ``layer.data``.
    contrast_limits : (float, float)
        The layer's contrast limits: what the user sees is what the model gets.
    scale, translate : tuple of float
        The layer's, without the channel axis: for prompt and labels layers.

    A multiscale layer is segmented at its full resolution (level 0) whatever level
    napari displays: its ``scale`` and ``translate`` and the data coordinates napari
    gives (prompts, the displayed slice) are those of level 0 already.
    """

    layer: object
    layout: ImageLayout
    contrast_limits: tuple[float, float]
    scale: tuple[float, ...]
    translate: tuple[float, ...]

    @property
    def data(self):
        """The image array (numpy, dask or zarr); level 0 of a multiscale layer."""
        return full_resolution(self.layer)

    @property
    def multiscale(self) -> bool:
        """Whether the layer is a pyramid (its level 0 is read window by window)."""
        return bool(getattr(self.layer, "multiscale", False))


def full_resolution(layer):
    """The array napari's ``layer`` shows at full resolution: level 0 of a pyramid."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def image_context(layer, channel_axis: int | None = None,
                  channel: int | None = None) -> ImageContext:
    """Describe ``layer`` for the engine.

    Raises
    ------
    ValueError
        No image layer, or a layout the engine cannot slice (message says why).
    """
    if layer is None:
        raise ValueError("No image layer: open an image (File > Open Sample > HQ-SAM for a "
                         "sample) and choose it in the widget's 'layer' box.")
    layout = describe_layout(full_resolution(layer).shape, rgb=bool(layer.rgb),
                             channel_axis=channel_axis,
                             channel=channel if channel_axis is not None else None)
    keep = [i for i in range(layer.ndim) if i != channel_axis]
    lo, hi = (float(v) for v in layer.contrast_limits)
    return ImageContext(layer, layout, (lo, hi), tuple(np.asarray(layer.scale)[keep]),
                        tuple(np.asarray(layer.translate)[keep]))


def current_index(viewer, ctx: ImageContext) -> tuple[int, ...]:
    """Index of the displayed slice along the image's leading axes (``()`` in 2D)."""
    position = np.asarray(ctx.layer.world_to_data(viewer.dims.point), dtype=float)
    keep = [i for i in range(ctx.layer.ndim) if i != ctx.layout.channel_axis]
    lead = np.rint(position[keep][:-2]).astype(int)
    shape = ctx.layout.leading_shape
    return tuple(int(np.clip(i, 0, n - 1)) for i, n in zip(lead, shape))


def gather_prompts(points, boxes, index: tuple[int, ...] | None = None) -> list[ObjectPrompt]:
    """Object prompts from the prompt layers (the engine's grouping rules), optionally of one slice.

    Parameters
    ----------
    points : napari.layers.Points or None
    boxes : napari.layers.Shapes or None
    index : tuple of int, optional
        Keep only the prompts of this slice.
    """
    prompts = prompts_from_layers(points, boxes)
    if index is not None:
        prompts = [p for p in prompts if p.slice_index == tuple(index)]
    return prompts
