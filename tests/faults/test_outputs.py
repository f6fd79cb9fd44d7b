"""Fault matrix, the labels output of ``hqsam segment`` and ``hqsam auto``, and stopping.

Every output is checked before the model loads: its folder exists and takes new
files, a .tif output is not a folder (nor a .zarr one a file or someone else's
folder), an existing output needs --overwrite, the disk has room for the labels, and
the output is never an input (the same path, a symbolic or hard link, inside the
input's zarr group, the cache folder). A disk that fills up while writing is one line;
the partial output is removed and the input untouched.

SIGTERM stops a run like Ctrl-C: one line, exit 143, no temporary output left, the
cache keeps the finished embeddings and a rerun gives the labels of a clean run. A
temporary output left by a killed run (kill -9) is removed by the next run.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from fault_utils import assert_user_error, leftovers, run_cli, snapshot

from napari_hq_sam.engine import distributed, io

ROOT = Path(__file__).resolve().parents[2]
# one box per slice of a (6, 61, 57) crop of the nuclei stack (slices 9..14)
BOXES = {"prompts": [{"slice": [z], "box": [26, 14, 48, 34], "object": z + 1}
                     for z in range(6)]}


@pytest.fixture(scope="module")
def source(tmp_path_factory, nuclei3d) -> Path:
    """An image (slices 9..14 of the nuclei stack) and its prompts."""
    folder = tmp_path_factory.mktemp("source")
    tifffile.imwrite(folder / "scan.tif", nuclei3d[9:15])
    (folder / "prompts.json").write_text(json.dumps(BOXES))
    return folder


@pytest.fixture()
def folder(source, tmp_path) -> Path:
    """A copy of :func:`source` for one test."""
    for name in ("scan.tif", "prompts.json"):
        shutil.copy(source / name, tmp_path / name)
    return tmp_path


def _argv(command: str, folder: Path, checkpoint, out, *extra) -> list:
    model = ["--model", "vit_tiny", "--checkpoint", checkpoint, "--device", "cpu", "--quiet"]
    if command == "segment":
        return ["segment", folder / "scan.tif", "--prompts", folder / "prompts.json", *model,
                "--out", out, *extra]
    # few points, no filter: objects (so labels to write) even from random weights
    return ["auto", folder / "scan.tif", *model, "--points-per-side", "4",
            "--pred-iou-thresh", "0", "--stability-thresh", "0", "--out", out, *extra]


def _paths(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*"))


def _refused(argv, folder, *fragments) -> str:
    """A one-line user error naming ``fragments``; nothing in ``folder`` changed."""
    before, names = snapshot(folder), _paths(folder)
    line = assert_user_error(run_cli(argv), *fragments)
    assert snapshot(folder) == before and _paths(folder) == names
    return line


# -- the output's folder and kind --------------------------------------------------------

@pytest.mark.parametrize("command", ["segment", "auto"])
def test_missing_output_folder(command, folder, tiny_checkpoint):
    out = folder / "results" / "labels.tif"
    _refused(_argv(command, folder, tiny_checkpoint, out), folder,
             f"output folder {out.parent} does not exist", f"mkdir -p {out.parent}")


@pytest.mark.parametrize("command", ["segment", "auto"])
def test_output_folder_is_a_file(command, folder, tiny_checkpoint):
    out = folder / "prompts.json" / "labels.tif"
    _refused(_argv(command, folder, tiny_checkpoint, out), folder,
             f"output folder {out.parent} is a file, not a folder")


@pytest.mark.parametrize("command", ["segment", "auto"])
def test_unwritable_output_folder_said_before_work(command, folder, tiny_checkpoint,
                                                   monkeypatch):
    """A read-only folder (or disk): said at once, not after the whole stack."""
    results = folder / "results"
    results.mkdir()
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if Path(path).parent == results and flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    monkeypatch.setattr(distributed, "worker_segmenter", _no_model)  # stops before any work
    _refused(_argv(command, folder, tiny_checkpoint, results / "labels.tif"), folder,
             f"cannot write in the output folder {results}", "read-only file system",
             "choose another --out")


def _no_model(*args, **kwargs):
    raise AssertionError("the model was asked for before the output was checked")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into any folder")
def test_folder_without_write_permission(folder, tiny_checkpoint):
    results = folder / "results"
    results.mkdir()
    results.chmod(0o555)
    try:
        _refused(_argv("segment", folder, tiny_checkpoint, results / "labels.tif"), folder,
                 f"cannot write in the output folder {results}", "permission denied")
    finally:
        results.chmod(0o755)


@pytest.mark.parametrize("command", ["segment", "auto"])
def test_tif_output_that_is_a_folder(command, folder, tiny_checkpoint):
    out = folder / "labels.tif"
    out.mkdir()
    (out / "notes.txt").write_text("the user's")
    _refused(_argv(command, folder, tiny_checkpoint, out), folder, f"output {out} already "
             "exists", "--overwrite")
    _refused(_argv(command, folder, tiny_checkpoint, out, "--overwrite"), folder,
             f"output {out} is a folder", "replaces only a file")


def test_zarr_output_that_is_a_file_or_not_zarr(folder, tiny_checkpoint):
    out = folder / "labels.zarr"
    out.write_text("the user's")
    _refused(_argv("segment", folder, tiny_checkpoint, out, "--overwrite"), folder,
             f"output {out} is a file", "replaces only a zarr folder")
    out.unlink()
    out.mkdir()
    (out / "notes.txt").write_text("the user's")
    _refused(_argv("segment", folder, tiny_checkpoint, out, "--overwrite"), folder,
             f"output {out} is a folder of other files, not zarr")


@pytest.mark.parametrize("command", ["segment", "auto"])
def test_existing_output_needs_overwrite(command, folder, tiny_checkpoint):
    out = folder / "labels.tif"
    tifffile.imwrite(out, np.ones((6, 61, 57), np.uint16))
    _refused(_argv(command, folder, tiny_checkpoint, out), folder,
             f"output {out} already exists", "pass --overwrite")


@pytest.mark.parametrize("command,dtype", [("segment", "uint16"), ("auto", "uint32")])
def test_not_enough_disk_space(command, dtype, folder, tiny_checkpoint, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 ** 9, 10 ** 9 - 1000,
                                                                  1000))
    need = 6 * 61 * 57 * np.dtype(dtype).itemsize
    _refused(_argv(command, folder, tiny_checkpoint, folder / "labels.tif"), folder,
             f"not enough disk space for {folder / 'labels.tif'}",
             f"labels (6, 61, 57) {dtype} take up to {need / 1024:.1f} KiB",
             "1000 bytes free", "free some space or choose another --out")


# -- the output is never an input --------------------------------------------------------

def _same_path(folder):
    return folder / "scan.tif", "is the image"


def _symlink(folder):
    (folder / "link.tif").symlink_to(folder / "scan.tif")
    return folder / "link.tif", "is the image"


def _hard_link(folder):
    os.link(folder / "scan.tif", folder / "copy.tif")
    return folder / "copy.tif", "is the image"


def _symlinked_folder(folder):
    (folder / "view").symlink_to(folder)
    return folder / "view" / "scan.tif", "is the image"


@pytest.mark.parametrize("command", ["segment", "auto"])
@pytest.mark.parametrize("make", [_same_path, _symlink, _hard_link, _symlinked_folder])
def test_output_is_the_input(command, make, folder, tiny_checkpoint):
    out, words = make(folder)
    line = _refused(_argv(command, folder, tiny_checkpoint, out, "--overwrite"), folder,
                    f"output {out} {words}", "hqsam never writes over its input")
    assert str(folder / "scan.tif") in line


@pytest.fixture()
def zarr_input(folder, nuclei3d):
    group = zarr.open_group(str(folder / "scan.zarr"), mode="w")
    group.create_array("raw", data=nuclei3d[9:15])
    return folder


@pytest.mark.parametrize("out,words", [
    ("scan.zarr/labels.zarr", "lies inside the image"),
    ("scan.zarr", "is the image"),
])
def test_zarr_output_inside_the_input(out, words, zarr_input, tiny_checkpoint):
    folder = zarr_input
    argv = _argv("segment", folder, tiny_checkpoint, folder / out, "--overwrite")
    argv[1] = folder / "scan.zarr"
    _refused(argv, folder, words, "hqsam never writes")


def test_zarr_output_is_the_group_of_the_input_array(zarr_input, tiny_checkpoint):
    folder = zarr_input
    argv = _argv("segment", folder, tiny_checkpoint, folder / "scan.zarr", "--overwrite")
    argv[1] = folder / "scan.zarr" / "raw"
    _refused(argv, folder, f"output {folder / 'scan.zarr'} is the zarr group "
             f"{folder / 'scan.zarr'} of the image {folder / 'scan.zarr' / 'raw'}")


def test_output_is_the_cache_folder(folder, tiny_checkpoint):
    out = folder / "emb.zarr"
    _refused(_argv("segment", folder, tiny_checkpoint, out, "--cache", out), folder,
             f"output {out} is the --cache folder {out}")


@pytest.mark.parametrize("command", ["segment", "auto", "embed"])
def test_cache_folder_inside_the_input(command, zarr_input, tiny_checkpoint):
    """The cache folder is written too: never inside the image's zarr group."""
    folder = zarr_input
    image, cache = folder / "scan.zarr" / "raw", folder / "scan.zarr" / "emb"
    if command == "embed":
        argv = ["embed", image, "--model", "vit_tiny", "--checkpoint", tiny_checkpoint,
                "--cache", cache, "--quiet"]
    else:
        argv = _argv(command, folder, tiny_checkpoint, folder / "labels.tif", "--cache", cache)
        argv[1] = image
    _refused(argv, folder, f"--cache folder {cache} lies inside the zarr group "
             f"{folder / 'scan.zarr'} of the image {image}", "choose another --cache")


