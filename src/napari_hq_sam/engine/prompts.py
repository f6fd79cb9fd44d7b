"""Object prompts: one object on one slice, built from napari layer data and grouped.

Coordinates
-----------
napari layers store points and shape vertices as rows ``(..., y, x)`` in data
coordinates (pixel centres at integers); the leading values are the slice index
(rounded). An :class:`ObjectPrompt` holds SAM's convention instead: points
``(N, 2)`` as ``(X, Y)`` pixels and boxes ``(4,)`` as XYXY.

Grouping rules
--------------
- Each box (a rectangle of a Shapes layer) is one object.
- Points sharing an ``object`` value form one object (per slice; the same value on
  several slices is the same object, i.e. the same label id). A box with an
  ``object`` value takes the points with that value.
- Points with no ``object`` value on a slice without boxes form one object.
  On a slice with boxes, such a point inside a box refines that box (the smallest
  one if several contain it); those inside no box form one object together.

An existing object's mask becomes a prompt with :func:`mask_prompt` (its box and
its mask as SAM's low-resolution logits, :func:`mask_to_logits`).

Object ids: integer ``object`` values are kept; other values (e.g. strings) are
numbered 1, 2, ... in sorted order; objects without a value get the next free
ids, in order of slice, then boxes before points, then file order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import InputError

POSITIVE = {"positive": 1, "1": 1, "true": 1, "1.0": 1, "negative": 0, "0": 0, "false": 0,
            "0.0": 0}


@dataclass(frozen=True, eq=False)
class ObjectPrompt:
    """Prompts of one object on one 2D slice.

    Attributes
    ----------
    slice_index : tuple of int
        Index along the image's leading axes, e.g. ``(z,)``; ``()`` for a 2D image.
    points : np.ndarray or None
        ``(N, 2)`` float, ``(X, Y)`` in pixels of the slice.
    labels : np.ndarray or None
        ``(N,)`` int, 1 positive, 0 negative.
    box : np.ndarray or None
        ``(4,)`` float, ``(x0, y0, x1, y1)`` in pixels.
    mask : np.ndarray or None
        ``(1, 256, 256)`` low-resolution logits (SAM's ``mask_input``).
    object_id : int
        The object's id (its label value in a fresh labels array); 0 = not yet set.
    """

    slice_index: tuple[int, ...] = ()
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None
    mask: np.ndarray | None = None
    object_id: int = 0

    def __post_init__(self):
        if self.points is not None:
            pts = np.asarray(self.points, dtype=float).reshape(-1, 2)
            lab = np.ones(len(pts), int) if self.labels is None else np.asarray(self.labels, int)
            if lab.shape != (len(pts),) or not np.isin(lab, (0, 1)).all():
                raise InputError(f"object {self.object_id}: labels must be (N,) of 1/0 for "
                                 f"{len(pts)} points.")
            object.__setattr__(self, "points", pts)
            object.__setattr__(self, "labels", lab)
        if self.box is not None:
            box = np.asarray(self.box, dtype=float).reshape(4)
            box = np.array([min(box[0], box[2]), min(box[1], box[3]),
                            max(box[0], box[2]), max(box[1], box[3])])
            object.__setattr__(self, "box", box)
        if self.points is None and self.box is None and self.mask is None:
            raise InputError(f"object {self.object_id}: a prompt needs points, a box or a mask.")
        object.__setattr__(self, "slice_index", tuple(int(i) for i in self.slice_index))

    def check_bounds(self, height: int, width: int) -> None:
        """Raise a ValueError if a point or box lies outside an ``(height, width)`` slice.

        Positions from -0.5 to size - 0.5 (napari's pixel edges) are inside.
        """
        xy = [] if self.points is None else list(self.points)
        if self.box is not None:
            xy += [self.box[:2], self.box[2:]]
        for x, y in xy:
            if not (-0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5):
                raise InputError(
                    f"the prompt of object {self.object_id} on slice {self.slice_index} lies "
                    f"outside the image (x={x:g}, y={y:g}; slices are {width} wide and {height} "
                    "high): check that the prompts were made on this image.")


@dataclass
class PromptTable:
    """Raw, ungrouped prompts in napari's coordinates, before :func:`group_prompts`.

    Attributes
    ----------
    points : np.ndarray
        ``(M, D)`` point rows ``(..., y, x)``.
    point_labels : np.ndarray
        ``(M,)`` 1 positive, 0 negative.
    point_objects : list
        ``M`` ``object`` values, None where absent.
    boxes : list of (tuple of int, np.ndarray)
        ``(slice index, XYXY box)`` per rectangle.
    box_objects : list
        ``object`` value per box, None where absent.
    """

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    point_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    point_objects: list = field(default_factory=list)
    boxes: list = field(default_factory=list)
    box_objects: list = field(default_factory=list)

    def __add__(self, other: PromptTable) -> PromptTable:
        pts = [t.points for t in (self, other) if len(t.points)]
        if len({p.shape[1] for p in pts}) > 1:
            raise InputError("point prompts of different dimensionality cannot be combined.")
        return PromptTable(
            np.concatenate(pts) if pts else self.points,
            np.concatenate([self.point_labels, other.point_labels]),
            self.point_objects + other.point_objects,
            self.boxes + other.boxes, self.box_objects + other.box_objects)


def parse_point_labels(values: Iterable | None, n: int) -> np.ndarray:
    """``label`` feature values (``positive``/``negative``, 1/0, True/False) as ``(n,)`` 1/0.

    None gives all positive.
    """
    if values is None:
        return np.ones(n, int)
    out = []
    for v in values:
        key = str(v).strip().lower()
        if key not in POSITIVE:
            raise InputError(f"point label {v!r} is neither positive/negative nor 1/0.")
        out.append(POSITIVE[key])
    return np.asarray(out, int).reshape(n)


def _object_value(v):
    if v is None or (isinstance(v, float) and np.isnan(v)) or str(v).strip() in ("", "nan"):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return int(f) if f == int(f) else str(v)


def points_table(data, features: Mapping | None = None) -> PromptTable:
    """Raw point prompts from a napari Points layer's ``data`` and ``features``.

    Parameters
    ----------
    data : array-like
        ``(M, D)`` rows ``(..., y, x)`` in data coordinates.
    features : mapping or DataFrame, optional
        May hold ``label`` (positive/negative or 1/0; default positive) and
        ``object`` (which object each point belongs to).
    """
    data = np.asarray(data, dtype=float)
    data = data.reshape(-1, data.shape[-1] if data.ndim == 2 else 2)
    features = {} if features is None else features
    labels = parse_point_labels(features["label"] if "label" in features else None, len(data))
    objects = ([_object_value(v) for v in features["object"]] if "object" in features
               else [None] * len(data))
    return PromptTable(data, labels, objects)


def shapes_table(data: Sequence, shape_types: Sequence[str] | None = None,
                 objects: Sequence | None = None) -> PromptTable:
    """Raw box prompts from a napari Shapes layer's ``data`` (rectangles only).

    Parameters
    ----------
    data : list of array-like
        Per shape, ``(4, D)`` vertices ``(..., y, x)``; the box is their extent.
    shape_types : list of str, optional
        napari shape types; anything but ``rectangle`` is refused.
    objects : list, optional
        ``object`` value per shape.
    """
    shape_types = shape_types or ["rectangle"] * len(data)
    boxes = []
    for i, (verts, kind) in enumerate(zip(data, shape_types)):
        verts = np.asarray(verts, dtype=float)
        if kind != "rectangle":
            raise InputError(f"shape {i} is a {kind}: only rectangles are box prompts; "
                             "delete it or redraw it as a rectangle.")
        lead = verts[:, :-2]
        if len(lead[0]) and not np.allclose(lead, lead[0]):
            raise InputError(f"rectangle {i} is not drawn in one 2D slice ({lead.tolist()}).")
        y, x = verts[:, -2], verts[:, -1]
        index = tuple(int(round(v)) for v in lead[0])
        boxes.append((index, np.array([x.min(), y.min(), x.max(), y.max()])))
    objects = [None] * len(boxes) if objects is None else [_object_value(v) for v in objects]
    return PromptTable(boxes=boxes, box_objects=objects)


def group_prompts(table: PromptTable) -> list[ObjectPrompt]:
    """Apply the grouping rules of this module to raw prompts.

    Returns
    -------
    list of ObjectPrompt
        One per object and slice, ordered by slice index, then object id.
    """
    groups: dict[tuple, dict] = {}  # (slice, object key) -> {"box", "points", "labels"}
    for n, ((index, box), obj) in enumerate(zip(table.boxes, table.box_objects)):
        key = (index, ("box", n) if obj is None else obj)
        if key in groups:
            raise InputError(f"object {obj!r} has two boxes on slice {index}: one box per object.")
        groups[key] = {"box": box, "points": [], "labels": []}
    for row, lab, obj in zip(table.points, table.point_labels, table.point_objects):
        key = _point_owner(_slice_of(row), row, obj, groups)
        entry = groups.setdefault(key, {"box": None, "points": [], "labels": []})
        entry["points"].append((row[-1], row[-2]))
        entry["labels"].append(lab)
    ids = _object_ids(list(groups))
    out = [ObjectPrompt(index, np.array(e["points"]) if e["points"] else None,
                        np.array(e["labels"]) if e["points"] else None, e["box"],
                        object_id=ids[key])
           for (index, key), e in groups.items()]
    return sorted(out, key=lambda p: (p.slice_index, p.object_id))


def _slice_of(row) -> tuple[int, ...]:
    return tuple(int(round(v)) for v in row[:-2])


def _point_owner(index, row, obj, groups) -> tuple:
    if obj is not None:
        return (index, obj)
    boxes = [k for k, e in groups.items() if k[0] == index and e["box"] is not None]
    inside = [k for k in boxes if _inside(groups[k]["box"], row[-1], row[-2])]
    if not inside:
        return (index, ("points", index))
    return min(inside, key=lambda k: _area(groups[k]["box"]))


def _inside(box, x, y) -> bool:
    return box[0] <= x <= box[2] and box[1] <= y <= box[3]


def _area(box) -> float:
    return float((box[2] - box[0]) * (box[3] - box[1]))


def _object_ids(keys: list[tuple]) -> dict:
    """Map object keys to int ids > 0.

    ``keys`` are ``(slice index, key)`` in order of appearance; a key is a given
    ``object`` value (int or str) or a generated tuple for an unnamed object.
    """
    named = {k for _, k in keys if not isinstance(k, tuple)}
    ints = {k for k in named if isinstance(k, int)}
    if any(v <= 0 for v in ints):
        raise InputError("integer object values must be positive (0 is background).")
    ids = {v: v for v in ints}
    top = max(ints, default=0)
    for s in sorted(named - ints, key=str):
        top += 1
        ids[s] = top
    order: dict = {}
    for pos, (index, k) in enumerate(keys):
        if isinstance(k, tuple):
            order.setdefault(k, (index, pos))
    for k in sorted(order, key=order.get):
        top += 1
        ids[k] = top
    return ids


def with_ids(prompts: Iterable[ObjectPrompt], start: int) -> list[ObjectPrompt]:
    """Renumber object ids to ``start, start+1, ...`` keeping objects apart (for new labels)."""
    mapping: dict[int, int] = {}
    out = []
    for p in prompts:
        new = mapping.setdefault(p.object_id, start + len(mapping))
        out.append(replace(p, object_id=new))
    return out


def prompts_from_layers(points=None, shapes=None) -> list[ObjectPrompt]:
    """Object prompts from napari-layer-like objects (no napari import needed).

    Parameters
    ----------
    points : object with ``data`` and ``features``, optional
        A Points layer: ``data`` ``(M, D)`` rows ``(..., y, x)``; ``features`` with
        ``label`` (positive/negative or 1/0) and optionally ``object``.
    shapes : object with ``data``, ``shape_type`` and ``features``, optional
        A Shapes layer whose rectangles are boxes; an ``object`` feature is optional.

    Returns
    -------
    list of ObjectPrompt
        Grouped by :func:`group_prompts`.
    """
    table = PromptTable()
    if points is not None and len(points.data):
        table = table + points_table(points.data, getattr(points, "features", None))
    if shapes is not None and len(shapes.data):
        features = getattr(shapes, "features", None)
        objects = features["object"] if features is not None and "object" in features else None
        table = table + shapes_table(shapes.data, list(shapes.shape_type), objects)
    return group_prompts(table)


def check_prompts(prompts: Sequence[ObjectPrompt], layout) -> None:
    """Raise a ValueError for a prompt on a missing slice or outside the image.

    ``layout`` is an :class:`~napari_hq_sam.engine.image.ImageLayout`.
    """
    if not prompts:
        raise InputError("there are no prompts: add points or boxes (or check the prompt files).")
    height, width = layout.spatial_shape
    for p in prompts:
        if len(p.slice_index) != len(layout.leading_shape):
            raise InputError(
                f"object {p.object_id} has slice index {p.slice_index} but the image has "
                f"{len(layout.leading_shape)} slice axes (labels shape {layout.labels_shape}): "
                "the prompts were made on an image with other dimensions.")
        layout.check_index(p.slice_index)
        p.check_bounds(height, width)


def mask_prompt(mask: np.ndarray, index: tuple, object_id: int, extra=()):
    """An :class:`ObjectPrompt` refining an existing object from its mask.

    The prompt holds the mask (as low-resolution logits), its bounding box, and the
    points of ``extra`` prompts (the slice's clicks) so the user can steer it.
    """
    rows, cols = np.nonzero(mask)
    box = np.array([cols.min(), rows.min(), cols.max(), rows.max()], dtype=float)
    points = [p for p in extra if p.points is not None]
    coords = np.concatenate([p.points for p in points]) if points else None
    labels = np.concatenate([p.labels for p in points]) if points else None
    return ObjectPrompt(index, coords, labels, box, mask_to_logits(mask), object_id=object_id)


def mask_to_logits(mask: np.ndarray, value: float = 8.0) -> np.ndarray:
    """``(1, 256, 256)`` low-resolution logits of a bool ``(H, W)`` mask, SAM's mask frame.

    The mask is resized so its long side is 256 and padded bottom/right, like
    SAM's own low-resolution output; inside is ``+value``, outside ``-value``.
    """
    import torch  # here: the prompt tables need no torch
    import torch.nn.functional as F

    h, w = mask.shape
    scale = 256.0 / max(h, w)
    size = (max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5)))
    small = F.interpolate(torch.as_tensor(mask, dtype=torch.float32)[None, None], size=size,
                          mode="bilinear", align_corners=False)[0, 0].numpy()
    out = np.full((256, 256), -value, dtype=np.float32)
    out[:size[0], :size[1]] = np.where(small >= 0.5, value, -value)
    return out[None]
