"""Fault matrix, the image of ``hqsam segment``, ``hqsam auto`` and ``hqsam embed``.

A damaged image (a truncated TIFF, compressed as hqsam writes them or not, a TIFF
that would read short, a truncated .npy), a folder where an image is wanted, a .zarr
that is not one, a zarr group without one clear array, complex or non-numeric values:
one line naming the file, what is wrong and what to do, exit 2, nothing written.
A zarr group's suggested array path works. Boolean, integer and float images run.

Huge images fail fast or work: a memory-mapped TIFF is never read whole (contrast
limits come from a sample), a compressed TIFF larger than memory is read piece by
piece (one stored in pieces too large for that is refused), a damaged piece of a
large TIFF is found before any work, labels that cannot fit in memory are refused
before any model work (a .zarr output is filled slice by slice and runs; a huge slice
whose TIFF labels cannot fit suggests .zarr), and so is a slice whose conversion to the
model's input cannot fit (whole-slice runs; a tiled run converts one tile at a time).
OME-Zarr levels that do not exist, ``--level`` for an image without levels, and
OME-Zarr metadata that names no or missing arrays are one line each. The memory
available is fixed per test, so the outcome does not depend on the machine; the files
are sparse, so they take almost no disk, and no test allocates more than a few hundred
MiB.
"""

from __future__ import annotations

import json
import tracemalloc
import zlib

import numpy as np
import pytest
import tifffile
import zarr
from fault_utils import assert_user_error, leftovers, run_cli, snapshot

from napari_hq_sam.engine import image_files, resources
from napari_hq_sam.engine.image import default_contrast_limits
from napari_hq_sam.errors import InputError
from napari_hq_sam.model.checkpoint import CheckpointError, read_state_dict

COMMANDS = ("segment", "auto", "embed")
GIB = 2 ** 30
DAMAGED = "truncated or damaged"


@pytest.fixture()
def folder(tmp_path):
    """A folder with a prompt file for slice 1 of a (3, 61, 57) image."""
    (tmp_path / "prompts.json").write_text(json.dumps(
        {"prompts": [{"slice": [1], "box": [26, 14, 48, 34], "object": 1}]}))
    return tmp_path


def _argv(command: str, image, folder, checkpoint, *extra) -> list:
    """``hqsam COMMAND IMAGE`` writing into ``folder`` (small settings: fast on CPUs)."""
    model = ["--model", "vit_tiny", "--checkpoint", checkpoint, "--device", "cpu", "--quiet"]
    if command == "segment":
        return ["segment", image, "--prompts", folder / "prompts.json", *model,
                "--out", folder / "out.tif", *extra]
    if command == "auto":
        return ["auto", image, *model, "--points-per-side", "4", "--out", folder / "out.tif",
                *extra]
    return ["embed", image, *model, "--cache", folder / "emb.zarr", *extra]


def _paths(folder) -> list[tuple[str, int, int]]:
    """Every path under ``folder`` with its size and modification time."""
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in folder.rglob("*"))


def _refused(argv, folder, *fragments, hashed: bool = True) -> str:
    """The run is a one-line user error naming ``fragments``; ``folder`` is unchanged.

    ``hashed=False`` for nominally huge (sparse) files: size and time, not contents.
    """
    before, paths = (snapshot(folder) if hashed else None), _paths(folder)
    line = assert_user_error(run_cli(argv), *fragments)
    assert _paths(folder) == paths
    assert not hashed or snapshot(folder) == before
    return line


# -- damaged files -----------------------------------------------------------------------

def _truncated_zlib_tiff(folder, stack):
    """As hqsam writes its labels (zlib), cut in the middle of the data."""
    path = folder / "scan.tif"
    tifffile.imwrite(path, stack, compression="zlib")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _truncated_imagej_tiff(folder, stack):
    """An ImageJ stack cut after its first page: tifffile would return one slice."""
    path = folder / "scan.tif"
    tifffile.imwrite(path, stack, imagej=True)
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    return path


def _truncated_plain_tiff(folder, stack):
    path = folder / "scan.tif"
    tifffile.imwrite(path, stack)
    path.write_bytes(path.read_bytes()[:-100])
    return path


