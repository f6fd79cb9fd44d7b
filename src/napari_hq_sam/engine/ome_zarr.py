"""OME-Zarr (NGFF) multiscale images: their levels and physical scale, read and written.

An OME-Zarr image is a zarr group whose attributes hold ``multiscales`` (NGFF 0.4 and
earlier, zarr v2) or ``ome.multiscales`` (NGFF 0.5, zarr v3): a list of datasets, one
array per resolution level, level 0 the full resolution, each with the scale (and
translation) mapping its pixels to physical coordinates, and the axes with their
units. Only the first multiscale of a group is used (the NGFF rule for readers).

hqsam writes a labels output with a known scale as an NGFF 0.4 group holding one
level, ``0``, so OME-Zarr readers (napari-ome-zarr) show it at the image's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .pixel_scale import PixelScale, unit_name

NGFF_VERSION = "0.4"
_LENGTHS = ("angstrom", "nanometer", "micrometer", "millimeter", "centimeter", "meter",
            "inch")


@dataclass(frozen=True)
class Multiscale:
    """The levels of an OME-Zarr image group.

    Attributes
    ----------
    path : Path
        The group's folder.
    paths : tuple of str
        The array of each level, relative to the group, level 0 first.
    scales : tuple of PixelScale or None
        Each level's scale; None where the metadata gives none.
    """

    path: Path
    paths: tuple[str, ...]
    scales: tuple[PixelScale | None, ...]

    def level_of(self, name: str) -> int | None:
        """The level whose array is ``name`` (relative to the group), or None."""
        name = name.strip("/")
        return self.paths.index(name) if name in self.paths else None


def multiscale_attrs(attrs) -> dict | None:
    """The first ``multiscales`` entry of a group's attributes (NGFF 0.4 or 0.5), or None."""
    attrs = dict(attrs)
    entries = attrs.get("multiscales")
    if entries is None and isinstance(attrs.get("ome"), dict):
        entries = attrs["ome"].get("multiscales")
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        return None
    return entries[0]


def read_multiscale(path: Path, group) -> Multiscale | None:
    """The levels of the zarr ``group`` at ``path``, or None when it is not OME-Zarr.

    Raises
    ------
    InputError
        The group says it is OME-Zarr, but its ``multiscales`` lists no datasets.
    """
    meta = multiscale_attrs(group.attrs)
    if meta is None:
        return None
    datasets = meta.get("datasets")
    if not isinstance(datasets, list) or not datasets or not all(
            isinstance(d, dict) and isinstance(d.get("path"), str) for d in datasets):
        raise InputError(f"OME-Zarr image {path}: its multiscales metadata lists no datasets "
                         "(each with a path): write the image again with an OME-Zarr writer.")
    axes = _axes(meta.get("axes"))
    outer = meta.get("coordinateTransformations")
    scales = tuple(_scale(axes, d.get("coordinateTransformations"), outer) for d in datasets)
    return Multiscale(Path(path), tuple(d["path"].strip("/") for d in datasets), scales)


def _axes(axes) -> list[tuple[str, str | None]] | None:
    """``(name, unit)`` per axis from NGFF ``axes`` (0.4 dicts or 0.3 names), or None."""
    if not isinstance(axes, list):
        return None
    out = []
    for axis in axes:
        if isinstance(axis, str):
            out.append((axis.lower(), None))
        elif isinstance(axis, dict):
            out.append((str(axis.get("name", "")).lower(), unit_name(axis.get("unit"))))
        else:
            return None
    return out


def _transform(transforms, kind: str) -> list[float] | None:
    for item in transforms if isinstance(transforms, list) else ():
        values = item.get(kind) if isinstance(item, dict) and item.get("type") == kind else None
        if isinstance(values, list):
            try:
                return [float(v) for v in values]
            except (TypeError, ValueError):
                return None
    return None


def _scale(axes, transforms, outer) -> PixelScale | None:
    """A level's scale: its own transformations, then the multiscale's (NGFF order)."""
    scale, shift = _transform(transforms, "scale"), _transform(transforms, "translation")
    if scale is None:
        return None
    n = len(scale)
    if axes is not None and len(axes) != n:
        return None
    shift = shift if shift is not None and len(shift) == n else None
    outer_scale, outer_shift = _transform(outer, "scale"), _transform(outer, "translation")
    if outer_scale is not None and len(outer_scale) == n:
        scale = [a * b for a, b in zip(scale, outer_scale)]
        shift = None if shift is None else [a * b for a, b in zip(shift, outer_scale)]
    if outer_shift is not None and len(outer_shift) == n:
        shift = [a + b for a, b in zip(shift or [0.0] * n, outer_shift)]
    names = tuple(a for a, _ in axes) if axes else ("",) * n
    units = tuple(u for _, u in axes) if axes else (None,) * n
    return PixelScale(names, tuple(scale), units, None if shift is None else tuple(shift))


def levels_text(multiscale: Multiscale, group) -> str:
    """``"0 (2048 x 2048), 1 (1024 x 1024)"``: the levels and the shape of each."""
    parts = []
    for level, name in enumerate(multiscale.paths):
        try:
            shape = " x ".join(str(n) for n in group[name].shape)
        except (KeyError, AttributeError):
            shape = "missing"
        parts.append(f"{level} ({shape})")
    return ", ".join(parts)


def open_level(path: Path, group, multiscale: Multiscale, level: int | None):
    """The array of ``level`` (default 0) of an OME-Zarr image.

    Raises
    ------
    InputError
        No such level (the message lists the levels there are), or the metadata
        names an array the group does not hold.
    """
    import zarr

    level = 0 if level is None else int(level)
    if not 0 <= level < len(multiscale.paths):
        raise InputError(f"OME-Zarr image {path} has no level {level}: its levels are "
                         f"{levels_text(multiscale, group)}; choose one of them (--level N).")
    name = multiscale.paths[level]
    try:
        node = group[name]
    except KeyError:
        node = None
    if not isinstance(node, zarr.Array):
        raise InputError(f"OME-Zarr image {path}: level {level} names the array {name!r}, "
                         "which the group does not hold; copy or export the image again.")
    return node


def ngff_attrs(scale: PixelScale, name: str = "labels") -> dict:
    """NGFF 0.4 ``multiscales`` attributes of a one-level image at ``0`` with ``scale``."""
    axes = []
    for axis, unit in zip(scale.axes, scale.units):
        entry: dict = {"name": axis or "dim"}
        kind = _axis_type(axis, unit)
        if kind is not None:
            entry["type"] = kind
        if unit is not None:
            entry["unit"] = unit
        axes.append(entry)
    if len({a["name"] for a in axes}) != len(axes):  # NGFF wants unique names
        for i, entry in enumerate(axes):
            entry["name"] = f"{entry['name']}{i}"
    transforms: list[dict] = [{"type": "scale", "scale": list(scale.scale)}]
    if scale.translation is not None and any(scale.translation):
        transforms.append({"type": "translation", "translation": list(scale.translation)})
    return {"multiscales": [{"version": NGFF_VERSION, "name": name, "axes": axes,
                             "datasets": [{"path": "0",
                                           "coordinateTransformations": transforms}]}]}


def _axis_type(axis: str, unit: str | None) -> str | None:
    """NGFF's type of an axis; None (left out) for one of unknown kind."""
    if axis == "t" or unit in ("second", "millisecond", "minute", "hour"):
        return "time"
    if axis == "c":
        return "channel"
    if axis in ("z", "y", "x") or unit in _LENGTHS:
        return "space"
    return None
