"""Prompt tables: napari Points and Shapes layer data to grouped object prompts.

Coordinates
-----------
napari layers store points and shape vertices as rows ``(..., y, x)`` in data
coordinates (pixel centres at integers); the leading values are the slice index
(rounded). The :class:`~napari_hq_sam.engine.prompts.ObjectPrompt` objects made here hold
SAM's convention instead: points ``(N, 2)`` as ``(X, Y)`` pixels and boxes ``(4,)``
as XYXY.

Grouping rules
--------------
- Each box (a rectangle of a Shapes layer) is one object.
- Points sharing an ``object`` value form one object (per slice; the same value on
  several slices is the same object, i.e. the same label id). A box with an
  ``object`` value takes the points with that value.
- Points with no ``object`` value on a slice without boxes form one object.
  On a slice with boxes, such a point inside a box refines that box (the smallest
  one if several contain it); those inside no box form one object together.

Object ids: whole-number ``object`` values (1 to
:data:`~napari_hq_sam.engine.prompts.MAX_OBJECT_ID`) are kept; names (text that is
not a number) are numbered after the largest given id, in sorted order; objects
without a value get the next free ids, in order of slice, then boxes before points,
then file order. Other values (1.5, 0, -3, 1e300, lists) are refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from .prompts import MAX_OBJECT_ID, ObjectPrompt, checked_id

POSITIVE = {"positive": 1, "1": 1, "true": 1, "1.0": 1, "negative": 0, "0": 0, "false": 0,
            "0.0": 0}


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
    if len(out) != n:
        raise InputError(f"{n} points but {len(out)} labels.")
    return np.asarray(out, int).reshape(n)


def object_value(value):
    """An ``object`` value as the key grouping prompts: None (absent), an int id or a name.

    Absent: None, NaN, empty text or ``nan`` (napari's value for a point without
    one). Whole numbers, also as text (``7``, ``"7"``, ``7.0``), are ids from 1 to
    :data:`MAX_OBJECT_ID`; other text is a name. Anything else (1.5, 0, -3, 1e300,
    inf, true, a list) raises an InputError saying what is expected.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("", "nan"):
            return None
        try:
            number = float(text)
        except ValueError:
            return text
    elif isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise InputError(f"object {value!r} is neither a whole number from 1 to "
                         f"{MAX_OBJECT_ID} nor a name.")
    elif isinstance(value, (int, np.integer)):
        return checked_id(int(value), shown=value, zero=False)
    else:
        number = float(value)
        if np.isnan(number):
            return None
    if not np.isfinite(number) or number != int(number):
        raise InputError(f"object {value!r} is not a whole number: object ids are whole "
                         f"numbers from 1 to {MAX_OBJECT_ID} (or names).")
    return checked_id(int(number), shown=value, zero=False)


def points_table(data, features: Mapping | None = None) -> PromptTable:
    """Raw point prompts from a napari Points layer's ``data`` and ``features``.

    Parameters
    ----------
    data : array-like
        ``(M, D)`` rows ``(..., y, x)`` in data coordinates.
    features : mapping or DataFrame, optional
        May hold ``label`` (positive/negative or 1/0; default positive) and
        ``object`` (which object each point belongs to, see :func:`object_value`).
    """
    data = np.asarray(data, dtype=float)
    data = data.reshape(-1, data.shape[-1] if data.ndim == 2 else 2)
    bad = np.flatnonzero(~np.isfinite(data).all(axis=1))
    if len(bad):
        raise InputError(f"point {bad[0]} has NaN or infinite coordinates "
                         f"{data[bad[0]].tolist()}.")
    features = {} if features is None else features
    labels = parse_point_labels(features["label"] if "label" in features else None, len(data))
    objects = (_object_values("point", features["object"]) if "object" in features
               else [None] * len(data))
    return PromptTable(data, labels, objects)


def _object_values(what: str, values) -> list:
    out = []
    for i, v in enumerate(values):
        try:
            out.append(object_value(v))
        except InputError as exc:
            raise InputError(f"{what} {i}: {exc}") from None
    return out


def shape_box(vertices, shape_type: str = "rectangle") -> tuple[tuple[int, ...], np.ndarray]:
    """The box prompt of one napari rectangle: ``(slice index, XYXY box)``.

    Parameters
    ----------
    vertices : array-like
        ``(V, D)`` vertices ``(..., y, x)``; the box is their extent, the slice
        index their leading values (rounded), which must agree.
    shape_type : str
        napari's shape type; anything but ``rectangle`` is refused, and so is a
        rectangle with no area.
    """
    verts = np.asarray(vertices, dtype=float)
    if shape_type != "rectangle":
        article = "an" if str(shape_type)[:1].lower() in "aeiou" else "a"
        raise InputError(f"is {article} {shape_type}: only rectangles are box prompts; delete "
                         "it or redraw it as a rectangle.")
    if verts.ndim != 2 or verts.shape[1] < 2 or not len(verts):
        raise InputError(f"has vertices of shape {verts.shape}, not (V, D) rows (..., y, x).")
    if not np.isfinite(verts).all():
        raise InputError(f"has NaN or infinite coordinates {verts.tolist()}.")
    lead = verts[:, :-2]
    if len(lead[0]) and not np.allclose(lead, lead[0]):
        raise InputError(f"is not drawn in one 2D slice ({lead.tolist()}).")
    y, x = verts[:, -2], verts[:, -1]
    box = np.array([x.min(), y.min(), x.max(), y.max()])
    if box[0] == box[2] or box[1] == box[3]:
        raise InputError(f"has no area (x {box[0]:g} to {box[2]:g}, y {box[1]:g} to "
                         f"{box[3]:g}): drag a rectangle around the object.")
    return tuple(int(round(v)) for v in lead[0]), box


def shapes_table(data: Sequence, shape_types: Sequence[str] | None = None,
                 objects: Sequence | None = None) -> PromptTable:
    """Raw box prompts from a napari Shapes layer's ``data`` (rectangles only).

    Parameters
    ----------
    data : list of array-like
        Per shape, ``(4, D)`` vertices ``(..., y, x)``; the box is their extent
        (:func:`shape_box`).
    shape_types : list of str, optional
        napari shape types; anything but ``rectangle`` is refused.
    objects : list, optional
        ``object`` value per shape (see :func:`object_value`).
    """
    shape_types = shape_types or ["rectangle"] * len(data)
    boxes = []
    for i, (verts, kind) in enumerate(zip(data, shape_types)):
        try:
            boxes.append(shape_box(verts, kind))
        except InputError as exc:
            raise InputError(f"shape {i} {exc}") from None
    objects = ([None] * len(boxes) if objects is None
               else _object_values("shape", objects))
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
    for v in ints:
        checked_id(v, zero=False)
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
    if top > MAX_OBJECT_ID:
        raise InputError(f"the objects without a whole-number id would be numbered up to {top}, "
                         f"beyond the largest label id {MAX_OBJECT_ID}: give them smaller ids.")
    return ids


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
