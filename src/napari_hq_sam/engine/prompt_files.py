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

Each entry is one object on one slice (``slice``: a list of whole numbers, one per
slice axis; omitted for a 2D image); entries with the same ``object`` are the same
object, and so get the same label id. ``labels`` (1/0 or positive/negative) default
to positive. A top-level list of entries is accepted too.

Every value is checked as the file is read, before any model work: coordinates are
finite numbers, a box has x0 < x1 and y0 < y1, labels are positive/negative, object
ids are whole numbers from 1 to :data:`~.prompts.MAX_OBJECT_ID` (or names). A
message names the file and the CSV line or JSON entry (counted from 0), and says
what is expected.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import InputError, MissingFileError
from .prompt_tables import (
    PromptTable,
    group_prompts,
    object_value,
    parse_point_labels,
    points_table,
    shape_box,
)
from .prompts import ObjectPrompt

POINT_FEATURES = {"index", "label", "object"}
SHAPE_COLUMNS = {"index", "shape-type", "vertex-index"}
JSON_KEYS = {"slice", "points", "labels", "box", "object"}
JSON_EXAMPLE = '{"slice": [12], "box": [x0, y0, x1, y1]}'


def read_prompt_files(paths: Iterable[str | Path]) -> list[ObjectPrompt]:
    """Read and group prompts from CSV and JSON files (all files form one prompt set)."""
    table, first, names = PromptTable(), None, []
    for path in paths:
        part = read_prompt_table(path)
        names.append(str(path))
        if len(part.points) and first is not None and first[1] != part.points.shape[1]:
            raise InputError(
                f"prompt file {path} has {part.points.shape[1] - 2} slice axes per point but "
                f"{first[0]} has {first[1] - 2}: all prompt files must be made on one image.")
        if len(part.points) and first is None:
            first = (path, part.points.shape[1])
        table = table + part
    try:
        return group_prompts(table)
    except InputError as exc:
        files = f"prompt file{'s' * (len(names) > 1)} {', '.join(names)}"
        raise InputError(f"{files}: {exc}") from None


def read_prompt_table(path: str | Path) -> PromptTable:
    """Raw prompts of one ``.csv`` (napari Points or Shapes export) or ``.json`` file."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"prompt file {path} is a folder: give a .csv or .json file.")
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


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"prompt file {path} is not UTF-8 text: save the prompts from napari "
                         "(.csv) or write them as JSON.") from None


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and ``(line number, values)`` of each non-blank row; every row as long as it."""
    text = _read_text(path)
    try:
        reader = csv.reader(text.splitlines())
        rows = [(reader.line_num, r) for r in reader if any(c.strip() for c in r)]
    except csv.Error as exc:
        raise InputError(f"prompt file {path} is not a readable CSV file ({exc}): save the "
                         "layer from napari again.") from None
    if not rows:
        raise InputError(f"prompt file {path} is empty: save a Points or Shapes layer with "
                         "at least one point or box.")
    header, rows = [c.strip() for c in rows[0][1]], rows[1:]
    if not rows:
        raise InputError(f"prompt file {path} has a header but no prompts: save a layer with "
                         "at least one point or box.")
    for line, r in rows:
        if len(r) != len(header):
            raise InputError(f"prompt file {path}, line {line}: {len(r)} values but the header "
                             f"has {len(header)} columns ({','.join(header)}).")
    return header, rows


def _axis_columns(path: Path, header: list[str], allowed: set[str]) -> list[int]:
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise InputError(f"prompt file {path} has repeated columns {repeated}.")
    axes = [c for c in header if c.startswith("axis-")]
    unknown = [c for c in header if c not in allowed and c not in axes]
    if unknown:
        raise InputError(f"prompt file {path} has unknown columns {unknown}: expected "
                         f"{sorted(allowed)} and axis-0, axis-1, ... as napari writes them.")
    expected = [f"axis-{i}" for i in range(len(axes))]
    if len(axes) < 2 or sorted(axes) != sorted(expected):
        raise InputError(f"prompt file {path} needs columns axis-0, axis-1, ... (found {axes}).")
    return [header.index(c) for c in expected]


def _coordinates(path: Path, header, line: int, row, cols) -> list[float]:
    out = []
    for i in cols:
        try:
            value = float(row[i])
        except ValueError:
            raise InputError(f"prompt file {path}, line {line}: {header[i]} is {row[i]!r}, "
                             "not a number.") from None
        if not math.isfinite(value):
            raise InputError(f"prompt file {path}, line {line}: {header[i]} is {row[i]!r}: "
                             "coordinates must be finite numbers.")
        out.append(value)
    return out


def _points_csv(path: Path, header, rows) -> PromptTable:
    cols = _axis_columns(path, header, POINT_FEATURES)
    data, labels, objects = [], [], []
    for line, r in rows:
        data.append(_coordinates(path, header, line, r, cols))
        try:
            if "label" in header:
                labels.append(int(parse_point_labels([r[header.index("label")]], 1)[0]))
            if "object" in header:
                objects.append(object_value(r[header.index("object")]))
        except InputError as exc:
            raise InputError(f"prompt file {path}, line {line}: {exc}") from None
    features = {name: values for name, values in (("label", labels), ("object", objects))
                if name in header}
    return points_table(np.array(data), features)