def test_output_is_the_prompt_file_through_a_hard_link(folder, tiny_checkpoint):
    os.link(folder / "prompts.json", folder / "prompts.tif")
    _refused(_argv("segment", folder, tiny_checkpoint, folder / "prompts.tif", "--overwrite"),
             folder, "is the prompt file")


# -- a disk that fills up while writing --------------------------------------------------

def _full_tiff_writer(monkeypatch):
    """tifffile writes half a file, then the disk is full."""
    def imwrite(path, data, **kwargs):
        Path(path).write_bytes(b"II*\x00" + bytes(1000))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tifffile, "imwrite", imwrite)


def _full_zarr_store(monkeypatch):
    """The zarr store takes metadata, then no chunk: the disk is full."""
    from zarr.storage import LocalStore

    real_set = LocalStore.set

    async def set_(self, key, value):
        if key.split("/")[-1] != "zarr.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return await real_set(self, key, value)

    monkeypatch.setattr(LocalStore, "set", set_)


@pytest.mark.parametrize("command,out,full", [
    ("segment", "labels.tif", _full_tiff_writer),
    ("segment", "labels.zarr", _full_zarr_store),
    ("auto", "labels.tif", _full_tiff_writer),
    ("auto", "labels.zarr", _full_zarr_store),
])
def test_disk_full_while_writing(command, out, full, folder, tiny_checkpoint, monkeypatch,
                                 nuclei3d):
    tifffile.imwrite(folder / "scan.tif", nuclei3d[9:11])  # two slices: the run is short
    (folder / "prompts.json").write_text(json.dumps({"prompts": BOXES["prompts"][:2]}))
    full(monkeypatch)
    out = folder / out
    _refused(_argv(command, folder, tiny_checkpoint, out), folder,
             f"the disk filled up while writing {out}", "no space left on device",
             "the partial output is removed", "free some space")
    assert leftovers(folder) == []


