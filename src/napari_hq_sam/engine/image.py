"""Image layout of N-D arrays and conversion of one 2D slice to the model's uint8 RGB input.

Conventions
-----------
An N-D image is seen as *leading* axes (Z, T, ...: one 2D slice per index tuple)
followed by the two *spatial* axes (Y, X), optionally with an RGB(A) last axis or
a channel axis anywhere, from which one channel is chosen. The labels of an image
have the image's shape without its RGB and channel axes (``ImageLayout.labels_shape``).

Contrast limits map image values to 0..255 like a napari layer's: ``lo`` becomes 0,
``hi`` 255, values outside are clipped. When none are given,
:func:`default_contrast_limits` uses napari's own default: ``(0, 255)`` for uint8
data, else the minimum and maximum of the **whole** array (or, with
``method="percentile"``, its 0.5th and 99.5th percentiles), so every slice of a
stack is scaled the same way. A huge array is never read whole for them: like
napari, only three planes of a large stack are read, and a plane larger than napari's
own threshold is sampled on a grid of windows (at most :data:`SAMPLE_VALUES` values).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

AXIS_LETTERS = "TCZYXS"
PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class ImageLayout:
    """Which axes of an N-D image are slices, space, RGB or channel.

    Attributes
    ----------
    shape : tuple of int
        Full shape of the image.
    rgb : bool
        The last axis holds RGB (3) or RGBA (4) colour.
    channel_axis : int or None
        Axis (non-negative) holding channels, of which ``channel`` is segmented.
    channel : int or None
        Index of the chosen channel along ``channel_axis``.
    """

    shape: tuple[int, ...]
    rgb: bool = False
    channel_axis: int | None = None
    channel: int | None = None

    @property
    def labels_shape(self) -> tuple[int, ...]:
        """Shape of the labels: the image's shape without RGB and channel axes."""
        shape = list(self.shape[:-1] if self.rgb else self.shape)
        if self.channel_axis is not None:
            del shape[self.channel_axis]
        return tuple(shape)

    @property
    def leading_shape(self) -> tuple[int, ...]:
        """Shape of the leading (slice) axes, e.g. ``(Z,)`` or ``(T, Z)``; ``()`` for 2D."""
        return self.labels_shape[:-2]

    @property
    def spatial_shape(self) -> tuple[int, int]:
        """``(H, W)`` of one slice."""
        return self.labels_shape[-2:]

    def slice_indices(self) -> Iterator[tuple[int, ...]]:
        """All leading index tuples in C order (``[()]`` for a 2D image)."""
        return itertools.product(*(range(n) for n in self.leading_shape))

    def check_index(self, index: tuple[int, ...]) -> tuple[int, ...]:
        """Return ``index`` as a tuple of int, or raise a ValueError if no such slice exists."""
        index = tuple(int(i) for i in index)
        lead = self.leading_shape
        if len(index) != len(lead) or any(not 0 <= i < n for i, n in zip(index, lead)):
            raise InputError(
                f"slice {index} does not exist in an image whose slice axes have shape "
                f"{lead}: check that the prompts were made on this image.")
        return index

    def take(self, image, index: tuple[int, ...]) -> np.ndarray:
        """Read one slice as numpy: ``(H, W)`` grey, or ``(H, W, 3|4)`` when ``rgb``.

        Works on numpy, dask and zarr arrays (only that slice is read).
        """
        index = self.check_index(index)
        key: list = list(index)
        if self.channel_axis is not None:
            key.insert(self.channel_axis, self.channel)
        return np.asarray(image[tuple(key)])


