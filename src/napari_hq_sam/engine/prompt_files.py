"""Prompt files: napari's CSV exports of Points and Shapes layers, and a JSON form.

CSV files are what napari writes with ``layer.save("prompts.csv")`` (or File > Save
Selected Layers):

- Points: columns ``index, axis-0, ..., axis-(D-1)`` and one column per feature;
  ``label`` (positive/negative or 1/0) and ``object`` are understood.
- Shapes: columns ``index, shape-type, vertex-index, axis-0, ..., axis-(D-1)``;
  each rectangle is a box.

Any other column is refused, so that a misspelt ``lable`` is not silently ignored.

JSON form (coordinates in SAM's convention, ``(X, Y)`` pixels)::

    {"prompts": [
      {"slice": [12], "box": [x0, y0, x1, y1]},
      {"slice": [12], "points": [[x, y], [x, y]], "labels": [1, 0], "object": 7},
      {"slice": [13], "box": [x0, y0, x1, y1], "points": [[x, y]], "labels": [0]}
    ]}

Each entry is one object on one slice (``slice`` omitted for a 2D image); entries
with the same ``object`` are the same object, and so get the same label id.
``labels`` default to positive. A top-level list of entries is accepted too.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import InputError, MissingFileError
from .prompts import ObjectPrompt, PromptTable, group_prompts, points_table, shapes_table

POINT_FEATURES = {"index", "label", "object"}
SHAPE_COLUMNS = {"index", "shape-type", "vertex-index"}
JSON_KEYS = {"slice", "points", "labels", "box", "object"}


def read_prompt_files(paths: Iterable[str | Path]) -> list[ObjectPrompt]:
    """Read and group prompts from CSV and JSON files (all files form one prompt set)."""
    table = PromptTable()
    for path in paths:
        table = table + read_prompt_table(path)
    return group_prompts(table)


def read_prompt_table(path: str | Path) -> PromptTable:
    """Raw prompts of one ``.csv`` (napari Points or Shapes export) or ``.json`` file."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"prompt file {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".json":
        return read_json_table(path)
    if suffix != ".csv":
        raise InputError(f"prompt file {path} is neither .csv (napari export) nor .json.")
    header, rows = _read_csv(path)
    return _shapes_csv(path, header, rows) if "shape-type" in header else _points_csv(
        path, header, rows)


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    if not rows:
        raise InputError(f"prompt file {path} is empty: save a Points or Shapes layer with "
                         "at least one point or box.")
    header, rows = [c.strip() for c in rows[0]], rows[1:]
    if not rows:
        raise InputError(f"prompt file {path} has a header but no prompts: save a layer with "
                         "at least one point or box.")
    return header, rows


def _axis_columns(path: Path, header: list[str], allowed: set[str]) -> list[int]:
    axes = sorted((c for c in header if c.startswith("axis-")), key=lambda c: int(c[5:]))
    unknown = [c for c in header if c not in allowed and c not in axes]
    if unknown:
        raise InputError(f"prompt file {path} has unknown columns {unknown}: expected "
                         f"{sorted(allowed)} and axis-0, axis-1, ... as napari writes them.")
    if len(axes) < 2 or axes != [f"axis-{i}" for i in range(len(axes))]:
        raise InputError(f"prompt file {path} needs columns axis-0, axis-1, ... (found {axes}).")
    return [header.index(c) for c in axes]


def _points_csv(path: Path, header, rows) -> PromptTable:
    cols = _axis_columns(path, header, POINT_FEATURES)
    data = _floats(path, [[r[i] for i in cols] for r in rows])
    features = {name: [r[header.index(name)] for r in rows]
                for name in ("label", "object") if name in header}
    try:
        return points_table(data, features)
    except ValueError as exc:
        raise InputError(f"prompt file {path}: {exc}") from None


def _shapes_csv(path: Path, header, rows) -> PromptTable:
    cols = _axis_columns(path, header, SHAPE_COLUMNS)
    ids, kinds, verts = [], [], []
    for r in rows:
        shape_id = r[header.index("index")]
        if not ids or ids[-1] != shape_id:
            ids.append(shape_id)
            kinds.append(r[header.index("shape-type")].strip())
            verts.append([])
        verts[-1].append([r[i] for i in cols])
    try:
        return shapes_table([_floats(path, v) for v in verts], kinds)
    except ValueError as exc:
        raise InputError(f"prompt file {path}: {exc}") from None


def _floats(path: Path, values) -> np.ndarray:
    try:
        out = np.asarray(values, dtype=float)
    except ValueError:
        raise InputError(f"prompt file {path} has non-numeric coordinates.") from None
    if not np.isfinite(out).all():
        raise InputError(f"prompt file {path} has NaN or infinite coordinates.")
    return out


def read_json_table(path: str | Path) -> PromptTable:
    """Raw prompts of a JSON prompt file (see this module's docstring for the form)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"prompt file {path} is not valid JSON: {exc}") from None
    entries = doc.get("prompts") if isinstance(doc, dict) else doc
    if not isinstance(entries, list):
        raise InputError(f"prompt file {path} must hold a list of prompts or {{'prompts': [...]}}.")
    if not entries:
        raise InputError(f"prompt file {path} is empty: it lists no prompts.")
    rows, labels, objects, boxes, box_objects = [], [], [], [], []
    for n, e in enumerate(entries):
        if not isinstance(e, dict) or set(e) - JSON_KEYS or not {"points", "box"} & set(e):
            raise InputError(f"prompt file {path}, entry {n}: expected an object with 'points' "
                             f"and/or 'box' (keys allowed: {sorted(JSON_KEYS)}).")
        key = e.get("object", ("json", n))
        try:
            index = [float(i) for i in e.get("slice", [])]
            if "box" in e:
                boxes.append((tuple(int(i) for i in index), _floats(path, e["box"]).reshape(4)))
                box_objects.append(key)
            pts = _floats(path, e.get("points", [])).reshape(-1, 2)
            lab = np.ones(len(pts), int) if "labels" not in e else np.asarray(e["labels"], int)
        except InputError:
            raise
        except (TypeError, ValueError) as exc:  # a slice, box, points or labels of wrong form
            raise InputError(f"prompt file {path}, entry {n}: {exc}") from None
        if lab.shape != (len(pts),):
            raise InputError(f"prompt file {path}, entry {n}: {len(pts)} points but "
                             f"{lab.size} labels.")
        for (x, y), v in zip(pts, lab):
            rows.append([*index, y, x])
            labels.append(v)
            objects.append(key)
    dims = {len(r) for r in rows}
    if len(dims) > 1:
        raise InputError(f"prompt file {path}: entries have different numbers of slice indices.")
    points = np.asarray(rows, float) if rows else np.zeros((0, 2))
    table = PromptTable(points, np.asarray(labels, int), objects, boxes, box_objects)
    if not np.isin(table.point_labels, (0, 1)).all():
        raise InputError(f"prompt file {path}: labels must be 1 (positive) or 0 (negative).")
    return table


def write_prompts_json(path: str | Path, prompts: Iterable[ObjectPrompt]) -> Path:
    """Write object prompts in the JSON form (masks are not written)."""
    entries = []
    for p in prompts:
        e: dict = {"slice": list(p.slice_index), "object": int(p.object_id)}
        if p.box is not None:
            e["box"] = [float(v) for v in p.box]
        if p.points is not None:
            e["points"] = p.points.tolist()
            e["labels"] = p.labels.tolist()
        entries.append(e)
    Path(path).write_text(json.dumps({"prompts": entries}, indent=1))
    return Path(path)
