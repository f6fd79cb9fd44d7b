"""Plain words for the widgets' status lines: slices, object ids, counts (no Qt, no napari).

A status line is read by a person, not a programmer: ``slice 12`` rather than
``(12,)``, ``objects 1–3`` rather than ``[1, 2, 3]``, ``1 slice`` but ``2 slices``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

MAX_RUNS = 6  # id runs listed one by one; more are summed up as a count and a range


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``'1 object'``, ``'3 objects'``, ``'0 objects'`` (``plural`` defaults to noun + s)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def slice_name(index: Sequence[int]) -> str:
    """A slice in words: ``'slice 12'``, ``'t 0, slice 12'``; ``''`` for a 2D image.

    Parameters
    ----------
    index : tuple of int
        The slice's indices along the image's leading axes, outermost first
        (``()`` for YX, ``(z,)`` for ZYX, ``(t, z)`` for TZYX).
    """
    index = tuple(int(i) for i in index)
    names = ["slice", "t"][: len(index)][::-1]
    names = [f"axis {k}" for k in range(len(index) - len(names))] + names
    return ", ".join(f"{name} {i}" for name, i in zip(names, index))


def on_slice(index: Sequence[int], preposition: str = "on") -> str:
    """``' on slice 12'`` (with a leading space) to append to a sentence; ``''`` in 2D."""
    name = slice_name(index)
    return f" {preposition} {name}" if name else ""


def shape_words(shape: Sequence[int]) -> str:
    """An array shape as a person writes it: ``'7 × 512 × 512'``."""
    return " × ".join(str(int(n)) for n in shape)


def object_ids(ids: Iterable[int]) -> str:
    """Object ids in words: ``'object 4'``, ``'objects 1–3, 7'``, ``'no object'``.

    Consecutive ids are written as a range; past :data:`MAX_RUNS` ranges the ids
    are summed up as their number and their span.
    """
    ids = sorted({int(i) for i in ids})
    if not ids:
        return "no object"
    if len(ids) == 1:
        return f"object {ids[0]}"
    runs: list[list[int]] = []
    for i in ids:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    if len(runs) > MAX_RUNS:
        return f"{len(ids)} objects, ids {ids[0]}–{ids[-1]}"
    parts = [str(r[0]) if len(r) == 1 else f"{r[0]}–{r[-1]}" for r in runs]
    return "objects " + ", ".join(parts)


def scores(values: Sequence[float], shown: int = 5) -> str:
    """``'score 0.91'``, ``'scores 0.91, 0.85'`` (the first ``shown``, then ``…``)."""
    values = [float(v) for v in values]
    text = ", ".join(f"{v:.2f}" for v in values[:shown]) + (", …" if len(values) > shown else "")
    return f"{'score' if len(values) == 1 else 'scores'} {text}"
