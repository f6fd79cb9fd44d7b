"""Large images read lazily, OME-Zarr levels and pixel scale, labels written by region.

A 20000 x 20000 uint16 image (763 MiB if read whole) is read as a window and its
contrast limits computed with the memory of a few chunks: measured as the growth of
the peak resident set size (``ru_maxrss``) of a fresh interpreter, which counts every
allocation (numpy, zarr's decoders, memory-mapped pages), and with ``tracemalloc``
(numpy and Python allocations) in this process. The images cost almost nothing to
build: a zarr of which only a few chunks are written (the rest is its fill value), a
tiled TIFF whose tiles are one compressed tile repeated.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
import zlib

import numpy as np
import pytest
import tifffile
import zarr

from napari_hq_sam.engine import image_files, outputs, resources
from napari_hq_sam.engine.image import (
    default_contrast_limits,
    describe_layout,
    sample_windows,
    selected_channel,
)
from napari_hq_sam.engine.pixel_scale import PixelScale
from napari_hq_sam.errors import InputError

SIDE, CHUNK, FILL = 20000, 1024, 100
HUGE_MIB = SIDE * SIDE * 2 / 2 ** 20  # 763 MiB


def _peak_mib(fn):
    """``fn()`` and the peak of memory Python and numpy allocated meanwhile, in MiB."""
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1] / 2 ** 20
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def huge_zarr(tmp_path_factory, nuclei2d):
    """(20000, 20000) uint16 zarr, 1024-pixel chunks, FILL but for the nuclei at its centre."""
    path = tmp_path_factory.mktemp("huge") / "huge.zarr"
    image = zarr.create_array(str(path), shape=(SIDE, SIDE), dtype=np.uint16,
                              chunks=(CHUNK, CHUNK), fill_value=FILL)
    at = SIDE // 2 - 256  # nuclei2d is 512 x 512
    image[at:at + 512, at:at + 512] = nuclei2d
    return path


def test_huge_zarr_window_and_limits_in_bounded_memory(huge_zarr, nuclei2d):
    """A fresh interpreter reads a 1024 window and the limits; its peak RSS grows little."""
    script = f"""
import json, resource
import numpy as np
from napari_hq_sam.engine.image_files import read_image
from napari_hq_sam.engine.image import default_contrast_limits
image = read_image({str(huge_zarr)!r})
np.asarray(image[:8, :8])  # zarr's codecs loaded before the baseline
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
window = np.asarray(image[9500:10524, 9500:10524])
limits = default_contrast_limits(image)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"grew_mib": (after - before) / 1024, "limits": limits,
                  "kind": type(image).__module__, "sum": int(window.sum(dtype=np.int64))}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["kind"].startswith("zarr")
    expected = np.full((1024, 1024), FILL, np.int64)
    expected[244:756, 244:756] = nuclei2d  # the nuclei lie at 9744..10256
    assert found["sum"] == int(expected.sum())
    # the centre window of the sample lies inside the nuclei, no other window touches them
    centre = [w for w in sample_windows((SIDE, SIDE)) if w[0].start < 10256 and
              w[0].stop > 9744 and w[1].start < 10256 and w[1].stop > 9744]
    assert len(centre) == 1
    (ys, xs), = centre
    seen = nuclei2d[ys.start - 9744:ys.stop - 9744, xs.start - 9744:xs.stop - 9744]
    assert seen.shape == (256, 256)
    assert found["limits"] == [min(FILL, float(seen.min())), max(FILL, float(seen.max()))]
    assert found["grew_mib"] < 64, found  # the image read whole: 763 MiB