def _shapes_csv(path: Path, header, rows) -> PromptTable:
    cols = _axis_columns(path, header, SHAPE_COLUMNS)
    shapes: list[dict] = []  # consecutive rows of one shape index are its vertices
    for line, r in rows:
        shape_id = r[header.index("index")].strip()
        if not shapes or shapes[-1]["id"] != shape_id:
            shapes.append({"id": shape_id, "line": line, "vertices": [],
                           "kind": r[header.index("shape-type")].strip()})
        shapes[-1]["vertices"].append(_coordinates(path, header, line, r, cols))
    boxes = []
    for shape in shapes:
        try:
            boxes.append(shape_box(shape["vertices"], shape["kind"]))
        except InputError as exc:
            raise InputError(f"prompt file {path}, line {shape['line']}: shape "
                             f"{shape['id']} {exc}") from None
    return PromptTable(boxes=boxes, box_objects=[None] * len(boxes))


def read_json_table(path: str | Path) -> PromptTable:
    """Raw prompts of a JSON prompt file (see this module's docstring for the form)."""
    path = Path(path)
    text = _read_text(path)
    try:
        doc = json.loads(text)
    except ValueError as exc:  # also a number of more digits than Python reads
        raise InputError(f"prompt file {path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise InputError(f"prompt file {path} is nested too deeply to be a prompt "
                         "file.") from None
    entries = doc.get("prompts") if isinstance(doc, dict) else doc
    if not isinstance(entries, list):
        raise InputError(f"prompt file {path} must hold a list of prompts or "
                         "{\"prompts\": [...]}.")
    if not entries:
        raise InputError(f"prompt file {path} is empty: it lists no prompts.")
    table = PromptTable()
    rows, labels, objects, first = [], [], [], None
    for n, e in enumerate(entries):
        try:
            index, box, points, point_labels, key = _json_entry(e)
        except InputError as exc:
            raise InputError(f"prompt file {path}, entry {n}: {exc}") from None
        if first is not None and len(index) != len(first):
            raise InputError(f"prompt file {path}, entry {n}: 'slice' has {len(index)} values "
                             f"but entry 0's has {len(first)}: give one per slice axis.")
        first = index
        key = ("json", n) if key is None else key
        if box is not None:
            table.boxes.append((index, box))
            table.box_objects.append(key)
        for (x, y), v in zip(points, point_labels):
            rows.append([*index, y, x])
            labels.append(v)
            objects.append(key)
    if rows:
        table.points = np.asarray(rows, float)
        table.point_labels = np.asarray(labels, int)
        table.point_objects = objects
    return table


def _json_entry(e) -> tuple:
    """``(slice index, box or None, points (K, 2), labels (K,), object value)`` of one entry."""
    if not isinstance(e, dict):
        raise InputError(f"expected an object such as {JSON_EXAMPLE}, got {_show(e)}.")
    unknown = sorted(set(e) - JSON_KEYS)
    if unknown:
        raise InputError(f"unknown keys {unknown}: the keys are {sorted(JSON_KEYS)}.")
    if "slice" in e and not isinstance(e["slice"], list):
        raise InputError(f"'slice' must be a list of whole numbers, one per slice axis (e.g. "
                         f"[12], or [0, 12] for t and z), got {_show(e['slice'])}.")
    index = tuple(_whole(v, "'slice'") for v in e.get("slice", []))
    box = None
    if "box" in e:
        box = np.array(_numbers(e["box"], 4, "'box'", "[x0, y0, x1, y1]"))
        if box[0] == box[2] or box[1] == box[3]:
            raise InputError(f"'box' {_show(e['box'])} has no area (x0 == x1 or y0 == y1): "
                             "give [x0, y0, x1, y1] with x0 < x1 and y0 < y1.")
        if box[0] > box[2] or box[1] > box[3]:
            raise InputError(f"'box' {_show(e['box'])} is inverted: give [x0, y0, x1, y1] with "
                             "x0 < x1 and y0 < y1.")
    points = e.get("points", [])
    if not isinstance(points, list) or not all(isinstance(p, list) for p in points):
        raise InputError(f"'points' must be a list of [x, y] pairs (e.g. [[30, 8]]), got "
                         f"{_show(points)}.")
    points = [_numbers(p, 2, f"point {k}", "[x, y]") for k, p in enumerate(points)]
    if not points and box is None:
        raise InputError(f"expected 'points' (a list of [x, y] pairs) and/or 'box' "
                         f"[x0, y0, x1, y1], e.g. {JSON_EXAMPLE}.")
    point_labels = [1] * len(points)
    if "labels" in e:
        if not isinstance(e["labels"], list):
            raise InputError(f"'labels' must be a list of 1/0 (or positive/negative), one per "
                             f"point, got {_show(e['labels'])}.")
        point_labels = parse_point_labels(e["labels"], len(points)).tolist()
    key = object_value(e["object"]) if "object" in e else None
    return index, box, points, point_labels, key


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _whole(value, what: str) -> int:
    """A JSON whole number (``3`` or ``3.0``) as int."""
    if _is_number(value) and math.isfinite(value) and value == int(value):
        return int(value)
    raise InputError(f"{what} must hold whole numbers, got {_show(value)}.")


def _numbers(value, n: int, what: str, form: str) -> list[float]:
    """``n`` finite JSON numbers as floats."""
    if not isinstance(value, list) or len(value) != n or not all(map(_is_number, value)):
        raise InputError(f"{what} must be {form} ({n} numbers), got {_show(value)}.")
    try:
        out = [float(v) for v in value]
    except OverflowError:
        out = [math.inf]
    if not all(map(math.isfinite, out)):
        raise InputError(f"{what} must hold finite numbers, got {_show(value)}.")
    return out


def _show(value, limit: int = 60) -> str:
    """``value`` as the JSON text a user wrote (shortened)."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


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
