"""Object prompts: one object on one 2D slice, checked against the image.

Coordinates
-----------
An :class:`ObjectPrompt` holds SAM's convention: points ``(N, 2)`` as ``(X, Y)``
pixels and boxes ``(4,)`` as XYXY, on the slice ``slice_index`` of the image's
leading axes. Prompts are built from napari layer data (rows ``(..., y, x)``) and
grouped into objects by :mod:`napari_hq_sam.engine.prompt_tables`.

An existing object's mask becomes a prompt with :func:`mask_prompt` (its box and
its mask as SAM's low-resolution logits, :func:`mask_to_logits`).

Object ids are whole numbers from 1 to :data:`MAX_OBJECT_ID` (:func:`checked_id`).

Meeting the image
-----------------
:func:`check_prompts` fits prompts to the image's slices: a box that overlaps the
slice but extends past its edge (a rectangle dragged from outside the image in
napari) is clipped to it; a point outside, or a box wholly outside, is refused.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..errors import HQSamWarning, InputError

# The largest object id: the widest labels dtype (labels.LABELS_DTYPE, uint32). Not
# imported from .labels, which pulls in scipy and scikit-image; a test ties the two.
MAX_OBJECT_ID = int(np.iinfo(np.uint32).max)


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
        ``(4,)`` float, ``(x0, y0, x1, y1)`` in pixels, ``x0 <= x1`` and ``y0 <= y1``.
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
        object.__setattr__(self, "object_id", checked_id(self.object_id))
        if self.points is not None:
            pts = np.asarray(self.points, dtype=float).reshape(-1, 2)
            lab = np.ones(len(pts), int) if self.labels is None else np.asarray(self.labels, int)
            if lab.shape != (len(pts),) or not np.isin(lab, (0, 1)).all():
                raise InputError(f"object {self.object_id}: labels must be (N,) of 1/0 for "
                                 f"{len(pts)} points.")
            if not np.isfinite(pts).all():
                raise InputError(f"object {self.object_id}: points must be finite numbers, got "
                                 f"{pts.tolist()}.")
            object.__setattr__(self, "points", pts)
            object.__setattr__(self, "labels", lab)
        if self.box is not None:
            box = np.asarray(self.box, dtype=float).reshape(4)
            if not np.isfinite(box).all() or box[0] > box[2] or box[1] > box[3]:
                raise InputError(f"object {self.object_id}: a box is (x0, y0, x1, y1) of finite "
                                 f"numbers with x0 <= x1 and y0 <= y1, got {box.tolist()}.")
            object.__setattr__(self, "box", box)
        if self.points is None and self.box is None and self.mask is None:
            raise InputError(f"object {self.object_id}: a prompt needs points, a box or a mask.")
        object.__setattr__(self, "slice_index", tuple(int(i) for i in self.slice_index))

    def clipped_to(self, height: int, width: int) -> ObjectPrompt:
        """This prompt fitted to a ``(height, width)`` slice: a box past its edge is clipped.

        The slice spans x from -0.5 to ``width - 0.5`` and y from -0.5 to
        ``height - 0.5`` (napari's pixel edges). A box overlapping it is clipped to
        it; a point outside it, or a box wholly outside, raises an InputError.

        Returns
        -------
        ObjectPrompt
            ``self`` when nothing lies past the edge, else a copy with the clipped box.
        """
        where = f"object {self.object_id} on slice {self.slice_index}"
        size = f"slices are {width} wide and {height} high"
        for x, y in [] if self.points is None else self.points:
            if not (-0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5):
                raise InputError(
                    f"a point of {where} lies outside the image (x={x:g}, y={y:g}; {size}): "
                    "check that the prompts were made on this image.")
        if self.box is None:
            return self
        edges = np.array([width, height, width, height], dtype=float) - 0.5
        box = np.clip(self.box, -0.5, edges)
        if np.array_equal(box, self.box):
            return self
        if box[0] >= box[2] or box[1] >= box[3]:
            x0, y0, x1, y1 = self.box
            raise InputError(
                f"the box of {where} lies wholly outside the image (x {x0:g} to {x1:g}, "
                f"y {y0:g} to {y1:g}; {size}): check that the prompts were made on this image.")
        return replace(self, box=box)


def checked_id(value, shown=None, zero: bool = True) -> int:
    """``value`` as an int object id, 0 (not yet set; when ``zero``) to MAX_OBJECT_ID."""
    shown = value if shown is None else shown
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InputError(f"object id {shown!r} must be a whole number from 1 to "
                         f"{MAX_OBJECT_ID}.")
    value = int(value)
    if value < (0 if zero else 1):
        raise InputError(f"object {shown!r} is not positive: object ids start at 1 "
                         "(0 is the background).")
    if value > MAX_OBJECT_ID:
        raise InputError(f"object {shown!r} is too large: object ids go from 1 to "
                         f"{MAX_OBJECT_ID} (the largest uint32 label).")
    return value


def with_ids(prompts: Iterable[ObjectPrompt], start: int) -> list[ObjectPrompt]:
    """Renumber object ids to ``start, start+1, ...`` keeping objects apart (for new labels)."""
    mapping: dict[int, int] = {}
    out = []
    for p in prompts:
        new = mapping.setdefault(p.object_id, start + len(mapping))
        out.append(replace(p, object_id=new))
    return out


def check_prompts(prompts: Sequence[ObjectPrompt], layout) -> list[ObjectPrompt]:
    """Check prompts against an image; return them fitted to its slices.

    ``layout`` is an :class:`~napari_hq_sam.engine.image.ImageLayout`. Boxes that
    extend past a slice's edge are clipped to it (:meth:`ObjectPrompt.clipped_to`;
    :func:`clipping_note` says how many).

    Raises
    ------
    InputError
        No prompts, a slice index of another length or of a slice that does not
        exist, a point outside the image or a box wholly outside it.
    """
    if not prompts:
        raise InputError("there are no prompts: add points or boxes (or check the prompt files).")
    height, width = layout.spatial_shape
    out = []
    for p in prompts:
        if len(p.slice_index) != len(layout.leading_shape):
            raise InputError(
                f"object {p.object_id} has slice index {p.slice_index} but the image has "
                f"{len(layout.leading_shape)} slice axes (labels shape {layout.labels_shape}): "
                "the prompts were made on an image with other dimensions.")
        layout.check_index(p.slice_index)
        out.append(p.clipped_to(height, width))
    return out


def clip_prompts(prompts: Sequence[ObjectPrompt], layout) -> list[ObjectPrompt]:
    """:func:`check_prompts`, warning once (:class:`~napari_hq_sam.errors.HQSamWarning`)
    when boxes were clipped; for the functions that run prompts over an image.
    """
    fitted = check_prompts(prompts, layout)
    note = clipping_note(prompts, fitted)
    if note:
        warnings.warn(note, HQSamWarning, stacklevel=3)
    return fitted


def clipping_note(before: Sequence[ObjectPrompt], after: Sequence[ObjectPrompt]) -> str | None:
    """``"2 boxes extended past the image edge and were clipped to it."``, or None.

    ``after`` is :func:`check_prompts` (or :meth:`ObjectPrompt.clipped_to`) of
    ``before``, in the same order.
    """
    n = sum(a is not b for a, b in zip(before, after))
    if not n:
        return None
    return (f"{n} box{'es' * (n != 1)} extended past the image edge and "
            f"{'were' if n != 1 else 'was'} clipped to it.")


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