def _header_only_tiff(folder, stack):
    """A TIFF header and nothing a reader can index: tifffile finds no series at all."""
    path = folder / "header.tif"
    path.write_bytes(b"II*\x00 garbage")
    return path


def _truncated_npy(folder, stack):
    path = folder / "scan.npy"
    np.save(path, stack)
    path.write_bytes(path.read_bytes()[:-100])
    return path


def _big_tiled_tiff(path):
    """A (20000, 20000) uint16 zlib TIFF of 1024-pixel tiles (763 MiB nominal, read by
    tile), each the same pattern, so it takes a few MiB to build."""
    tile = np.full((1024, 1024), 300, np.uint16)
    tile[::7, ::5] = 900
    encoded = zlib.compress(tile.tobytes(), 1)
    tifffile.imwrite(path, iter([encoded] * 20 ** 2), shape=(20000, 20000), dtype=np.uint16,
                     tile=(1024, 1024), compression="zlib")
    return path


def _truncated_tiled_tiff(folder, stack):
    """Large, so read tile by tile: its last tiles are cut off."""
    path = _big_tiled_tiff(folder / "scan.tif")
    path.write_bytes(path.read_bytes()[:-5000])
    return path


def _garbled_tiled_tiff(folder, stack):
    """Large, so read tile by tile: its first tile's compressed bytes are overwritten."""
    path = _big_tiled_tiff(folder / "scan.tif")
    with tifffile.TiffFile(path) as tif:
        start = int(tif.pages[0].dataoffsets[0])
    data = bytearray(path.read_bytes())
    data[start + 10:start + 60] = b"x" * 50
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("damage", [_truncated_zlib_tiff, _truncated_imagej_tiff,
                                    _truncated_plain_tiff, _truncated_npy,
                                    _truncated_tiled_tiff, _garbled_tiled_tiff,
                                    _header_only_tiff])
def test_damaged_image_is_one_line(command, damage, folder, nuclei3d, tiny_checkpoint):
    image = damage(folder, nuclei3d[9:12])
    line = _refused(_argv(command, image, folder, tiny_checkpoint), folder,
                    f"cannot read image {image}", DAMAGED, "export it again")
    assert line.startswith(f"hqsam {command}: error: ")


def test_truncated_imagej_tiff_is_not_read_short(tmp_path, nuclei3d):
    """tifffile alone returns the first page of this file, without an error."""
    image = _truncated_imagej_tiff(tmp_path, nuclei3d[9:12])
    assert tifffile.imread(image).shape == nuclei3d.shape[1:]
    with pytest.raises(InputError, match=DAMAGED):
        image_files.read_image(image)


# -- folders where an image is wanted ----------------------------------------------------

def _folder_named_tif(folder, stack):
    path = folder / "scan.tif"
    path.mkdir()
    return path, ["is a folder, not an image", ".zarr folder"]


def _empty_zarr_folder(folder, stack):
    path = folder / "scan.zarr"
    path.mkdir()
    return path, ["not a zarr array or group", "zarr.json"]


def _zarr_named_file(folder, stack):
    path = folder / "scan.zarr"
    np.save(folder / "x.npy", stack)
    (folder / "x.npy").rename(path)
    return path, ["is a file", "a .zarr image is a folder"]


def _zarr_group_of_groups(folder, stack):
    path = folder / "scan.zarr"
    zarr.open_group(str(path), mode="w").create_group("raw").create_array(
        "0", data=stack)
    return path, ["holds no array", f"e.g. {path / 'raw'}"]


@pytest.mark.parametrize("command", COMMANDS)
# (a plain folder is a folder of images: tests/faults/test_folders.py)
@pytest.mark.parametrize("make", [_folder_named_tif, _empty_zarr_folder,
                                  _zarr_named_file, _zarr_group_of_groups])
def test_not_an_image_is_one_line(command, make, folder, nuclei3d, tiny_checkpoint):
    image, fragments = make(folder, nuclei3d[9:12])
    _refused(_argv(command, image, folder, tiny_checkpoint), folder, str(image), *fragments)