# -- stopping: SIGTERM, Ctrl-C, kill -9 --------------------------------------------------

def test_sigterm_in_process_is_like_ctrl_c(folder, tiny_checkpoint, monkeypatch):
    """SIGTERM during the run: one line, exit 143, the partial output removed."""
    from napari_hq_sam.commands import segment

    def terminated(args, image, prompts, layout, limits, labels):
        assert leftovers(folder)  # the partial output exists: it is the run's
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the signal interrupts this
        raise AssertionError("SIGTERM did not stop the run")

    monkeypatch.setattr(segment, "_segment", terminated)
    before, handler = snapshot(folder), signal.getsignal(signal.SIGTERM)
    outcome = run_cli(_argv("segment", folder, tiny_checkpoint, folder / "labels.zarr",
                            "--cache", folder / "emb.zarr"))
    line = assert_user_error(outcome, "hqsam: terminated (SIGTERM)", code=143)
    assert line == (f"hqsam: terminated (SIGTERM); embeddings stored so far stay in "
                    f"{folder / 'emb.zarr'}: the same command resumes from them")
    assert snapshot(folder) == before and leftovers(folder) == []
    assert signal.getsignal(signal.SIGTERM) is handler  # restored after the run


def test_ctrl_c_names_the_cache(folder, tiny_checkpoint, monkeypatch):
    from napari_hq_sam.commands import segment

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(segment, "_segment", interrupted)
    outcome = run_cli(_argv("segment", folder, tiny_checkpoint, folder / "labels.tif",
                            "--cache", folder / "emb.zarr"))
    line = assert_user_error(outcome, "hqsam: interrupted", code=130)
    assert line.endswith(f"stay in {folder / 'emb.zarr'}: the same command resumes from them")
    assert leftovers(folder) == []


def _start(folder: Path, checkpoint, out: Path) -> subprocess.Popen:
    """``hqsam segment`` in its own process, caching embeddings in ``folder/emb.zarr``."""
    argv = [sys.executable, "-m", "napari_hq_sam.cli",
            *map(str, _argv("segment", folder, checkpoint, out, "--cache",
                            folder / "emb.zarr"))]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=env)


