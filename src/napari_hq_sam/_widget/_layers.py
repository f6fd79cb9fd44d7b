"""Prompt, preview and result layers of the segmentation widget (napari layers, no Qt).

Prompts live in two layers that the widget creates on request:

- ``HQ-SAM points``: positive and negative clicks, told apart by the ``label``
  feature (``positive`` green, ``negative`` red). Key ``T`` toggles the label of
  the next points and of the selected ones.
- ``HQ-SAM boxes``: rectangles, one per object, drawn in rectangle mode.

Both have the image's slice axes (Z, T, ...) plus Y and X, so a prompt belongs to
the slice it was drawn on.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

POINTS_NAME = "HQ-SAM points"
BOXES_NAME = "HQ-SAM boxes"
PREVIEW_NAME = "HQ-SAM preview"
RESULT_NAME = "HQ-SAM labels"
LABEL_FEATURE = "label"
POSITIVE, NEGATIVE = "positive", "negative"
LABEL_COLOURS = {POSITIVE: "#00ff00", NEGATIVE: "#ff0000"}
TOGGLE_KEY = "t"
_LABEL_DTYPE = pd.CategoricalDtype([POSITIVE, NEGATIVE])


def _layer(viewer, name: str, kind: str):
    for layer in viewer.layers:
        if layer.name == name and type(layer).__name__ == kind:
            return layer
    return None


def _reuse(viewer, name: str, kind: str, ndim: int):
    """The existing prompt layer ``name`` if it fits an image of ``ndim`` label dims."""
    layer = _layer(viewer, name, kind)
    if layer is not None and layer.ndim != ndim:
        raise ValueError(f"'{name}' was made for a {layer.ndim}-D image and this one needs "
                         f"{ndim}-D prompts: delete or rename '{name}' first.")
    return layer


def make_points_layer(viewer, ndim: int, scale=None, translate=None):
    """The positive/negative points layer, created if missing.

    Parameters
    ----------
    viewer : napari.Viewer
    ndim : int
        Dimensions of the labels (slice axes + Y, X).
    scale, translate : sequence of float, optional
        The image layer's, so that prompts line up with it.
    """
    layer = _reuse(viewer, POINTS_NAME, "Points", ndim)
    if layer is not None:
        return layer
    features = pd.DataFrame({LABEL_FEATURE: pd.Series([], dtype=_LABEL_DTYPE)})
    layer = viewer.add_points(
        np.empty((0, ndim)), ndim=ndim, name=POINTS_NAME, features=features,
        face_color=LABEL_FEATURE, face_color_cycle=LABEL_COLOURS, border_color="white",
        border_width=0.1, size=max(4.0, _default_size(viewer)), scale=scale,
        translate=translate, out_of_slice_display=False)
    layer.feature_defaults = {LABEL_FEATURE: POSITIVE}
    layer.bind_key(TOGGLE_KEY, toggle_point_label, overwrite=True)
    layer.mode = "add"
    return layer


def make_boxes_layer(viewer, ndim: int, scale=None, translate=None):
    """The boxes layer (rectangles, one per object), created if missing."""
    layer = _reuse(viewer, BOXES_NAME, "Shapes", ndim)
    if layer is not None:
        return layer
    layer = viewer.add_shapes(
        None, ndim=ndim, name=BOXES_NAME, shape_type="rectangle", edge_color="#ffd700",
        face_color="transparent", edge_width=max(1.0, _default_size(viewer) / 4),
        scale=scale, translate=translate)
    layer.mode = "add_rectangle"
    return layer


def _default_size(viewer) -> float:
    """Point size: about 1.5 % of the largest displayed extent."""
    extent = viewer.layers.extent.world
    span = float(np.max(extent[1][-2:] - extent[0][-2:])) if len(viewer.layers) else 512.0
    return max(span / 64.0, 1.0)


def toggle_point_label(layer) -> None:
    """Switch the next points (and the selected ones) between positive and negative."""
    current = layer.feature_defaults[LABEL_FEATURE].iloc[0]
    new = NEGATIVE if current == POSITIVE else POSITIVE
    layer.feature_defaults = {LABEL_FEATURE: new}
    selected = sorted(layer.selected_data)
    if selected:
        labels = layer.features[LABEL_FEATURE].astype(_LABEL_DTYPE).copy()
        labels.iloc[selected] = new
        layer.features = layer.features.assign(**{LABEL_FEATURE: labels})
        layer.refresh_colors()
    layer.help = f"HQ-SAM: next points are {new} ({TOGGLE_KEY.upper()} toggles)"


def add_labels_layer(viewer, shape: tuple[int, ...], name: str = RESULT_NAME,
                     scale=None, translate=None):
    """A new empty Labels layer (uint32) of ``shape``."""
    return viewer.add_labels(np.zeros(shape, dtype=np.uint32), name=name, scale=scale,
                             translate=translate)


def show_preview(viewer, masks: list[np.ndarray], index: tuple[int, ...],
                 scale=None, translate=None):
    """Show the ``masks`` of slice ``index`` in the 2D preview layer (ids 1..n).

    The preview is one 2D plane (it follows the displayed slice in live mode), so it
    costs ``H * W`` bytes whatever the size of the stack.
    """
    shape = masks[0].shape
    scale = None if scale is None else tuple(scale)[-2:]
    translate = None if translate is None else tuple(translate)[-2:]
    layer = _layer(viewer, PREVIEW_NAME, "Labels")
    if layer is None or layer.data.shape != tuple(shape):
        if layer is not None:
            viewer.layers.remove(layer)
        layer = viewer.add_labels(np.zeros(shape, dtype=np.uint8), name=PREVIEW_NAME,
                                  opacity=0.5, scale=scale, translate=translate)
    data = np.zeros(shape, dtype=np.uint8)
    for i, mask in enumerate(masks, start=1):
        data[mask & (data == 0)] = min(i, 255)
    layer.metadata["slice"] = tuple(index)
    layer.data = data
    return layer


def clear_preview(viewer) -> None:
    """Empty the preview layer if there is one."""
    layer = _layer(viewer, PREVIEW_NAME, "Labels")
    if layer is not None and layer.data.any():
        layer.data = np.zeros_like(layer.data)


def remove_prompts_on(points, boxes, index: tuple[int, ...]) -> dict:
    """Delete the prompts drawn on slice ``index`` (all of them for a 2D image).

    Returns
    -------
    dict
        The removed prompts, for :func:`restore_prompts`.
    """
    k = len(index)
    removed: dict = {"points": None, "boxes": None}
    if points is not None and len(points.data):
        on = np.all(np.rint(points.data[:, :k]) == index, axis=1) if k else \
            np.ones(len(points.data), bool)
        if on.any():
            removed["points"] = (points.data[on].copy(),
                                 points.features[on].reset_index(drop=True))
            points.selected_data = set(np.flatnonzero(on).tolist())
            points.remove_selected()
    if boxes is not None and len(boxes.data):
        drop = [i for i, d in enumerate(boxes.data)
                if not k or np.all(np.rint(d[0, :k]) == index)]
        if drop:
            removed["boxes"] = ([boxes.data[i].copy() for i in drop],
                                [boxes.shape_type[i] for i in drop])
            boxes.selected_data = set(drop)
            boxes.remove_selected()
    return removed


def restore_prompts(points, boxes, removed: dict) -> None:
    """Add back prompts removed by :func:`remove_prompts_on`."""
    if points is not None and removed.get("points") is not None:
        data, features = removed["points"]
        for row, (_, feature) in zip(data, features.iterrows()):
            points.feature_defaults = {LABEL_FEATURE: feature[LABEL_FEATURE]}
            points.add(row[None])
        points.feature_defaults = {LABEL_FEATURE: POSITIVE}
    if boxes is not None and removed.get("boxes") is not None:
        data, types = removed["boxes"]
        boxes.add(data, shape_type=types)


def connect_changes(layer, callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` whenever ``layer``'s data changes; return the disconnector."""
    def _on(event=None):
        callback()

    layer.events.data.connect(_on)
    if hasattr(layer.events, "features"):
        layer.events.features.connect(_on)
    return lambda: _disconnect(layer, _on)


def _disconnect(layer, handler) -> None:
    layer.events.data.disconnect(handler)
    if hasattr(layer.events, "features"):
        layer.events.features.disconnect(handler)