def describe_layout(shape: tuple[int, ...], *, rgb: bool | None = None,
                    channel_axis: int | None = None, channel: int | None = None,
                    axes: str | None = None) -> ImageLayout:
    """Work out the layout of an image of ``shape``.

    Parameters
    ----------
    shape : tuple of int
        The image's shape.
    rgb : bool, optional
        Whether the last axis is RGB(A). None guesses like napari: a last axis of
        length 3 or 4 in an image of 3 or more dimensions.
    channel_axis, channel : int, optional
        Axis holding channels and the channel to segment (both or neither).
    axes : str, optional
        Axis hint, one letter per axis from ``TCZYXS`` (``S`` = RGB samples, last),
        e.g. ``"TCZYX"``: ``C`` sets ``channel_axis``; ``Y`` and ``X`` must be the
        spatial axes. Needed for 5-D and larger images.

    Returns
    -------
    ImageLayout
    """
    shape, ndim = tuple(int(n) for n in shape), len(shape)
    if axes is not None:
        rgb, channel_axis = _axes_hint(axes, ndim, rgb, channel_axis)
    if channel_axis is not None:
        if not -ndim <= channel_axis < ndim:
            raise InputError(f"channel axis {channel_axis} does not exist in a {ndim}-D image.")
        channel_axis %= ndim
        if channel is None:
            raise InputError("a channel axis was given without a channel: choose which channel "
                             f"(0..{shape[channel_axis] - 1}) to segment.")
        if not 0 <= channel < shape[channel_axis]:
            raise InputError(f"channel {channel} does not exist: the channel axis has "
                             f"{shape[channel_axis]} channels.")
    elif channel is not None:
        raise InputError("a channel was chosen without a channel axis: give the channel axis too.")
    if rgb is None:
        rgb = ndim >= 3 and shape[-1] in (3, 4) and channel_axis != ndim - 1
    if rgb and channel_axis == ndim - 1:
        raise InputError("the last axis cannot be both RGB and the channel axis.")
    layout = ImageLayout(shape, bool(rgb), channel_axis, channel)
    spatial_ndim = len(layout.labels_shape)
    if spatial_ndim < 2:
        raise InputError(f"an image of shape {shape} has no 2D slices to segment.")
    if spatial_ndim > 4 and axes is None:
        raise InputError(
            f"a {ndim}-D image of shape {shape} is ambiguous: give an axis hint such as "
            "axes='TCZYX' (CLI: --axes TCZYX) or a channel axis and channel.")
    return layout


def _axes_hint(axes: str, ndim: int, rgb, channel_axis) -> tuple[bool, int | None]:
    axes = axes.upper()
    if len(axes) != ndim or set(axes) - set(AXIS_LETTERS) or len(set(axes)) != ndim:
        raise InputError(f"axis hint {axes!r} must name each of the image's {ndim} axes once "
                         f"with letters from {AXIS_LETTERS}.")
    hinted_rgb = axes.endswith("S")
    spatial = axes.replace("S", "").replace("C", "")
    if "S" in axes[:-1] or not spatial.endswith("YX"):
        raise InputError(f"axis hint {axes!r}: Y and X must be the last axes (then S for RGB).")
    if rgb is not None and bool(rgb) != hinted_rgb:
        raise InputError(f"axis hint {axes!r} contradicts rgb={rgb}.")
    hinted_channel = axes.index("C") if "C" in axes else None
    if channel_axis is not None and hinted_channel != channel_axis % ndim:
        raise InputError(f"axis hint {axes!r} contradicts channel axis {channel_axis}.")
    return hinted_rgb, hinted_channel


def check_finite(values, where: str = "image") -> None:
    """Raise a ValueError if ``values`` holds NaN or infinite numbers."""
    values = np.asarray(values)
    if values.dtype.kind in "fc" and not np.isfinite(values).all():
        raise InputError(f"{where} contains NaN or infinite values: replace them (e.g. with "
                         "numpy.nan_to_num) or crop them away before segmenting.")


# napari reads the whole array only up to this many values; above, a sample (see below)
NAPARI_FULL_READ = 1e7
# Most values read from the three planes of a huge image for its contrast limits.
SAMPLE_VALUES = 3 * 2 ** 20
# Side of one sampling window: a few windows touch few zarr chunks or TIFF tiles.
SAMPLE_WINDOW = 256


