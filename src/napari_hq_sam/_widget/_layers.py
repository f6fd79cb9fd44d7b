"""Prompt, preview and result layers of the segmentation widget (napari layers, no Qt).

Prompts live in two layers that the widget creates on request:

- ``HQ-SAM points``: positive and negative clicks, told apart by the ``label``
  feature (``positive`` green, ``negative`` red). Key ``T`` toggles the label of
  the next points and of the selected ones.
- ``HQ-SAM boxes``: rectangles, one per object, drawn in rectangle mode.

Both have the image's slice axes (Z, T, ...) plus Y and X, so a prompt belongs to
the slice it was drawn on. They belong to one image, whose name is in their
``metadata`` (:func:`tie`): when another image is chosen, :func:`follow_image`
renames them ``HQ-SAM points [image]``, hides them, and brings back (or makes) the
new image's.

Layers the widget adds never take napari's layer selection (:func:`keep_selection`):
the user keeps clicking into the layer they were working in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

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
# layer.metadata keys that tie a layer to the widget: its role and the image it was made for
ROLE_KEY, IMAGE_KEY = "hq_sam_role", "hq_sam_image"
POINTS, BOXES, LABELS = "points", "boxes", "labels"
SERIES = "series image"  # the role of the image layer the image-series dock shows
_PROMPT_KINDS = {POINTS: (POINTS_NAME, "Points"), BOXES: (BOXES_NAME, "Shapes")}
_PROMPT_MODES = {POINTS: "add", BOXES: "add_rectangle"}


def _layer(viewer, name: str, kind: str):
    for layer in viewer.layers:
        if layer.name == name and type(layer).__name__ == kind:
            return layer
    return None


# -- selection and keys ------------------------------------------------------------------------
@contextmanager
def keep_selection(viewer) -> Iterator[None]:
    """Undo what adding or replacing layers does to napari's layer selection.

    napari selects every layer it inserts, in pan/zoom mode: clicks on the canvas
    would stop adding points and the prompt layers' keys would stop working. After
    the block the layers selected before, the active one and their modes are back;
    those removed inside the block are dropped (if none is left, napari's choice stays).
    """
    selection = viewer.layers.selection
    active, before = selection.active, list(selection)
    modes = {id(layer): layer.mode for layer in before if hasattr(layer, "mode")}
    try:
        yield
    finally:
        alive = [layer for layer in before if layer in viewer.layers]
        if not before:
            selection.clear()
        elif alive and (set(selection) != set(alive) or selection.active is not active):
            if active is not None and active in alive:
                selection.active = active  # selects it alone and makes it current
            else:
                selection.clear()
                selection.update(alive)
        for layer in alive:
            mode = modes.get(id(layer))
            if mode is not None and layer.mode != mode:
                layer.mode = mode


def bind_keys(layer, bindings: Mapping[str, Callable]) -> None:
    """Bind each ``key: function`` on ``layer`` (replacing what was bound to the key)."""
    for key, func in bindings.items():
        layer.bind_key(key, func, overwrite=True)


def unbind_keys(layer, bindings: Mapping[str, Callable]) -> None:
    """Unbind the keys of ``bindings`` from ``layer`` where they still call those functions."""
    from napari.utils.key_bindings import coerce_keybinding

    for key, func in bindings.items():
        if layer.keymap.get(coerce_keybinding(key)) == func:
            layer.bind_key(key, None, overwrite=True)


# -- which image a layer belongs to ------------------------------------------------------------
def tie(layer, role: str, image: str) -> None:
    """Mark ``layer`` as the widget's ``role`` layer (points, boxes, labels) of ``image``."""
    layer.metadata[ROLE_KEY] = role
    layer.metadata[IMAGE_KEY] = image


def tied_image(layer) -> str | None:
    """Name of the image ``layer`` was made for; None for a layer the widget did not tie."""
    return layer.metadata.get(IMAGE_KEY)


def tied_layer(viewer, role: str, image: str, kind: str, ndim: int | None = None):
    """The ``kind`` layer tied to ``image`` as ``role`` (with ``ndim`` dims if given), or None."""
    for layer in viewer.layers:
        if (type(layer).__name__ == kind and layer.metadata.get(ROLE_KEY) == role
                and tied_image(layer) == image and (ndim is None or layer.ndim == ndim)):
            return layer
    return None


def follow_image(viewer, image: str, ndim: int, scale=None, translate=None,
                 create: bool = True):
    """Bind the prompt layers to ``image``: park another image's, bring back or make its own.

    A prompt layer of another image (or of another dimensionality) is renamed
    ``'HQ-SAM points [its image]'`` and hidden, its prompts kept. This image's
    parked layers get the canonical names back, are shown and put in their drawing
    mode; missing ones are made when ``create``, or when prompt layers existed.
    None of this changes the layer selection.

    Parameters
    ----------
    viewer : napari.Viewer
    image : str
        Name of the image layer the prompts are for.
    ndim : int
        Dimensions of its labels (slice axes + Y, X).
    scale, translate : sequence of float, optional
        The image's, without a channel axis.
    create : bool
        Make the layers even when there were none.

    Returns
    -------
    points, boxes : napari layers or None
        None where there is no such layer (none existed and not ``create``).
    parked : dict
        ``{layer: role}`` of the layers just renamed and hidden.
    """
    current = {role: _layer(viewer, name, kind) for role, (name, kind) in _PROMPT_KINDS.items()}
    create = create or any(layer is not None for layer in current.values())
    found, parked = {}, {}
    with keep_selection(viewer):
        for role in (BOXES, POINTS):  # points made last lie on top: clicks land on them
            name, kind = _PROMPT_KINDS[role]
            layer = current[role]
            if layer is not None and layer.ndim == ndim and tied_image(layer) in (None, image):
                tie(layer, role, image)  # an untied layer of the right shape is adopted
                found[role] = layer
                continue
            if layer is not None:
                _park(layer)
                parked[layer] = role
            layer = tied_layer(viewer, role, image, kind, ndim)
            if layer is not None:
                layer.name, layer.visible = name, True
                layer.mode = _PROMPT_MODES[role]
            elif create:
                make = make_points_layer if role == POINTS else make_boxes_layer
                layer = make(viewer, ndim, scale, translate, image=image)
            found[role] = layer
    return found[POINTS], found[BOXES], parked


def _park(layer) -> None:
    """Rename ``layer`` after its image and hide it (napari numbers a name already taken)."""
    image = tied_image(layer) or f"{layer.ndim}-D image"
    layer.name = f"{layer.name} [{image}]"
    layer.visible = False


# -- making layers -----------------------------------------------------------------------------
def make_points_layer(viewer, ndim: int, scale=None, translate=None, image: str | None = None):
    """A new positive/negative points layer in add mode, tied to ``image`` when given.

    Parameters
    ----------
    viewer : napari.Viewer
    ndim : int
        Dimensions of the labels (slice axes + Y, X).
    scale, translate : sequence of float, optional
        The image layer's, so that prompts line up with it.
    image : str, optional
        Name of the image layer the prompts are for.
    """
    features = pd.DataFrame({LABEL_FEATURE: pd.Series([], dtype=_LABEL_DTYPE)})
    with keep_selection(viewer):
        layer = viewer.add_points(
            np.empty((0, ndim)), ndim=ndim, name=POINTS_NAME, features=features,
            face_color=LABEL_FEATURE, face_color_cycle=LABEL_COLOURS, border_color="white",
            border_width=0.1, size=max(4.0, _default_size(viewer)), scale=scale,
            translate=translate, out_of_slice_display=False)
    if image is not None:
        tie(layer, POINTS, image)
    layer.feature_defaults = {LABEL_FEATURE: POSITIVE}
    layer.bind_key(TOGGLE_KEY, toggle_point_label, overwrite=True)
    layer.mode = "add"
    return layer


def make_boxes_layer(viewer, ndim: int, scale=None, translate=None, image: str | None = None):
    """A new boxes layer (rectangles, one per object), tied to ``image`` when given."""
    with keep_selection(viewer):
        layer = viewer.add_shapes(
            None, ndim=ndim, name=BOXES_NAME, shape_type="rectangle", edge_color="#ffd700",
            face_color="transparent", edge_width=max(1.0, _default_size(viewer) / 4),
            scale=scale, translate=translate)
    if image is not None:
        tie(layer, BOXES, image)
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
                     scale=None, translate=None, image: str | None = None):
    """A new empty Labels layer (uint32) of ``shape``, tied to ``image`` when given.

    It does not take the layer selection.
    """
    with keep_selection(viewer):
        layer = viewer.add_labels(np.zeros(shape, dtype=np.uint32), name=name, scale=scale,
                                  translate=translate)
    if image is not None:
        tie(layer, LABELS, image)
    return layer


