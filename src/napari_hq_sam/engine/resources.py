"""Free memory and disk space, and what a run will need of them, known before it starts.

A run that cannot fit should be refused before any model work, not end in a
``MemoryError`` after hours. These are estimates: exact where the size is an array's
(labels, an image read whole), an upper bound for the conversion of one slice (or,
in a tiled run, one tile) to the model's input (:func:`slice_conversion_bytes`).
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np
import psutil

# Bytes per pixel value while a slice becomes the model's uint8 input
# (:func:`~.image.to_model_image`): the float64 cast and numpy's temporaries of
# ``(x - lo) / (hi - lo) * 255``, rint and clip peak at three float64 arrays.
CONVERSION_BYTES_PER_VALUE = 24


def available_memory() -> int | None:
    """Bytes of memory this process can still take, or None when it cannot be told.

    The system's available memory (psutil, else ``MemAvailable`` of ``/proc/meminfo``),
    lowered to what a cgroup memory limit (a container, a batch job) still allows.
    """
    found = _system_available()
    limit = _cgroup_headroom()
    if found is None:
        return limit
    return found if limit is None else min(found, limit)


def _system_available() -> int | None:
    try:
        return int(psutil.virtual_memory().available)
    except Exception:  # psutil on a platform it cannot read: fall back below
        return _meminfo_available()


def _meminfo_available(path: str = "/proc/meminfo") -> int | None:
    """``MemAvailable`` (Linux) in bytes, or None."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the value is in kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_headroom() -> int | None:
    """Limit minus usage of this process's memory cgroup (v2, else v1), or None.

    Page cache counts in the usage but the kernel gives it back under pressure,
    so it is not taken away from the headroom.
    """
    for folder, limit_name, usage_name, cache_key in (
            ("/sys/fs/cgroup", "memory.max", "memory.current", "file"),
            ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes",
             "total_cache")):
        root = Path(folder)
        try:
            limit = (root / limit_name).read_text().strip()
            usage = int((root / usage_name).read_text().strip())
        except (OSError, ValueError):
            continue
        if not limit.isdigit() or int(limit) >= 1 << 60:  # "max", or v1's "no limit"
            return None
        return max(int(limit) - usage + _cgroup_stat(root / "memory.stat", cache_key), 0)
    return None


def _cgroup_stat(path: Path, key: str) -> int:
    """One counter of a cgroup's ``memory.stat`` (0 when absent)."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def free_disk(folder: str | Path) -> int:
    """Free bytes on the disk holding ``folder`` (:func:`shutil.disk_usage`)."""
    return int(shutil.disk_usage(os.fspath(folder)).free)


def array_bytes(shape, dtype) -> int:
    """Bytes of an array of ``shape`` and ``dtype``."""
    return math.prod(int(n) for n in shape) * np.dtype(dtype).itemsize


def slice_conversion_bytes(spatial_shape: tuple[int, int], dtype, rgb: bool = False,
                           contrast_limits: tuple[float, float] | None = None, *,
                           tile: int | None = None) -> int:
    """Peak memory of turning one slice into the model's ``(H, W, 3)`` uint8 input.

    Parameters
    ----------
    spatial_shape : (H, W)
        The slice's size in pixels.
    dtype : numpy dtype
        The image's dtype.
    rgb : bool
        The slice has a colour axis (three values per pixel are converted).
    contrast_limits : (lo, hi), optional
        uint8 data with limits 0, 255 (or None, napari's default for uint8) is
        copied, not converted through float64.
    tile : int, optional
        The slice is converted one window of at most ``tile`` x ``tile`` pixels at a
        time (a tiled run): only one window's conversion counts. None: the whole
        slice at once.
    """
    h, w = (int(n) for n in spatial_shape)
    if tile is not None:
        h, w = min(h, int(tile)), min(w, int(tile))
    pixels = h * w
    values = pixels * (3 if rgb else 1)
    dtype = np.dtype(dtype)
    output = 2 * pixels * 3  # the uint8 RGB result and its contiguous copy
    plain_uint8 = dtype == np.uint8 and (contrast_limits is None
                                         or tuple(map(float, contrast_limits)) == (0.0, 255.0))
    if plain_uint8:
        return values + output
    return values * (dtype.itemsize + CONVERSION_BYTES_PER_VALUE) + output


def size_text(n: int | float) -> str:
    """``n`` bytes in words: ``'6.7 GiB'``, ``'12 MiB'``."""
    for unit, scale in (("TiB", 2 ** 40), ("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= scale:
            value = n / scale
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{int(n)} bytes"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine runs."""
    return pid == os.getpid() or psutil.pid_exists(pid)