def default_contrast_limits(image, method: str = "minmax", *,
                            rgb: bool = False) -> tuple[float, float]:
    """Contrast limits from the data, the same for every slice of ``image``.

    Parameters
    ----------
    image : array-like
        The whole image (numpy, memory-mapped, dask or zarr), without a channel axis
        (:func:`selected_channel`); an RGB last axis is allowed (``rgb=True``).
    method : str
        ``"minmax"``: what napari gives a new layer: ``(0, 255)`` for uint8, else the
        minimum and maximum of the array; for arrays of more than 1e7 values those of
        its first, middle and last planes. A plane of more than 1e7 values is
        sampled instead: windows of 256 x 256 pixels on an even grid that includes
        the plane's centre, at most :data:`SAMPLE_VALUES` values in all (napari reads
        a central 62 x 62 patch there, or an in-memory 2D numpy array whole, which
        is kept). Up to napari's thresholds the limits are the viewer's, so
        embeddings computed here are cache hits in napari. Equal minimum and maximum
        widen to include 0 and 1.
        ``"percentile"``: the 0.5th and 99.5th percentiles of the whole array (robust
        to a few hot pixels; reads the data into memory).
    rgb : bool
        The last axis is colour (napari's planes are then the last three axes).

    Returns
    -------
    (lo, hi) : tuple of float
    """
    dtype = np.dtype(image.dtype)
    if dtype in (np.uint8, np.bool_):
        return 0.0, 255.0 if dtype == np.uint8 else 1.0
    if method == "minmax":
        lo, hi = _napari_range(image, rgb)
    elif method == "percentile":
        lo, hi = np.percentile(np.asarray(image), PERCENTILES)
    else:
        raise InputError(f"unknown contrast method {method!r}: use 'minmax' or 'percentile'.")
    check_finite(np.array([lo, hi], dtype=float))
    return float(lo), float(hi)