def show_preview(viewer, masks: list[np.ndarray], index: tuple[int, ...],
                 scale=None, translate=None, origins=None):
    """Show the ``masks`` of slice ``index`` in the 2D preview layer (ids 1..n).

    The preview is one 2D plane (it follows the displayed slice in live mode). Full
    ``(H, W)`` masks fill a plane of the slice's size; cropped masks placed at
    ``origins`` (``(K, 2)`` top, left: a tiled slice) fill only the rectangle that
    holds them, shifted into place by the layer's translate, so a preview on a huge
    slice costs what its objects cover. Making or replacing the layer does not
    change the layer selection.
    """
    scale = (1.0, 1.0) if scale is None else tuple(float(v) for v in scale)[-2:]
    translate = (0.0, 0.0) if translate is None else tuple(float(v) for v in translate)[-2:]
    top_left = np.zeros(2, dtype=int)
    if origins is None:
        shape = tuple(masks[0].shape)
    else:
        origins = np.asarray(origins, dtype=int).reshape(-1, 2)
        ends = origins + np.array([m.shape for m in masks], dtype=int).reshape(-1, 2)
        top_left = origins.min(axis=0)
        shape = tuple(int(v) for v in ends.max(axis=0) - top_left)
        origins = origins - top_left
    shift = tuple(t + o * s for t, o, s in zip(translate, top_left, scale))
    layer = _layer(viewer, PREVIEW_NAME, "Labels")
    if layer is None or layer.data.shape != tuple(shape):
        with keep_selection(viewer):
            if layer is not None:
                viewer.layers.remove(layer)
            layer = viewer.add_labels(np.zeros(shape, dtype=np.uint8), name=PREVIEW_NAME,
                                      opacity=0.5, scale=scale, translate=shift)
    data = np.zeros(shape, dtype=np.uint8)
    for i, mask in enumerate(masks, start=1):
        top, left = (0, 0) if origins is None else origins[i - 1]
        window = data[top:top + mask.shape[0], left:left + mask.shape[1]]
        window[mask & (window == 0)] = min(i, 255)
    if tuple(layer.translate) != shift:
        layer.translate = shift
    layer.metadata["slice"] = tuple(index)
    layer.metadata["origin"] = tuple(int(v) for v in top_left)
    layer.data = data
    return layer


