"""Tile geometry for slices larger than the model input: the grid, and which tile a prompt uses.

A slice whose height or width exceeds the tile size is covered by overlapping
square tiles read at native resolution. Along each axis the slice is cut into
*cores* of ``tile - 2 * halo`` pixels; each core grows by ``halo`` on both sides into
its tile (shifted inwards at the slice's edges so that every tile keeps the full
tile size, and so sees as much context as an inner one). Neighbouring tiles thus
overlap by at least ``2 * halo`` pixels.

Coordinates are pixel indices of the slice, rows (y) then columns (x); a
:class:`Window` is half-open, ``[top, top + height) x [left, left + width)``.

Which window a prompt is decoded in (:meth:`Tiling.route`) is decided per axis,
from the prompt's extent (the bounding box of its points and box):

1. the grid tile whose core holds the extent's centre, if that tile holds the whole
   extent. An object well inside a tile's core therefore gets exactly the mask of
   that tile's crop segmented alone, wherever the grid falls elsewhere;
2. else the grid tile that holds the extent with the widest margin;
3. else (the extent is longer than any tile holds) a window fitted to the extent
   plus ``halo`` on each side: one tile long and centred on the extent when that
   suffices (native resolution), longer otherwise (the model then sees it downscaled
   to its input size, as it sees a whole small slice).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import InputError

#: side of the model's input: a tile of this size is seen at native resolution
MODEL_INPUT = 1024


@dataclass(frozen=True)
class Window:
    """A rectangle of a slice, ``[top, top + height) x [left, left + width)`` in pixels."""

    top: int
    left: int
    height: int
    width: int

    @property
    def bottom(self) -> int:
        return self.top + self.height

    @property
    def right(self) -> int:
        return self.left + self.width

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices that cut this window out of a slice array."""
        return slice(self.top, self.bottom), slice(self.left, self.right)

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    def inner_edges(self, shape: tuple[int, int]) -> tuple[bool, bool, bool, bool]:
        """Which of (top, left, bottom, right) edges lie inside a slice of ``shape``."""
        return self.top > 0, self.left > 0, self.bottom < shape[0], self.right < shape[1]


@dataclass(frozen=True)
class Extent:
    """Bounding box of an object's prompts, inclusive pixel coordinates (may be fractional)."""

    y0: float
    x0: float
    y1: float
    x1: float

    def grown(self, margin: float) -> Extent:
        return Extent(self.y0 - margin, self.x0 - margin, self.y1 + margin, self.x1 + margin)

    def union(self, other: Extent) -> Extent:
        return Extent(min(self.y0, other.y0), min(self.x0, other.x0),
                      max(self.y1, other.y1), max(self.x1, other.x1))


@dataclass(frozen=True)
class Tiling:
    """How slices larger than the model input are tiled.

    Parameters
    ----------
    tile : int
        Side of a square tile in pixels, halo included. The default, the model's
        input size, keeps tiles at native resolution (no resizing at all).
    halo : int
        Overlap added on each side of a tile's core. An object whose prompts lie in
        a core is seen whole when it reaches at most ``halo`` past the core; the
        default 128 px covers nuclei and most cells at typical magnifications
        (micro-sam advises a halo above half the object radius).
    """

    tile: int = MODEL_INPUT
    halo: int = 128

    def __post_init__(self):
        for name in ("tile", "halo"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InputError(f"tile {name} must be a whole number of pixels, got {value!r}.")
        if self.tile < 64:
            raise InputError(f"tile size must be at least 64 pixels, got {self.tile}.")
        if self.halo < 0 or self.core < 16:
            raise InputError(f"the halo ({self.halo} px) must be at least 0 and leave a core of "
                             f"at least 16 px in a {self.tile} px tile (core = tile - 2 x halo); "
                             f"use a halo of at most {(self.tile - 16) // 2}.")

    @property
    def core(self) -> int:
        """Side of a tile's core (the tile without its halo)."""
        return self.tile - 2 * self.halo

    def applies(self, shape: tuple[int, int]) -> bool:
        """Whether a slice of ``shape`` (H, W) is tiled (longer than one tile on a side)."""
        return max(shape) > self.tile

    # -- the grid ---------------------------------------------------------------------------
    def axis_tiles(self, length: int) -> list[tuple[int, int, int, int]]:
        """``(core_start, core_stop, tile_start, tile_stop)`` along an axis of ``length``."""
        if length <= self.tile:
            return [(0, length, 0, length)]
        out = []
        for start in range(0, length, self.core):
            stop = min(start + self.core, length)
            lo = min(max(start - self.halo, 0), length - self.tile)
            out.append((start, stop, lo, lo + self.tile))
        return out

    def grid(self, shape: tuple[int, int]) -> list[Window]:
        """Every tile of a slice of ``shape``, row by row."""
        rows, cols = (self.axis_tiles(n) for n in shape)
        return [Window(r[2], c[2], r[3] - r[2], c[3] - c[2]) for r in rows for c in cols]

    def grid_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        """Number of tiles along (y, x)."""
        return tuple(len(self.axis_tiles(n)) for n in shape)

    # -- routing ----------------------------------------------------------------------------
    def route(self, shape: tuple[int, int], extent: Extent) -> Window:
        """The window an object with prompts spanning ``extent`` is decoded in (module doc)."""
        (top, bottom), (left, right) = (
            self._route_axis(n, lo, hi)
            for n, lo, hi in ((shape[0], extent.y0, extent.y1), (shape[1], extent.x0, extent.x1)))
        return Window(top, left, bottom - top, right - left)

    def _route_axis(self, length: int, lo: float, hi: float) -> tuple[int, int]:
        lo, hi = max(lo, 0.0), min(hi, length - 1.0)
        tiles = self.axis_tiles(length)
        holding = [t for t in tiles if t[2] <= math.floor(lo) and math.ceil(hi) < t[3]]
        centre = (lo + hi) / 2
        for t in holding:
            if t[0] <= centre < t[1]:
                return t[2], t[3]
        if holding:
            best = max(holding, key=lambda t: min(lo - t[2], t[3] - 1 - hi))
            return best[2], best[3]
        span = math.ceil(hi) - math.floor(lo) + 1 + 2 * self.halo
        if span <= self.tile:
            start = int(round(centre - self.tile / 2 + 0.5))
            start = min(max(start, 0), length - self.tile)
            return start, start + self.tile
        return max(math.floor(lo) - self.halo, 0), min(math.ceil(hi) + 1 + self.halo, length)


#: the tiling runs use unless told otherwise: native-resolution 1024 px tiles, 128 px halo
DEFAULT_TILING = Tiling()