def _napari_range(image, rgb: bool) -> tuple[float, float]:
    """Minimum and maximum as napari's ``calc_data_range``, huge planes sampled."""
    shape, size = tuple(image.shape), int(np.prod(image.shape))
    plane_axes = 2 + int(rgb)
    in_memory_2d = (isinstance(image, np.ndarray) and not isinstance(image, np.memmap)
                    and image.ndim < 3)
    if size > NAPARI_FULL_READ and not in_memory_2d and len(shape) >= plane_axes:
        lead = shape[:-plane_axes]
        planes = list(dict.fromkeys([tuple(0 for _ in lead), tuple(s // 2 for s in lead),
                                     tuple(s - 1 for s in lead)]))
        plane = shape[-plane_axes:]
        if np.prod(plane) > NAPARI_FULL_READ:
            budget = SAMPLE_VALUES // (len(planes) * (plane[2] if rgb else 1))
            windows = sample_windows(plane[:2], budget)
            planes = [index + window for index in planes for window in windows]
        lo = hi = None
        for key in planes:  # one window in memory at a time
            part = np.asarray(image[key])
            part_lo, part_hi = float(part.min()), float(part.max())
            lo = part_lo if lo is None else min(lo, part_lo)
            hi = part_hi if hi is None else max(hi, part_hi)
    else:
        lo, hi = _reduce(image, "min"), _reduce(image, "max")
    if lo == hi:
        lo, hi = min(lo, 0.0), max(hi, 1.0)
    return lo, hi


def sample_windows(plane: tuple[int, int], budget: int = SAMPLE_VALUES,
                   window: int = SAMPLE_WINDOW) -> list[tuple[slice, slice]]:
    """Windows of a ``(H, W)`` plane to sample, at most ``budget`` pixels in all.

    Up to ``window`` x ``window`` pixels each, on an even grid with an odd number of
    rows and columns (so one window is at the centre, where napari looks), its outer
    windows at the plane's edges.
    """
    h, w = (int(n) for n in plane)
    wy, wx = min(window, h), min(window, w)
    count = max(1, budget // (wy * wx))
    rows = max(1, min(round((count * h / w) ** 0.5), -(-h // wy)))
    cols = max(1, min(count // rows, -(-w // wx)))
    rows, cols = rows - (rows % 2 == 0), cols - (cols % 2 == 0)  # odd: a centre window
    return [(slice(y, y + wy), slice(x, x + wx))
            for y in _starts(h, wy, rows) for x in _starts(w, wx, cols)]


def _starts(length: int, window: int, count: int) -> list[int]:
    if count == 1:
        return [(length - window) // 2]
    return [round(i * (length - window) / (count - 1)) for i in range(count)]


def _reduce(image, how: str) -> float:
    if hasattr(image, "dask") or type(image).__module__.startswith("dask"):
        return float(getattr(image, how)().compute())
    if isinstance(image, np.ndarray) or image.ndim < 3:
        return float(getattr(np.asarray(image), how)())
    # zarr and other lazy arrays: reduce along the first axis, one block at a time.
    return float(getattr(np, how)([getattr(np.asarray(image[i]), how)()
                                   for i in range(image.shape[0])]))


def to_model_image(slice_, contrast_limits: tuple[float, float] | None = None,
                   *, rgb: bool | None = None) -> np.ndarray:
    """Convert one slice to what the model takes: uint8 ``(H, W, 3)``.

    Parameters
    ----------
    slice_ : array-like
        ``(H, W)`` grey of any numeric dtype (uint8/16, signed, float, bool), or
        ``(H, W, 3|4)`` RGB(A) (alpha is dropped).
    contrast_limits : (lo, hi), optional
        Values mapped to 0 and 255 (clipped outside). None: ``(0, 255)`` for uint8
        data, else this slice's own min/max (give the stack's limits from
        :func:`default_contrast_limits` to scale all slices alike).
    rgb : bool, optional
        Whether the last axis is colour; None: 3-D input is colour.

    Returns
    -------
    np.ndarray
        ``(H, W, 3)`` uint8.

    Raises
    ------
    ValueError
        On NaN/inf values, a wrong number of dimensions or inverted limits.
    """
    data = np.asarray(slice_)
    rgb = data.ndim == 3 if rgb is None else rgb
    if data.ndim != (3 if rgb else 2) or (rgb and data.shape[-1] not in (3, 4)):
        raise InputError(f"a slice must be (H, W) grey or (H, W, 3|4) colour, not {data.shape}.")
    check_finite(data, "image slice")
    if rgb:
        data = data[..., :3]
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    if contrast_limits is None:
        contrast_limits = (0.0, 255.0) if data.dtype == np.uint8 else (data.min(), data.max())
    lo, hi = (float(v) for v in contrast_limits)
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi < lo:
        raise InputError(f"contrast limits ({lo}, {hi}) must be finite with low <= high.")
    if data.dtype == np.uint8 and (lo, hi) == (0.0, 255.0):
        out = data
    else:
        scaled = (data.astype(np.float64) - lo) / max(hi - lo, np.finfo(float).tiny) * 255.0
        out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if not rgb:
        out = np.repeat(out[..., None], 3, axis=-1)
    return np.ascontiguousarray(out)


def selected_channel(image, layout: ImageLayout):
    """``image`` restricted to the chosen channel, for contrast limits.

    numpy and dask give a view; other arrays (zarr, a TIFF's pieces) a
    :class:`ChannelView` that reads only what is indexed, never the whole channel.
    """
    if layout.channel_axis is None:
        return image
    if isinstance(image, np.ndarray) or hasattr(image, "dask"):
        key = [slice(None)] * len(layout.shape)
        key[layout.channel_axis] = layout.channel
        return image[tuple(key)]
    return ChannelView(image, layout.channel_axis, layout.channel)


class ChannelView:
    """One channel of a lazy array (zarr): indexing reads only the indexed part.

    Parameters
    ----------
    base : array-like
        The array with the channel axis.
    axis, channel : int
        The channel axis (non-negative) and the channel kept.
    """

    def __init__(self, base, axis: int, channel: int):
        self.base, self.axis, self.channel = base, int(axis), int(channel)
        self.shape = tuple(n for i, n in enumerate(base.shape) if i != self.axis)
        self.dtype = np.dtype(base.dtype)
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape))

    def __getitem__(self, key) -> np.ndarray:
        key = list(key) if isinstance(key, tuple) else [key]
        if any(k is Ellipsis for k in key):
            at = next(i for i, k in enumerate(key) if k is Ellipsis)
            key[at:at + 1] = [slice(None)] * (self.ndim - len(key) + 1)
        key += [slice(None)] * (self.ndim - len(key))
        key.insert(self.axis, self.channel)
        return np.asarray(self.base[tuple(key)])

    def __array__(self, dtype=None, copy=None):
        data = self[...]
        return data if dtype is None else data.astype(dtype)


def model_slice(image, layout: ImageLayout, index: tuple[int, ...],
                contrast_limits: tuple[float, float]) -> np.ndarray:
    """Slice ``index`` of ``image`` as the model's uint8 ``(H, W, 3)`` input."""
    return to_model_image(layout.take(image, index), contrast_limits, rgb=layout.rgb)