def clear_preview(viewer) -> None:
    """Empty the preview layer if there is one."""
    layer = _layer(viewer, PREVIEW_NAME, "Labels")
    if layer is not None and layer.data.any():
        layer.data = np.zeros_like(layer.data)


# -- prompts consumed by a write, and given back by undo -----------------------------------------
def remove_prompts_on(points, boxes, index: tuple[int, ...]) -> dict:
    """Delete the prompts drawn on slice ``index`` (all of them for a 2D image).

    Returns
    -------
    dict
        The removed prompts and the layers they came from, for :func:`restore_prompts`.
    """
    k = len(index)
    removed: dict = {"points": None, "boxes": None, "layers": (points, boxes)}
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


def restore_prompts(viewer, removed: dict) -> None:
    """Add back prompts removed by :func:`remove_prompts_on`, into the layers they came from.

    Those layers may meanwhile be parked under another image's name; a layer no
    longer in ``viewer`` gets nothing back.
    """
    points, boxes = removed["layers"]
    if points is not None and points in viewer.layers and removed["points"] is not None:
        data, features = removed["points"]
        default = points.feature_defaults[LABEL_FEATURE].iloc[0]  # what T chose for next points
        for row, (_, feature) in zip(data, features.iterrows()):
            points.feature_defaults = {LABEL_FEATURE: feature[LABEL_FEATURE]}
            points.add(row[None])
        points.feature_defaults = {LABEL_FEATURE: default}
    if boxes is not None and boxes in viewer.layers and removed["boxes"] is not None:
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
