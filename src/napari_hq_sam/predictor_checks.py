"""Argument checks of the one-image predictor, at its boundary.

:class:`~napari_hq_sam.predictor.HQSamPredictor` keeps the official ``SamPredictor``
contract for valid input. Everything else becomes an
:class:`~napari_hq_sam.errors.InputError` (a ``ValueError``) whose message names the
argument, what it must be and what was given, before torch or torchvision see it.

What is refused, and why
------------------------
- An image that is not a uint8 ``(H, W, 3)`` numpy array. A float image is not
  rescaled silently (values 0-1 and 0-255 give different embeddings): convert it with
  ``napari_hq_sam.engine.image.to_model_image`` (contrast range to 0-255, grey to RGB)
  or ``image.astype(np.uint8)`` when its values already are integers 0-255.
- Point coordinates that are not ``(N, 2)`` finite (X, Y) numbers; point labels that
  are not one 0 (negative) or 1 (positive) per point (the batched ``predict_torch``
  also takes -1, SAM's padding point, so prompts of different lengths share a batch).
- A box that is not ``(4,)`` (or ``(1, 4)``) finite XYXY with ``x0 <= x1`` and
  ``y0 <= y1``; a ``mask_input`` that is not ``(1, 256, 256)`` finite logits.
- A call without any prompt (SAM would return an arbitrary mask).
- A ``set_torch_image`` tensor that is not ``(1, 3, h, w)`` uint8 or float 0-255 of
  ``original_image_size`` resized to long side 1024 (a normalised tensor, or a size
  that does not match, would give wrong masks without an error).

Prompts given as lists are read as the arrays they hold. Only the shape and dtype of
a numpy image are looked at (a uint8 image cannot hold NaN); the values checked are
those of the prompt arrays, a few numbers each, and the range of a float
``set_torch_image`` tensor. The batched torch checks fetch all their value tests from
the device in one transfer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .errors import InputError

IMAGE = "a (H, W, 3) uint8 RGB numpy array"
TO_UINT8 = ("convert it with napari_hq_sam.engine.image.to_model_image(image) (scales its "
            "contrast range to 0-255; grey becomes RGB), or with image.astype(np.uint8) if "
            "its values already are integers 0-255")
MASK_HINT = ("mask_input is SAM's low-resolution logits: pass the low_res_logits of a "
             "previous predict call, or napari_hq_sam.engine.prompts.mask_to_logits(mask) "
             "for a bool (H, W) mask")


def describe(value) -> str:
    """What was given, in a few words: type, dtype, shape (and device for tensors)."""
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    if isinstance(value, torch.Tensor):
        dtype = str(value.dtype).replace("torch.", "")
        return f"a {dtype} tensor of shape {tuple(value.shape)} on {value.device}"
    text = repr(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"{type(value).__name__} {text}"


# -- images ------------------------------------------------------------------------------
def check_image(image, name: str = "image", target_length: int = 1024) -> None:
    """Raise an InputError unless ``image`` is what ``set_image`` takes.

    Parameters
    ----------
    image : np.ndarray
        Must be ``(H, W, 3)`` uint8 RGB (or BGR with ``image_format="BGR"``), H, W >= 1,
        with a short side that survives resizing the long side to ``target_length``.
    name : str
        The argument's name in the message.
    target_length : int
        The model's input size (1024).
    """
    if isinstance(image, torch.Tensor):
        raise InputError(f"{name} must be {IMAGE}, got {describe(image)}: pass "
                         f"{name}.cpu().numpy() in (H, W, 3) order, or a resized (1, 3, h, w) "
                         "tensor to set_torch_image.")
    if not isinstance(image, np.ndarray):
        raise InputError(f"{name} must be {IMAGE}, got {describe(image)}: convert it with "
                         "numpy.asarray(..., dtype=np.uint8).")
    shape, hint = image.shape, None
    if image.ndim == 2:
        hint = ("a grey (H, W) image: make it RGB with napari_hq_sam.engine.image."
                "to_model_image(image) or np.repeat(image[..., None], 3, axis=-1)")
    elif image.ndim == 3 and shape[-1] == 4:
        hint = f"drop the alpha channel: {name}[..., :3]"
    elif image.ndim == 3 and shape[0] in (1, 3) and shape[-1] != 3:
        hint = f"the channels come first: use {name}.transpose(1, 2, 0)"
    elif image.ndim != 3 or shape[-1] != 3:
        hint = ("give one 2D RGB slice; stacks are segmented with "
                "napari_hq_sam.engine.segment_stack")
    if hint is not None:
        raise InputError(f"{name} must be {IMAGE}, got {describe(image)}: {hint}.")
    if shape[0] == 0 or shape[1] == 0:
        raise InputError(f"{name} must be {IMAGE}, got {describe(image)}: it is empty.")
    if image.dtype != np.uint8:
        kind = "float values are not rescaled silently; " if image.dtype.kind == "f" else ""
        raise InputError(f"{name} must be {IMAGE}, got {describe(image)}: {kind}{TO_UINT8}.")
    scale = target_length / max(shape[:2])
    if min(int(shape[0] * scale + 0.5), int(shape[1] * scale + 0.5)) < 1:
        raise InputError(f"{name} of {shape[0]} x {shape[1]} pixels is too elongated: its short "
                         f"side would be 0 pixels once its long side is resized to "
                         f"{target_length}; crop or pad it.")


def check_image_format(image_format) -> None:
    """``image_format`` must be ``"RGB"`` or ``"BGR"``."""
    if image_format not in ("RGB", "BGR"):
        raise InputError(f"image_format must be 'RGB' or 'BGR', got {describe(image_format)}.")


def check_torch_image(image, original_image_size, target_length: int) -> tuple[int, int]:
    """Check ``set_torch_image``'s arguments; return the original ``(H, W)``.

    ``image`` must be a ``(1, 3, h, w)`` uint8 or float tensor of values 0-255 whose
    ``(h, w)`` is ``original_image_size`` resized to long side ``target_length`` (what
    ``ResizeLongestSide.apply_image`` gives); a float tensor's range is checked (one
    reduction: a normalised or 0-1 tensor would embed as another image).
    """
    expected = f"a (1, 3, h, w) uint8 or float tensor of values 0-255, long side {target_length}"
    if not isinstance(image, torch.Tensor):
        raise InputError(f"transformed_image must be {expected}, got {describe(image)}: numpy "
                         "images go to set_image.")
    shape = tuple(image.shape)
    if image.ndim != 4 or shape[:2] != (1, 3) or max(shape[2:]) != target_length \
            or min(shape[2:]) < 1:
        raise InputError(f"transformed_image must be {expected}, got {describe(image)}: resize "
                         "it with predictor.transform.apply_image (then HWC to CHW, batch of 1).")
    if image.dtype != torch.uint8 and not image.dtype.is_floating_point:
        raise InputError(f"transformed_image must be {expected}, got {describe(image)}.")
    try:
        size = tuple(int(s) for s in original_image_size)[:2]
    except (TypeError, ValueError):
        size = ()
    if len(size) != 2 or min(size) < 1:
        raise InputError("original_image_size must be the (H, W) of the image before "
                         f"resizing, got {describe(original_image_size)}.")
    scale = target_length / max(size)
    resized = (int(size[0] * scale + 0.5), int(size[1] * scale + 0.5))
    if resized != shape[2:]:
        raise InputError(f"original_image_size {size} resizes to {resized}, not to the "
                         f"transformed_image's {shape[2:]}: give the (H, W) of the image that "
                         "was resized.")
    if image.dtype.is_floating_point:
        lo, hi = (float(v) for v in torch.stack(torch.aminmax(image)).tolist())
        # NaN fails both comparisons, so this also refuses non-finite values
        if not (lo >= 0.0 and hi <= 255.0):
            raise InputError(f"transformed_image values must be 0-255 (finite), got the range "
                             f"[{lo:g}, {hi:g}]: give the resized image before normalisation "
                             "(the model normalises it itself).")
    return size


# -- flags -------------------------------------------------------------------------------
def check_flag(value, name: str) -> None:
    """``value`` must be a bool (or 0/1): a string or None would be read as a truth value."""
    if isinstance(value, (bool, np.bool_)):
        return
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return
    raise InputError(f"{name} must be True or False, got {describe(value)}.")


# -- prompts of predict (numpy) ----------------------------------------------------------
def _as_array(value, name: str, expected: str, kinds: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (TypeError, ValueError, RuntimeError):
        array = None
    if array is None or array.dtype.kind not in kinds:
        hint = (": pass a numpy array (tensor.cpu().numpy()), or tensors to predict_torch"
                if isinstance(value, torch.Tensor) else "")
        raise InputError(f"{name} must be {expected}, got {describe(value)}{hint}.")
    return array


def _first_non_finite(array: np.ndarray) -> str | None:
    if array.dtype.kind != "f" or np.isfinite(array).all():
        return None
    index = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
    return f"{array[index]} at index {index}"


def check_prompts(point_coords, point_labels, box, mask_input,
                  mask_size: Sequence[int] = (256, 256)) -> tuple:
    """Check ``predict``'s prompts; return them as numpy arrays (None stays None).

    Parameters
    ----------
    point_coords : array-like or None
        ``(N, 2)`` finite (X, Y) pixels.
    point_labels : array-like or None
        ``(N,)`` of 0 (negative) or 1 (positive); required with ``point_coords``.
    box : array-like or None
        ``(4,)`` or ``(1, 4)`` finite XYXY with ``x0 <= x1``, ``y0 <= y1``.
    mask_input : array-like or None
        ``(1, *mask_size)`` finite low-resolution logits.
    mask_size : (int, int)
        The prompt encoder's mask input size.

    Returns
    -------
    (coords, labels, box, mask) : np.ndarray or None each
    """
    coords = labels = None
    if point_coords is not None:
        coords = _check_points(point_coords)
        labels = _check_labels(point_labels, len(coords))
    elif point_labels is not None:
        raise InputError("point_labels was given without point_coords: give the (N, 2) (X, Y) "
                         "points they label, or leave both out.")
    box = None if box is None else _check_box(box)
    mask = None if mask_input is None else _check_mask(mask_input, tuple(mask_size))
    if (coords is None or len(coords) == 0) and box is None and mask is None:
        raise InputError("predict needs a prompt: point_coords with point_labels, a box or a "
                         "mask_input; none was given.")
    return coords, labels, box, mask


def _check_points(point_coords) -> np.ndarray:
    expected = "(N, 2) (X, Y) pixel coordinates"
    coords = _as_array(point_coords, "point_coords", expected, "iuf")
    if coords.ndim != 2 or coords.shape[1] != 2:
        if coords.shape == (2,):
            hint = ": one point is [[x, y]], shape (1, 2)"
        elif coords.ndim == 2 and coords.shape[1] == 3:
            hint = (": points are (X, Y) of the 2D image that was set; drop the third column "
                    "(the slice is the image given to set_image)")
        elif coords.ndim == 3:
            hint = ": one object per predict call; batches of objects go to predict_torch"
        else:
            hint = ""
        raise InputError(f"point_coords must be {expected}, got {describe(coords)}{hint}.")
    bad = _first_non_finite(coords)
    if bad is not None:
        raise InputError(f"point_coords must be finite (X, Y) pixels, got {bad}.")
    return coords


def _check_labels(point_labels, n: int) -> np.ndarray:
    expected = f"({n},): one label, 1 (positive) or 0 (negative), per point"
    if point_labels is None:
        raise InputError(f"point_labels must be given with point_coords: {expected}.")
    labels = _as_array(point_labels, "point_labels", expected, "biuf")
    if labels.shape != (n,):
        raise InputError(f"point_labels must be {expected}, got {describe(labels)}.")
    valid = (labels == 0) | (labels == 1)
    if not valid.all():
        wrong = np.unique(labels[~valid])[:5].tolist()
        raise InputError(f"point_labels must be 1 (positive) or 0 (negative), got {wrong}.")
    return labels


def _check_box(box) -> np.ndarray:
    expected = "(4,) XYXY pixels (x0, y0, x1, y1)"
    array = _as_array(box, "box", expected, "iuf")
    if array.shape not in ((4,), (1, 4)):
        hint = (": one box per predict call; batches of boxes go to predict_torch"
                if array.ndim == 2 and array.shape[1] == 4 else "")
        raise InputError(f"box must be {expected}, got {describe(array)}{hint}.")
    _check_box_values(array.reshape(4).tolist(), "box")
    return array


def _check_box_values(values: list[float], name: str) -> None:
    x0, y0, x1, y1 = values
    if not all(math.isfinite(v) for v in values):
        raise InputError(f"{name} must be finite XYXY pixels, got {values}.")
    if x0 > x1 or y0 > y1:
        raise InputError(f"{name} must be XYXY with x0 <= x1 and y0 <= y1, got {values}: order "
                         "it as (min x, min y, max x, max y).")


def _check_mask(mask_input, mask_size: tuple[int, int]) -> np.ndarray:
    expected = f"(1, {mask_size[0]}, {mask_size[1]}) float logits"
    mask = _as_array(mask_input, "mask_input", expected, "biuf")
    if mask.dtype == np.bool_ or mask.shape != (1, *mask_size):
        raise InputError(f"mask_input must be {expected}, got {describe(mask)}: {MASK_HINT}.")
    bad = _first_non_finite(mask)
    if bad is not None:
        raise InputError(f"mask_input must be finite logits, got {bad}.")
    return mask


# -- prompts of predict_torch ------------------------------------------------------------
def check_torch_prompts(point_coords, point_labels, boxes, mask_input,
                        mask_size: Sequence[int] = (256, 256)) -> None:
    """Check ``predict_torch``'s batched prompts (shapes, dtypes, then values in one sync).

    Parameters
    ----------
    point_coords : torch.Tensor or None
        ``(B, N, 2)`` finite (X, Y) in the model's input frame.
    point_labels : torch.Tensor or None
        ``(B, N)`` of 1, 0 or -1 (padding point); required with ``point_coords``.
    boxes : torch.Tensor or None
        ``(B, 4)`` (or ``(B, 1, 4)``) finite XYXY, ``x0 <= x1``, ``y0 <= y1``.
    mask_input : torch.Tensor or None
        ``(B, 1, *mask_size)`` (or a batch of 1 for all) finite float logits.
    """
    mask_size = tuple(mask_size)
    for name, value in (("point_coords", point_coords), ("point_labels", point_labels),
                        ("boxes", boxes), ("mask_input", mask_input)):
        if value is not None and not isinstance(value, torch.Tensor):
            raise InputError(f"{name} of predict_torch must be a torch tensor or None, got "
                             f"{describe(value)}: numpy prompts go to predict.")
    batches = []
    if point_coords is not None:
        if point_coords.ndim != 3 or point_coords.shape[-1] != 2 or not _real(point_coords):
            raise InputError("point_coords must be a (B, N, 2) float tensor of (X, Y) in the "
                             f"1024 input frame, got {describe(point_coords)}.")
        if point_labels is None or tuple(point_labels.shape) != tuple(point_coords.shape[:2]) \
                or not _real(point_labels, bool_ok=True):
            got = "none" if point_labels is None else describe(point_labels)
            raise InputError(f"point_labels must be a {tuple(point_coords.shape[:2])} tensor of "
                             f"1, 0 or -1 (padding), one per point, got {got}.")
        batches.append(("point_coords", point_coords.shape[0]))
    elif point_labels is not None:
        raise InputError("point_labels was given without point_coords: give the (B, N, 2) "
                         "points they label, or leave both out.")
    if boxes is not None:
        if not (boxes.ndim == 2 and boxes.shape[1] == 4
                or boxes.ndim == 3 and tuple(boxes.shape[1:]) == (1, 4)) or not _real(boxes):
            raise InputError("boxes must be a (B, 4) float tensor of XYXY in the 1024 input "
                             f"frame, got {describe(boxes)}.")
        batches.append(("boxes", boxes.shape[0]))
    if mask_input is not None:
        if mask_input.ndim != 4 or tuple(mask_input.shape[1:]) != (1, *mask_size) \
                or not mask_input.dtype.is_floating_point:
            raise InputError(f"mask_input must be a (B, 1, {mask_size[0]}, {mask_size[1]}) float "
                             f"tensor of logits, got {describe(mask_input)}: {MASK_HINT}.")
    if not batches and mask_input is None:
        raise InputError("predict_torch needs a prompt: point_coords with point_labels, boxes "
                         "or mask_input; none was given.")
    _check_batches(batches, mask_input)
    _check_torch_values(point_coords, point_labels, boxes, mask_input)


def _real(tensor: torch.Tensor, bool_ok: bool = False) -> bool:
    if tensor.dtype == torch.bool:
        return bool_ok
    return not tensor.dtype.is_complex


def _check_batches(batches: list[tuple[str, int]], mask_input) -> None:
    sizes = {size for _, size in batches}
    if len(sizes) > 1:
        given = ", ".join(f"{name} {size}" for name, size in batches)
        raise InputError(f"point_coords and boxes must have the same batch size B, got {given}.")
    batch = sizes.pop() if sizes else (None if mask_input is None else mask_input.shape[0])
    if batch == 0:
        raise InputError("predict_torch got a batch of 0 prompts: call it only with B >= 1.")
    if mask_input is not None and mask_input.shape[0] not in (1, batch):
        raise InputError(f"mask_input must have the prompts' batch size {batch} (or 1), got "
                         f"{describe(mask_input)}.")


def _check_torch_values(point_coords, point_labels, boxes, mask_input) -> None:
    checks: dict[str, torch.Tensor] = {}
    if point_coords is not None:
        checks["point_coords"] = torch.isfinite(point_coords).all(dim=-1)
        checks["point_labels"] = (point_labels == 1) | (point_labels == 0) | (point_labels == -1)
    if boxes is not None:
        flat = boxes.reshape(-1, 4)
        checks["boxes"] = (torch.isfinite(flat).all(dim=-1) & (flat[:, 0] <= flat[:, 2])
                           & (flat[:, 1] <= flat[:, 3]))
    if mask_input is not None:
        checks["mask_input"] = torch.isfinite(mask_input)
    # one transfer from the device for all tests
    passed = torch.stack([ok.all() for ok in checks.values()]).tolist()
    for (name, ok), fine in zip(checks.items(), passed):
        if fine:
            continue
        index = tuple(int(i) for i in torch.nonzero(~ok)[0])
        if name == "point_labels":
            raise InputError(f"point_labels must be 1 (positive), 0 (negative) or -1 (padding "
                             f"point), got {point_labels[index].item()} at index {index}.")
        if name == "boxes":
            raise InputError(f"boxes must be finite XYXY with x0 <= x1 and y0 <= y1, got "
                             f"{flat[index].tolist()} at row {index[0]}.")
        tensor = point_coords if name == "point_coords" else mask_input
        raise InputError(f"{name} must be finite, got {tensor[index].tolist()} at index "
                         f"{index}.")