def _wait_for_first_slice(process: subprocess.Popen, folder: Path, out: Path) -> None:
    """Until the run's partial output holds its first slice's labels."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        partials = list(folder.glob(f".{out.name}.partial-*"))
        if partials and any((p / "c").is_dir() and any((p / "c").rglob("*"))
                            for p in partials):
            return
        if process.poll() is not None:
            raise AssertionError(f"the run ended first ({process.returncode}): "
                                 f"{process.communicate()[1]}")
        time.sleep(0.02)
    process.kill()
    raise AssertionError("no slice was written in time")


def _embeddings(stdout: str) -> tuple[int, int]:
    found = re.search(r"embeddings: (\d+) computed, (\d+) reused", stdout)
    assert found, stdout
    return int(found[1]), int(found[2])


@pytest.fixture(scope="module")
def clean_labels(source, tiny_checkpoint, tmp_path_factory) -> np.ndarray:
    """The labels of an uninterrupted run without a cache."""
    out = tmp_path_factory.mktemp("clean") / "labels.tif"
    outcome = run_cli(_argv("segment", source, tiny_checkpoint, out))
    assert outcome.code == 0, outcome.stderr
    labels = tifffile.imread(out)
    assert all(z + 1 in labels[z] for z in range(6))  # each box gave its object
    return labels


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_stopped_process_then_rerun(how, folder, tiny_checkpoint, clean_labels):
    """A real ``hqsam`` process stopped after its first slice; the rerun is a clean run's."""
    out = folder / "labels.zarr"
    inputs = snapshot(folder)
    process = _start(folder, tiny_checkpoint, out)
    _wait_for_first_slice(process, folder, out)
    process.send_signal(getattr(signal, how))
    stdout, stderr = process.communicate(timeout=120)
    partials = list(folder.glob(f".{out.name}.partial-*"))
    if how == "SIGTERM":
        assert process.returncode == 143, stderr
        assert stderr.splitlines() == [
            f"hqsam: terminated (SIGTERM); embeddings stored so far stay in "
            f"{folder / 'emb.zarr'}: the same command resumes from them"]
        assert partials == [] and not os.path.lexists(out)
    else:
        assert process.returncode == -signal.SIGKILL
        assert len(partials) == 1  # nothing could remove it
    assert stdout == ""
    assert {k: v for k, v in snapshot(folder).items() if k in inputs} == inputs
    outcome = run_cli(_argv("segment", folder, tiny_checkpoint, out, "--cache",
                            folder / "emb.zarr"))
    assert outcome.code == 0, outcome.stderr
    computed, reused = _embeddings(outcome.stdout)
    assert reused >= 1 and computed + reused == 6  # the stopped run's slices are reused
    assert np.array_equal(zarr.open_array(str(out), mode="r")[...], clean_labels)
    assert leftovers(folder) == []  # the killed run's partial output is gone too


# -- temporary outputs of runs that are gone ---------------------------------------------

def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_partial_outputs_removed(folder, tiny_checkpoint):
    out = folder / "labels.zarr"
    dead = io.partial_path(out).name.replace(f"-{os.getpid()}-", f"-{_dead_pid()}-")
    live = io.partial_path(out).name.replace(f"-{os.getpid()}-", f"-{os.getppid()}-")
    old = f".{out.name}.partial-0a1b2c3d"  # a name without a process: goes by age
    recent = f".{out.name}.partial-4e5f6a7b"
    other = ".other.zarr.partial-0a1b2c3d"  # another output's: not this run's business
    for name in (dead, live, old, recent, other):
        io.create_zarr_labels(folder / name, (6, 61, 57), np.uint16)[2] = 7
    stale = time.time() - io.STALE_SECONDS - 60
    for path in [folder / old, *(folder / old).rglob("*")]:
        os.utime(path, (stale, stale))
    # the cleaning comes first: a run that then stops (here at a missing checkpoint) did it
    outcome = run_cli(_argv("segment", folder, folder / "missing.pth", out))
    assert_user_error(outcome, f"{folder / 'missing.pth'} does not exist")
    left = sorted(p.name for p in folder.iterdir() if ".partial-" in p.name)
    assert left == sorted([live, recent, other])


def test_partial_names_carry_host_and_process():
    name = io.partial_path(Path("/data/labels.zarr")).name
    host, pid, token = name[len(".labels.zarr.partial-"):].split("-")
    assert len(host) == 8 and int(pid) == os.getpid() and len(token) == 8