def test_sample_is_bounded_and_spread():
    for plane in [(SIDE, SIDE), (60000, 60000), (300, 200000), (5000, 40)]:
        windows = sample_windows(plane)
        pixels = sum((y.stop - y.start) * (x.stop - x.start) for y, x in windows)
        assert pixels <= 3 * 2 ** 20
        rows = sorted({y.start for y, _ in windows})
        height = windows[0][0].stop - windows[0][0].start
        if len(rows) > 1:  # the outer windows at the edges
            assert rows[0] == 0 and rows[-1] + height == plane[0]
        assert len(rows) % 2 == 1  # an odd grid: a window at the centre
        assert rows[len(rows) // 2] == (plane[0] - height) // 2
        assert all(y.stop <= plane[0] and x.stop <= plane[1] for y, x in windows)


def test_limits_follow_napari_below_its_thresholds(huge_zarr, nuclei2d):
    """Arrays up to napari's 1e7 values are read whole, as napari does."""
    image = zarr.open_array(str(huge_zarr), mode="r")
    crop = image[9000:11000, 9000:11000]  # 4e6 values, numpy
    assert default_contrast_limits(crop) == (float(crop.min()), float(crop.max()))
    assert float(crop.min()) == min(FILL, float(nuclei2d.min()))


def _tiled_tiff(path, side=SIDE, tile=CHUNK):
    """A ``side`` x ``side`` uint16 zlib TIFF in tiles, each the same pattern (cheap)."""
    pattern = np.full((tile, tile), 300, np.uint16)
    pattern[::7, ::5] = 900
    encoded = zlib.compress(pattern.tobytes(), 1)
    count = (-(-side // tile)) ** 2
    tifffile.imwrite(path, iter([encoded] * count), shape=(side, side), dtype=np.uint16,
                     tile=(tile, tile), compression="zlib")
    return path, pattern


def test_tiled_tiff_is_read_piece_by_piece(tmp_path):
    path, pattern = _tiled_tiff(tmp_path / "scan.tif")
    (image, window, limits), peak = _peak_mib(lambda: (
        image := image_files.read_image(path), np.asarray(image[5000:6024, 7000:8024]),
        default_contrast_limits(image)))
    assert isinstance(image, zarr.Array) and image.shape == (SIDE, SIDE)
    assert image.chunks == (CHUNK, CHUNK)
    tiled = np.tile(pattern, (2, 2))  # the window spans four tiles
    assert np.array_equal(window, tiled[5000 - 4096:6024 - 4096, 7000 - 6144:8024 - 6144])
    assert limits == (300.0, 900.0)
    assert peak < 48, peak  # a few tiles; the whole image is 763 MiB


def test_small_compressed_tiff_is_read_whole(tmp_path, nuclei3d):
    path = tmp_path / "scan.tif"
    tifffile.imwrite(path, nuclei3d, compression="zlib")
    image = image_files.read_image(path)
    assert type(image) is np.ndarray and np.array_equal(image, nuclei3d)


def test_uncompressed_tiff_is_memory_mapped(tmp_path, nuclei3d):
    path = tmp_path / "scan.tif"
    tifffile.imwrite(path, nuclei3d)
    image = image_files.read_image(path)
    assert isinstance(image, np.memmap) and np.array_equal(image, nuclei3d)


def test_channel_of_a_zarr_is_read_only_where_indexed(tmp_path, nuclei3d):
    stack = np.stack([nuclei3d, nuclei3d // 3 + 7])  # (C, Z, Y, X)
    path = tmp_path / "two.zarr"
    zarr.create_array(str(path), data=stack, chunks=(1, 1, 61, 57))
    image = image_files.read_image(path)
    layout = describe_layout(image.shape, channel_axis=0, channel=1)
    channel = selected_channel(image, layout)
    assert channel.shape == nuclei3d.shape and not isinstance(channel, np.ndarray)
    assert np.array_equal(channel[4], stack[1, 4])
    assert np.array_equal(channel[..., 3:9], stack[1, ..., 3:9])
    assert default_contrast_limits(channel) == (float(stack[1].min()), float(stack[1].max()))


# -- OME-Zarr ----------------------------------------------------------------------------

def write_pyramid(path, levels, scales, version="0.4", translation=None, **axes_units):
    """An OME-Zarr image group of ``levels`` (arrays) with NGFF metadata written by hand."""
    ndim = levels[0].ndim
    names = axes_units.get("names", "zyx"[-ndim:] if ndim <= 3 else "czyx"[-ndim:])
    unit = axes_units.get("unit", "micrometer")
    axes = [{"name": n, "type": "channel" if n == "c" else "space",
             **({} if n == "c" else {"unit": unit})} for n in names]
    datasets = []
    for i, scale in enumerate(scales):
        transforms = [{"type": "scale", "scale": list(scale)}]
        if translation is not None:
            transforms.append({"type": "translation", "translation": list(translation[i])})
        datasets.append({"path": str(i), "coordinateTransformations": transforms})
    meta = {"version": version, "axes": axes, "datasets": datasets}
    fmt = 2 if version == "0.4" else 3
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt)
    for i, level in enumerate(levels):
        group.create_array(str(i), data=level, chunks=level.shape)
    group.attrs.update({"multiscales": [meta]} if fmt == 2 else
                       {"ome": {"version": version, "multiscales": [meta]}})
    return path


def nuclei_pyramid(path, nuclei2d, version="0.4"):
    """nuclei2d at full, half and quarter size, 0.65 um pixels at level 0."""
    levels = [nuclei2d, nuclei2d[::2, ::2], nuclei2d[::4, ::4]]
    return write_pyramid(path, levels, [(0.65 * 2 ** i,) * 2 for i in range(3)],
                         version=version,
                         translation=[(0.0, 0.0), (0.325, 0.325), (0.975, 0.975)])


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_levels_and_scale(tmp_path, nuclei2d, version):
    path = nuclei_pyramid(tmp_path / "nuclei.ome.zarr", nuclei2d, version)
    assert np.array_equal(image_files.read_image(path)[...], nuclei2d)
    assert np.array_equal(image_files.read_image(path, level=2)[...], nuclei2d[::4, ::4])
    assert image_files.image_scale(path) == PixelScale(
        ("y", "x"), (0.65, 0.65), ("micrometer", "micrometer"), (0.0, 0.0))
    assert image_files.image_scale(path, 1) == PixelScale(
        ("y", "x"), (1.3, 1.3), ("micrometer", "micrometer"), (0.325, 0.325))
    # a level's array named directly has that level's scale
    assert image_files.image_scale(path / "2").scale == (2.6, 2.6)
    with pytest.raises(InputError, match=r"has no level 3: its levels are 0 \(512 x 512\), "
                       r"1 \(256 x 256\), 2 \(128 x 128\)"):
        image_files.read_image(path, level=3)


def test_outer_transformations_apply(tmp_path, nuclei2d):
    path = write_pyramid(tmp_path / "n.zarr", [nuclei2d], [(1.0, 2.0)])
    group = zarr.open_group(str(path), mode="r+")
    meta = group.attrs["multiscales"]
    meta[0]["coordinateTransformations"] = [{"type": "scale", "scale": [0.5, 0.5]}]
    group.attrs["multiscales"] = meta
    assert image_files.image_scale(path).scale == (0.5, 1.0)


def test_level_only_for_ome_zarr(tmp_path, nuclei2d):
    tif = tmp_path / "n.tif"
    tifffile.imwrite(tif, nuclei2d)
    plain = tmp_path / "plain.zarr"
    zarr.open_group(str(plain), mode="w").create_array("raw", data=nuclei2d)
    with pytest.raises(InputError, match="has one resolution"):
        image_files.read_image(tif, level=0)
    with pytest.raises(InputError, match="not an OME-Zarr image"):
        image_files.read_image(plain, level=1)
    with pytest.raises(InputError, match="one zarr array, without levels"):
        image_files.read_image(plain / "raw", level=0)
    assert image_files.image_scale(plain) is None and image_files.image_scale(tif) is None


def test_pyramid_limits_from_the_smallest_level(tmp_path, nuclei2d):
    """As napari's multiscale layer: the smallest level's range, whatever level is read."""
    napari_utils = pytest.importorskip("napari.layers.utils.layer_utils")
    small = nuclei2d[::4, ::4].copy()
    small[0, 0] = 5000  # only the smallest level holds this value
    path = write_pyramid(tmp_path / "n.zarr", [nuclei2d, nuclei2d[::2, ::2], small],
                         [(1, 1), (2, 2), (4, 4)])
    layout = describe_layout(nuclei2d.shape)
    limits = image_files.pyramid_contrast_limits(path, layout)
    assert limits == napari_utils.calc_data_range(small) == (float(small.min()), 5000.0)
    assert image_files.pyramid_contrast_limits(path / "1", layout) == limits
    single = write_pyramid(tmp_path / "one.zarr", [nuclei2d], [(1, 1)])
    assert image_files.pyramid_contrast_limits(single, layout) is None


def test_pyramid_limits_of_a_channel(tmp_path, nuclei2d):
    stack = np.stack([nuclei2d, nuclei2d // 2 + 11])
    path = write_pyramid(tmp_path / "c.zarr", [stack, stack[:, ::2, ::2]],
                         [(1, 0.5, 0.5), (1, 1, 1)], names="cyx")
    layout = describe_layout(stack.shape, channel_axis=0, channel=1)
    low = stack[1, ::2, ::2]
    assert image_files.pyramid_contrast_limits(path, layout) == (float(low.min()),
                                                                 float(low.max()))
    labels = image_files.labels_scale(path, layout)
    assert labels == PixelScale(("y", "x"), (0.5, 0.5), ("micrometer",) * 2)


# -- labels outputs ----------------------------------------------------------------------

def test_scale_round_trips_through_outputs(tmp_path, nuclei2d):
    scale = PixelScale(("y", "x"), (1.3, 1.3), ("micrometer", "micrometer"), (0.325, 0.325))
    labels = (nuclei2d > np.median(nuclei2d)).astype(np.uint16)
    out = outputs.write_labels(tmp_path / "l.zarr", labels, scale=scale)
    assert image_files.image_scale(out) == scale
    assert np.array_equal(image_files.read_image(out)[...], labels)
    meta = zarr.open_group(str(out), mode="r").attrs["multiscales"][0]
    assert meta["version"] == "0.4" and meta["datasets"][0]["path"] == "0"
    assert meta["axes"] == [{"name": "y", "type": "space", "unit": "micrometer"},
                            {"name": "x", "type": "space", "unit": "micrometer"}]
    tif = outputs.write_labels(tmp_path / "l.tif", labels, scale=scale)
    assert image_files.image_scale(tif).scale == (1.3, 1.3)
    with tifffile.TiffFile(tif) as t:
        x_res, y_res = (t.pages[0].tags[n].value for n in ("XResolution", "YResolution"))
        assert t.pages[0].tags["ResolutionUnit"].value == 3  # centimetre
    assert x_res[0] / x_res[1] == pytest.approx(1e4 / 1.3)
    assert np.array_equal(tifffile.imread(tif), labels)
    plain = outputs.write_labels(tmp_path / "plain.zarr", labels)
    assert isinstance(zarr.open(str(plain), mode="r"), zarr.Array)
    assert image_files.image_scale(plain) is None


def test_imagej_tiff_scale(tmp_path, nuclei3d):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, nuclei3d, imagej=True, resolution=(1 / 0.2, 1 / 0.25),
                     metadata={"axes": "ZYX", "unit": "um", "spacing": 1.5})
    assert image_files.image_scale(path) == PixelScale(
        ("z", "y", "x"), (1.5, 0.25, 0.2), ("micrometer",) * 3)


class _Recording:
    """An array that records the shape of every read (to show writes go by region)."""

    def __init__(self, data):
        self.data, self.shape, self.dtype, self.reads = data, data.shape, data.dtype, []

    def __getitem__(self, key):
        block = self.data[key]
        self.reads.append(block.shape)
        return block


def test_zarr_labels_are_chunked_and_written_by_region(tmp_path):
    assert outputs.labels_chunks((1, SIDE, SIDE)) == (1, CHUNK, CHUNK)
    assert outputs.labels_chunks((5, 300, 2000)) == (1, 300, CHUNK)
    created = outputs.create_zarr_labels(tmp_path / "big.zarr", (2, SIDE, SIDE), np.uint32)
    assert created.chunks == (1, CHUNK, CHUNK)
    labels = np.zeros((2, 2500, 3000), np.uint16)
    labels[1, 1030:1100, 2000:2900] = 4  # spans two chunks of slice 1
    source = _Recording(labels)
    out = outputs.write_labels(tmp_path / "l.zarr", source)
    assert max(h * w for _, h, w in source.reads) <= CHUNK * CHUNK
    stored = zarr.open_array(str(out), mode="r")
    assert stored.chunks == (1, CHUNK, CHUNK) and np.array_equal(stored[...], labels)
    assert stored.nchunks_initialized == 2  # empty regions are not stored


# -- memory checks for huge slices -------------------------------------------------------

def test_tiff_labels_of_a_huge_slice_refused_zarr_runs(huge_zarr, monkeypatch):
    """Tiled, a 20000 x 20000 slice converts one 1024 tile at a time; its TIFF labels
    (held in memory) do not fit in 512 MiB, a .zarr output (written by region) does."""
    from napari_hq_sam.commands._common import check_memory

    monkeypatch.setattr(resources, "available_memory", lambda: 512 * 2 ** 20)
    image = image_files.read_image(huge_zarr)
    layout = describe_layout(image.shape)
    tile = resources.slice_conversion_bytes((SIDE, SIDE), image.dtype, tile=CHUNK)
    assert tile == resources.slice_conversion_bytes((CHUNK, CHUNK), image.dtype)
    assert resources.slice_conversion_bytes((SIDE, SIDE), image.dtype) > 300 * tile
    out = huge_zarr.parent / "out.tif"
    with pytest.raises(InputError, match=r"the labels of .*out.tif \(\(20000, 20000\) uint16\) "
                       r"take 763 MiB .*512 MiB available: write them to a .zarr"):
        check_memory(image, layout, (0, 1000), tile=CHUNK, labels=(
            out, layout.labels_shape, np.uint16, "write them to a .zarr output instead."))
    check_memory(image, layout, (0, 1000), tile=CHUNK)  # .zarr output: nothing held
    with pytest.raises(InputError, match="a slice of 20000 x 20000 pixels needs about"):
        check_memory(image, layout, (0, 1000))  # untiled: the whole slice converted
