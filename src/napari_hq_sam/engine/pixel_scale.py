"""The physical size of a pixel along each axis, as image files record it.

An image's scale comes from OME-Zarr metadata (NGFF ``axes`` and
``coordinateTransformations``, :mod:`.ome_zarr`), from a TIFF's ImageJ metadata
(``unit``, ``spacing``) or its resolution tags (pixels per inch or centimetre), or
from the ``physical_*`` keys hqsam writes into a labels TIFF's description. A labels
output keeps its image's scale, so a viewer shows the labels at the image's size.

Conventions
-----------
One entry per axis of the array, in array order (e.g. ``z, y, x``). Units are NGFF
names (``"micrometer"``, ``"second"``) or None when unknown; a TIFF's units become
micrometres.
"""

from __future__ import annotations

from dataclasses import dataclass

# NGFF length units in micrometres (the unit hqsam writes into TIFF resolution tags)
_MICROMETERS = {"angstrom": 1e-4, "nanometer": 1e-3, "micrometer": 1.0, "millimeter": 1e3,
                "centimeter": 1e4, "meter": 1e6, "inch": 25400.0}
# ImageJ and TIFF spellings of length units
_UNIT_NAMES = {"micron": "micrometer", "um": "micrometer", "\u00b5m": "micrometer",
               "\u03bcm": "micrometer", "nm": "nanometer", "mm": "millimeter",
               "cm": "centimeter", "m": "meter", "inch": "inch"}
_TIFF_UNITS = {2: "inch", 3: "centimeter"}  # ResolutionUnit tag values with a length


@dataclass(frozen=True)
class PixelScale:
    """Physical pixel size per axis of an image.

    Attributes
    ----------
    axes : tuple of str
        Axis names in array order, lower case (``"z"``, ``"y"``, ``"x"``, ``"c"``,
        ``"t"``); ``""`` where unknown.
    scale : tuple of float
        Size of one pixel along each axis, in ``units``.
    units : tuple of str or None
        NGFF unit names (``"micrometer"``), None where unknown.
    translation : tuple of float or None
        Position of the first pixel's centre, in ``units``; None: the origin.
    """

    axes: tuple[str, ...]
    scale: tuple[float, ...]
    units: tuple[str | None, ...]
    translation: tuple[float, ...] | None = None

    def __post_init__(self):
        n = len(self.scale)
        if len(self.axes) != n or len(self.units) != n or (
                self.translation is not None and len(self.translation) != n):
            raise ValueError("axes, scale, units and translation need one entry per axis.")

    def drop_axes(self, axes) -> PixelScale:
        """The scale without the array axes ``axes`` (non-negative indices)."""
        keep = [i for i in range(len(self.scale)) if i not in set(axes)]

        def pick(values):
            return None if values is None else tuple(values[i] for i in keep)

        return PixelScale(pick(self.axes), pick(self.scale), pick(self.units),
                          pick(self.translation))

    def of_labels(self, layout) -> PixelScale:
        """The scale of the labels of an image of ``layout`` (no RGB or channel axis)."""
        if len(self.scale) != len(layout.shape):
            raise ValueError(f"a scale of {len(self.scale)} axes does not fit an image of "
                             f"{len(layout.shape)} axes.")
        drop = [] if layout.channel_axis is None else [layout.channel_axis]
        if layout.rgb:
            drop.append(len(layout.shape) - 1)
        return self.drop_axes(drop)

    def micrometers(self, axis: int) -> float | None:
        """Pixel size along ``axis`` in micrometres, or None when its unit is no length."""
        factor = _MICROMETERS.get(self.units[axis] or "")
        return None if factor is None else self.scale[axis] * factor


def unit_name(text) -> str | None:
    """An NGFF unit name for a unit as files spell it (``"micron"``, ``"µm"``), or None."""
    if not isinstance(text, str) or not text.strip():
        return None
    text = text.strip()
    lowered = text.lower()
    if lowered in _MICROMETERS:
        return lowered
    return _UNIT_NAMES.get(text, _UNIT_NAMES.get(lowered, lowered))


def tiff_scale(tif, series) -> PixelScale | None:
    """The scale a TIFF records for ``series`` (a :class:`tifffile.TiffPageSeries`).

    In order: the ``physical_*`` keys hqsam writes, ImageJ's ``unit`` and ``spacing``
    with the resolution tags, the resolution tags with a unit of inch or centimetre
    (as micrometres). None when the file says nothing (tifffile's default tags: a
    resolution of 1 without unit).
    """
    ndim = len(series.shape)
    shaped = (tif.shaped_metadata or [None])[0] if tif.is_shaped else None
    if isinstance(shaped, dict) and "physical_scale" in shaped:
        return _from_description(shaped, ndim)
    page = series.pages[0] if series.pages else None
    if page is None:
        return None
    x, y = (_resolution(page, name) for name in ("XResolution", "YResolution"))
    axes = tuple(a.lower() for a in series.axes) if len(series.axes) == ndim else ("",) * ndim
    if tif.is_imagej and tif.imagej_metadata:
        meta = tif.imagej_metadata
        unit = unit_name(meta.get("unit"))
        if unit is None or x is None or y is None:
            return None
        scale, units = [1.0] * ndim, [None] * ndim
        scale[-2:], units[-2:] = [1.0 / y, 1.0 / x], [unit, unit]
        if "z" in axes and meta.get("spacing"):
            scale[axes.index("z")] = float(meta["spacing"])
            units[axes.index("z")] = unit
        return PixelScale(axes, tuple(scale), tuple(units))
    unit = _TIFF_UNITS.get(int(getattr(page.tags.get("ResolutionUnit"), "value", 1)))
    if unit is None or x is None or y is None:
        return None
    factor = _MICROMETERS[unit]
    yx = 1 + int(series.axes.endswith("S"))  # a colour axis follows Y and X
    scale, units = [1.0] * ndim, [None] * ndim
    scale[ndim - yx - 1], scale[ndim - yx] = factor / y, factor / x
    units[ndim - yx - 1] = units[ndim - yx] = "micrometer"
    return PixelScale(axes, tuple(scale), tuple(units))


def _resolution(page, name: str) -> float | None:
    tag = page.tags.get(name)
    if tag is None:
        return None
    value = tag.value
    number = value[0] / value[1] if isinstance(value, tuple) and value[1] else value
    try:
        number = float(number)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _from_description(meta: dict, ndim: int) -> PixelScale | None:
    try:
        scale = tuple(float(v) for v in meta["physical_scale"])
        units = tuple(unit_name(u) for u in meta.get("physical_units", [None] * ndim))
        axes = tuple(str(a) for a in meta.get("physical_axes", [""] * ndim))
        return PixelScale(axes, scale, units)
    except (TypeError, ValueError):
        return None  # someone else's keys: no scale rather than a wrong one


def tiff_write_arguments(scale: PixelScale | None) -> dict:
    """``tifffile.imwrite`` keywords recording ``scale`` in a labels TIFF.

    Y and X as resolution tags (pixels per centimetre) when their units are lengths,
    and every axis in the description's JSON (``physical_scale``, ``physical_units``,
    ``physical_axes``), which :func:`tiff_scale` reads back.
    """
    if scale is None:
        return {}
    out: dict = {"metadata": {"physical_scale": list(scale.scale),
                              "physical_units": list(scale.units),
                              "physical_axes": list(scale.axes)}}
    y, x = (scale.micrometers(axis) for axis in (-2, -1))
    if y and x:
        out["resolution"] = (1e4 / x, 1e4 / y)  # tifffile takes X first
        out["resolutionunit"] = "CENTIMETER"
    return out