def test_zarr_group_suggestion_works(folder, nuclei3d, tiny_checkpoint):
    group = zarr.open_group(str(folder / "scan.zarr"), mode="w")
    group.create_array("raw", data=nuclei3d[9:12])
    group.create_array("smooth", data=nuclei3d[9:12] // 2)
    line = _refused(_argv("segment", folder / "scan.zarr", folder, tiny_checkpoint), folder,
                    "holds several arrays (raw, smooth)")
    suggested = line.rsplit("e.g. ", 1)[1].rstrip(".")
    assert suggested == str(folder / "scan.zarr" / "raw")
    outcome = run_cli(_argv("segment", suggested, folder, tiny_checkpoint))
    assert outcome.code == 0, outcome.stderr
    labels = tifffile.imread(folder / "out.tif")
    assert labels.shape == (3, 61, 57) and labels[1].any() and not labels[[0, 2]].any()
    # the array's group is the input: nothing may be written into it
    argv = _argv("segment", suggested, folder, tiny_checkpoint)
    argv[argv.index("--out") + 1] = folder / "scan.zarr" / "labels.zarr"
    _refused(argv, folder, f"lies inside the zarr group {folder / 'scan.zarr'} of the image",
             "never writes into its input")


# -- values ------------------------------------------------------------------------------

@pytest.mark.parametrize("command", COMMANDS)
def test_complex_image_is_refused(command, folder, nuclei3d, tiny_checkpoint):
    image = folder / "fft.npy"
    np.save(image, np.fft.fft2(nuclei3d[9:12]).astype(np.complex64))
    _refused(_argv(command, image, folder, tiny_checkpoint), folder,
             f"image {image} holds complex numbers (complex64)", "magnitude", "real part")


@pytest.mark.parametrize("values", [np.array([["ab", "c"]]), np.array([[1, "a"]], object)],
                         ids=["text", "objects"])
def test_non_numeric_image_is_refused(values, folder, tiny_checkpoint):
    image = folder / "table.npy"
    np.save(image, values, allow_pickle=True)
    _refused(_argv("embed", image, folder, tiny_checkpoint), folder, str(image), "not numbers")


@pytest.mark.parametrize("dtype", [np.bool_, np.uint8, np.uint16, np.float32])
def test_real_dtypes_run(dtype, folder, nuclei3d, tiny_checkpoint):
    crop = nuclei3d[9:12]
    data = (crop > np.median(crop)) if dtype == np.bool_ else (
        crop // 4 if dtype == np.uint8 else crop).astype(dtype)
    image = folder / "scan.tif"
    tifffile.imwrite(image, data)
    assert np.array_equal(image_files.read_image(image), data)
    outcome = run_cli(_argv("embed", image, folder, tiny_checkpoint, "--slices", "1"))
    assert outcome.code == 0 and outcome.stderr == "", outcome.stderr
    assert "embedded 1 slice" in outcome.stdout and "1 computed" in outcome.stdout


# -- the checkpoint file -----------------------------------------------------------------

@pytest.mark.parametrize("command", COMMANDS)
def test_checkpoint_folder_names_the_file(command, folder, nuclei3d, tiny_checkpoint):
    image = folder / "scan.tif"
    tifffile.imwrite(image, nuclei3d[9:12])
    _refused(_argv(command, image, folder, tiny_checkpoint.parent), folder,
             f"--checkpoint {tiny_checkpoint.parent} is a folder, not a file",
             f"e.g. {tiny_checkpoint}")
    empty = folder / "weights"
    empty.mkdir()
    _refused(_argv(command, image, folder, empty), folder, "is a folder",
             "sam_hq_vit_tiny.pth", "hqsam download vit_tiny")


def test_checkpoint_folder_in_python(tmp_path, tiny_checkpoint):
    with pytest.raises(CheckpointError, match="is a folder, not a file.*sam_hq_vit_tiny.pth"):
        read_state_dict(tmp_path, "vit_tiny")


# -- huge images -------------------------------------------------------------------------

@pytest.fixture()
def memory(monkeypatch):
    """Fix the memory available to the checks: ``memory(gib)``."""
    def set_available(gib: float) -> None:
        monkeypatch.setattr(resources, "available_memory", lambda: int(gib * GIB))
    return set_available


def _sparse_tiff(path, shape, patch, at):
    """A memory-mappable uint16 TIFF of ``shape``, zero but for ``patch`` at ``at``."""
    image = tifffile.memmap(path, shape=shape, dtype=np.uint16)
    (z, y, x), (h, w) = at, patch.shape
    image[z, y:y + h, x:x + w] = patch
    image.flush()
    del image
    assert path.stat().st_blocks * 512 < 64 * 2 ** 20  # sparse: almost no disk
    return path


@pytest.fixture()
def huge(tmp_path, nuclei2d):
    """A (1, 60000, 60000) uint16 TIFF (6.7 GiB nominal), nuclei at its centre."""
    return _sparse_tiff(tmp_path / "huge.tif", (1, 60000, 60000), nuclei2d[:62, :62],
                        (0, 29969, 29969))


def _peak_mib(fn):
    """``fn()`` and the peak of memory Python and numpy allocated meanwhile, in MiB."""
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1] / 2 ** 20
    finally:
        tracemalloc.stop()


def test_huge_tiff_is_memory_mapped_and_sampled(huge, nuclei2d):
    (image, limits), peak = _peak_mib(lambda: (
        image_files.read_image(huge), default_contrast_limits(image_files.read_image(huge))))
    assert isinstance(image, np.memmap) and image.shape == (1, 60000, 60000)
    # the sample's centre window holds the nuclei and zeros around them
    patch = nuclei2d[:62, :62]
    assert limits == (0.0, float(patch.max()))
    assert peak < 16


@pytest.mark.parametrize("command,out", [("segment", "out.zarr"), ("auto", "out.tif"),
                                         ("embed", None)])
def test_huge_slice_is_refused_before_work(command, out, huge, memory, tiny_checkpoint):
    """Runs that convert whole slices (all three tile such a slice unless --no-tiling)."""
    folder = huge.parent
    (folder / "prompts.json").write_text(json.dumps(
        {"prompts": [{"slice": [0], "box": [29970, 29970, 30020, 30020], "object": 1}]}))
    memory(16)
    argv = _argv(command, huge, folder, tiny_checkpoint, "--no-tiling")
    if out is not None:
        argv[argv.index("--out") + 1] = folder / out
    paths = _paths(folder)  # not hashed: 6.7 GiB of (sparse) zeros
    outcome, peak = _peak_mib(lambda: run_cli(argv))
    assert_user_error(outcome, "a slice of 60000 x 60000 pixels needs about 107 GiB",
                      "16.0 GiB available", "slices up to about 536,870,912 pixels fit",
                      "crop or downsample the image first")
    assert _paths(folder) == paths
    assert peak < 64


def test_tiff_labels_of_a_huge_slice_suggest_zarr(tmp_path, memory, nuclei2d, tiny_checkpoint):
    """A 20000 x 20000 slice is segmented tile by tile (one tile converted at a time),
    but labels for a TIFF are held whole: beyond memory, refused before any work."""
    image = tmp_path / "scan.zarr"
    zarr.create_array(str(image), shape=(20000, 20000), dtype=np.uint16,
                      chunks=(1024, 1024), fill_value=0)[9744:10256, 9744:10256] = nuclei2d
    (tmp_path / "prompts.json").write_text(json.dumps(
        {"prompts": [{"slice": [], "box": [9800, 9800, 9900, 9900], "object": 1}]}))
    memory(0.5)
    argv = _argv("segment", image, tmp_path, tiny_checkpoint)
    _, peak = _peak_mib(lambda: _refused(
        argv, tmp_path, f"the labels of {tmp_path / 'out.tif'} ((20000, 20000) uint16) take "
        "763 MiB", "512 MiB available", "write them to a .zarr output instead (--out "
        "NAME.zarr)"))
    assert peak < 64


@pytest.fixture()
def tall(tmp_path, nuclei2d):
    """A (100, 2000, 2000) uint16 TIFF (763 MiB nominal), nuclei in slice 3."""
    path = _sparse_tiff(tmp_path / "tall.tif", (100, 2000, 2000), nuclei2d, (3, 0, 0))
    (tmp_path / "prompts.json").write_text(json.dumps(
        {"prompts": [{"slice": [3], "box": [60, 60, 140, 140], "object": 1}]}))
    return path


def test_labels_beyond_memory_suggest_zarr_output(tall, memory, tiny_checkpoint):
    memory(0.5)
    folder = tall.parent
    _, peak = _peak_mib(lambda: _refused(
        _argv("segment", tall, folder, tiny_checkpoint), folder,
        f"the labels of {folder / 'out.tif'} ((100, 2000, 2000) uint16) take 763 MiB",
        "512 MiB available", "write them to a .zarr output instead (--out NAME.zarr)",
        hashed=False))
    assert peak < 64


def test_auto_labels_beyond_memory(tall, memory, tiny_checkpoint):
    memory(0.5)
    folder = tall.parent
    line, peak = _peak_mib(lambda: _refused(
        _argv("auto", tall, folder, tiny_checkpoint, "--stitch"), folder,
        "((100, 2000, 2000) uint32) take 3.0 GiB of memory (2 copies)",
        "holds the labels of every slice in memory", hashed=False))
    # with --stitch the whole stack is relabelled in memory: a .zarr output helps only
    # without it, and the message says so
    assert "--out NAME.zarr, without --stitch" in line
    assert peak < 64


def test_percentile_beyond_memory(tall, memory, tiny_checkpoint):
    memory(0.5)
    folder = tall.parent
    argv = _argv("segment", tall, folder, tiny_checkpoint, "--contrast", "percentile")
    argv[argv.index("--out") + 1] = folder / "out.zarr"
    _, peak = _peak_mib(lambda: _refused(
        argv, folder, "--contrast percentile reads the whole image into memory",
        "1.5 GiB with its sorted copy", "give --contrast-limits LOW HIGH", hashed=False))
    assert peak < 64


def test_tall_stack_into_zarr_runs_within_memory(tall, memory, tiny_checkpoint, nuclei2d):
    """The same stack and memory as above: written slice by slice, it works."""
    memory(0.5)
    folder = tall.parent
    limits = ["--contrast-limits", str(nuclei2d.min()), str(nuclei2d.max())]
    argv = _argv("segment", tall, folder, tiny_checkpoint, *limits)
    argv[argv.index("--out") + 1] = folder / "out.zarr"
    outcome, peak = _peak_mib(lambda: run_cli(argv))
    assert outcome.code == 0, outcome.stderr
    assert peak < 400  # the labels alone would take 763 MiB
    labels = zarr.open_array(str(folder / "out.zarr"), mode="r")
    assert labels.shape == (100, 2000, 2000) and labels.dtype == np.uint16
    # slice 3 as a stack of its own, in memory: the same labels
    single = folder / "single"
    single.mkdir()
    tifffile.imwrite(single / "slice.tif", np.asarray(tifffile.memmap(tall)[3:4]))
    (single / "prompts.json").write_text(json.dumps(
        {"prompts": [{"slice": [0], "box": [60, 60, 140, 140], "object": 1}]}))
    outcome = run_cli(_argv("segment", single / "slice.tif", single, tiny_checkpoint, *limits))
    assert outcome.code == 0, outcome.stderr
    expected = tifffile.imread(single / "out.tif")[0]
    assert expected.any() and np.array_equal(labels[3], expected)
    # only chunks of slice 3 that hold labels are stored (1024 x 1024 pixels each)
    holding = sum(expected[y:y + 1024, x:x + 1024].any()
                  for y in range(0, 2000, 1024) for x in range(0, 2000, 1024))
    assert labels.chunks == (1, 1024, 1024) and labels.nchunks_initialized == holding
    assert leftovers(folder) == []


def test_compressed_tiff_beyond_memory_is_read_piece_by_piece(tmp_path, memory, nuclei3d):
    image = tmp_path / "scan.tif"
    tifffile.imwrite(image, nuclei3d, compression="zlib")  # one piece per slice
    memory(100 * 2 ** 10 / GIB)  # 100 KiB: the image takes 211 KiB, a slice 6.8 KiB
    opened = image_files.read_image(image)
    assert isinstance(opened, zarr.Array) and np.array_equal(opened[...], nuclei3d)


@pytest.mark.parametrize("command", COMMANDS)
def test_tiff_in_pieces_too_large_is_refused(command, tmp_path, memory, nuclei3d,
                                             tiny_checkpoint):
    image = tmp_path / "scan.tif"
    tifffile.imwrite(image, nuclei3d, compression="zlib")
    memory(40 * 2 ** 10 / GIB)  # 40 KiB: a 6.8 KiB piece decoded per window is too much
    _refused(_argv(command, image, tmp_path, tiny_checkpoint), tmp_path, str(image),
             "stored compressed in pieces of 6.8 KiB", "211 KiB of memory",
             "40.0 KiB available", "tiled TIFF")


# -- OME-Zarr levels ---------------------------------------------------------------------

def _pyramid(folder, stack, datasets=None):
    """An OME-Zarr (NGFF 0.4) group of stack at full and half size."""
    path = folder / "scan.ome.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("0", data=stack)
    group.create_array("1", data=stack[:, ::2, ::2])
    axes = [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]
    if datasets is None:
        datasets = [{"path": str(i), "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, 0.5 * 2 ** i, 0.5 * 2 ** i]}]} for i in range(2)]
    group.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": datasets}]
    return path


def _no_such_level(folder, stack):
    return _pyramid(folder, stack), ["--level", "2"], [
        "has no level 2", "its levels are 0 (3 x 61 x 57), 1 (3 x 31 x 29)"]


def _level_of_a_tiff(folder, stack):
    path = folder / "scan.tif"
    tifffile.imwrite(path, stack)
    return path, ["--level", "1"], ["has one resolution", "only in OME-Zarr images"]


def _level_of_a_plain_group(folder, stack):
    path = folder / "scan.zarr"
    zarr.open_group(str(path), mode="w").create_array("0", data=stack)
    return path, ["--level", "1"], ["is not an OME-Zarr image", "no multiscales"]


def _ome_without_datasets(folder, stack):
    return _pyramid(folder, stack, datasets=[]), [], ["lists no datasets"]


def _ome_missing_level(folder, stack):
    datasets = [{"path": "0", "coordinateTransformations": [
        {"type": "scale", "scale": [1.0, 1.0, 1.0]}]}, {"path": "gone"}]
    return _pyramid(folder, stack, datasets), ["--level", "1"], [
        "level 1 names the array 'gone', which the group does not hold"]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("make", [_no_such_level, _level_of_a_tiff, _level_of_a_plain_group,
                                  _ome_without_datasets, _ome_missing_level])
def test_level_errors_are_one_line(command, make, folder, nuclei3d, tiny_checkpoint):
    image, extra, fragments = make(folder, nuclei3d[9:12])
    _refused(_argv(command, image, folder, tiny_checkpoint, *extra), folder, str(image),
             *fragments)


def test_level_option_must_be_a_whole_number(folder, nuclei3d, tiny_checkpoint):
    image, _, _ = _no_such_level(folder, nuclei3d[9:12])
    _refused(_argv("embed", image, folder, tiny_checkpoint, "--level", "-1"), folder,
             "argument --level: must be 0 or more")


def test_ome_zarr_level_segmented_with_its_scale(folder, nuclei3d, tiny_checkpoint):
    """Level 1 of an OME-Zarr image: labels of its shape, with its pixel size."""
    image, _, _ = _no_such_level(folder, nuclei3d[9:12])
    (folder / "prompts.json").write_text(json.dumps(
        {"prompts": [{"slice": [1], "box": [8, 4, 26, 20], "object": 1}]}))
    argv = _argv("segment", image, folder, tiny_checkpoint, "--level", "1")
    argv[argv.index("--out") + 1] = folder / "out.zarr"
    outcome = run_cli(argv)
    assert outcome.code == 0, outcome.stderr
    labels = np.asarray(image_files.read_image(folder / "out.zarr")[...])
    assert labels.shape == (3, 31, 29) and labels[1].any() and not labels[[0, 2]].any()
    assert image_files.image_scale(folder / "out.zarr").scale == (1.0, 1.0, 1.0)
    assert image_files.image_scale(image, 1).scale == (1.0, 1.0, 1.0)
    assert leftovers(folder) == []
