"""Fault matrix: the embedding cache folder of ``hqsam segment --cache`` and ``hqsam embed``.

A damaged entry (a chunk deleted or truncated, bytes flipped, metadata truncated or
garbled) or one of the older format without checksum is never used: the run
recomputes it, replaces it, says so in one warning line and in its summary, and writes
the labels of a clean run; the next run reuses the repaired entry. A folder that
cannot be a cache (a file, another folder, another model's cache, a cache whose own
metadata is damaged) is one line naming it, and is left unchanged. A cache that
cannot be written (disk full, no permission) costs only the reuse: the labels are
right, one line says why, and no temporary folder is left; ``hqsam embed``, whose
output the folder is, stops with that line. Temporary folders of dead writers are
removed when the cache opens.

Each run starts from an empty model table, as a new ``hqsam`` process would, so its
embeddings come from the folder and not from the memory of an earlier run.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from fault_utils import Outcome, assert_user_error, leftovers, run_cli, snapshot

from napari_hq_sam.engine import cache_folder, distributed

# slices 5 and 15 of this crop are slices 10 and 20 of the sample, with their boxes
PROMPTS = {"prompts": [{"slice": [5], "box": [27, 0, 46, 16], "object": 1},
                       {"slice": [5], "box": [0, 28, 15, 47], "object": 2},
                       {"slice": [15], "box": [26, 14, 48, 34], "object": 3}]}


@pytest.fixture(autouse=True)
def new_process(monkeypatch):
    """Each run gets its own model table (and so its own cache object), as a process."""
    monkeypatch.setattr(distributed, "_MODELS", {})
    monkeypatch.setattr(distributed, "_SEGMENTERS", {})


def _forget_models() -> None:
    distributed._MODELS.clear()
    distributed._SEGMENTERS.clear()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, nuclei3d) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    tifffile.imwrite(folder / "stack.tif", nuclei3d[5:25])
    (folder / "prompts.json").write_text(json.dumps(PROMPTS))
    return folder


def _segment(inputs: Path, checkpoint: Path, out: Path, cache: Path) -> Outcome:
    _forget_models()
    return run_cli(["segment", inputs / "stack.tif", "--prompts", inputs / "prompts.json",
                    "--model", "vit_tiny", "--checkpoint", checkpoint, "--device", "cpu",
                    "--out", out, "--cache", cache, "--quiet"])


def _embed(inputs: Path, checkpoint: Path, cache: Path) -> Outcome:
    _forget_models()
    return run_cli(["embed", inputs / "stack.tif", "--model", "vit_tiny", "--checkpoint",
                    checkpoint, "--device", "cpu", "--cache", cache, "--slices", "5", "15",
                    "--quiet"])


def _counts(outcome: Outcome) -> tuple[int, int]:
    found = re.search(r"embeddings: (\d+) computed, (\d+) reused", outcome.stdout)
    assert found, outcome.stdout
    return int(found[1]), int(found[2])


@pytest.fixture(scope="module")
def clean(inputs, tiny_checkpoint, tmp_path_factory) -> dict:
    """A clean run: its labels and its cache folder (two entries)."""
    _forget_models()
    folder = tmp_path_factory.mktemp("clean")
    outcome = _segment(inputs, tiny_checkpoint, folder / "labels.tif", folder / "emb.zarr")
    _forget_models()
    assert outcome.code == 0 and outcome.stderr == "", outcome.stderr
    assert _counts(outcome) == (2, 0)
    labels = tifffile.imread(folder / "labels.tif")
    assert set(np.unique(labels[5])) >= {1, 2} and 3 in labels[15]  # not empty masks
    keys = sorted(p.name for p in (folder / "emb.zarr").iterdir() if not p.name.startswith("."))
    assert keys[-1] == "zarr.json" and len(keys) == 3
    return {"labels": labels, "cache": folder / "emb.zarr", "key": keys[0]}


@pytest.fixture()
def cache(clean, tmp_path) -> Path:
    """A copy of the clean run's cache folder, to damage."""
    return Path(shutil.copytree(clean["cache"], tmp_path / "emb.zarr"))


def _chunk(cache: Path, key: str, array: str) -> Path:
    (path,) = [p for p in (cache / key / array / "c").rglob("*") if p.is_file()]
    return path


def _delete_chunk(cache, key):
    _chunk(cache, key, "embeddings").unlink()


def _truncate_chunk(cache, key):
    path = _chunk(cache, key, "hq_features")
    path.write_bytes(path.read_bytes()[:4096])


def _flip_bytes(cache, key):
    path = _chunk(cache, key, "hq_features")
    data = bytearray(path.read_bytes())
    data[2000:2064] = bytes(b ^ 0xFF for b in data[2000:2064])
    path.write_bytes(bytes(data))


def _truncate_metadata(cache, key):
    path = cache / key / "zarr.json"
    path.write_bytes(path.read_bytes()[:50])


def _garble_metadata(cache, key):
    path = cache / key / "zarr.json"
    data = bytearray(path.read_bytes())
    data[100:164] = b"\xff" * 64
    path.write_bytes(bytes(data))


def _edit_checksum(cache, key):
    path = cache / key / "zarr.json"
    path.write_bytes(path.read_bytes().replace(b'"sha256": "', b'"sha256": "0'))


DAMAGED_ENTRIES = {
    "deleted chunk": (_delete_chunk, "embeddings/c/0/0/0/0 is missing"),
    "truncated chunk": (_truncate_chunk, "hq_features/c/0/0/0/0 has 4096 bytes"),
    "flipped bytes in a chunk": (_flip_bytes, "do not match its checksum"),
    "truncated metadata": (_truncate_metadata, "zarr.json cannot be read"),
    "garbled metadata": (_garble_metadata, "zarr.json cannot be read"),
    "edited checksum": (_edit_checksum, "do not match its checksum"),
}


@pytest.mark.parametrize("case", DAMAGED_ENTRIES)
def test_damaged_entry_is_recomputed_and_replaced(case, clean, cache, inputs, tiny_checkpoint,
                                                  tmp_path):
    damage, reason = DAMAGED_ENTRIES[case]
    damage(cache, clean["key"])
    outcome = _segment(inputs, tiny_checkpoint, tmp_path / "out.tif", cache)
    assert outcome.code == 0, outcome.stderr
    (line,) = outcome.stderr.splitlines()
    assert line.startswith("hqsam segment: warning: ") and "Traceback" not in outcome.stderr
    for fragment in (f"cache {cache}", f"entry {clean['key']}", reason, "recomputed"):
        assert fragment in line, (fragment, line)
    assert _counts(outcome) == (1, 1) and "1 damaged entry recomputed" in outcome.stdout
    assert np.array_equal(tifffile.imread(tmp_path / "out.tif"), clean["labels"])
    # the entry was replaced: the next run reuses both, silently
    again = _segment(inputs, tiny_checkpoint, tmp_path / "again.tif", cache)
    assert again.code == 0 and again.stderr == "" and _counts(again) == (0, 2)
    assert np.array_equal(tifffile.imread(tmp_path / "again.tif"), clean["labels"])
    assert snapshot(cache) == snapshot(clean["cache"])  # entries are deterministic
    assert leftovers(tmp_path) == []


def test_entries_of_the_older_format_are_recomputed_once_said(clean, cache, inputs,
                                                               tiny_checkpoint, tmp_path):
    for path in cache.glob("*/zarr.json"):  # entries as written before they had a checksum
        document = json.loads(path.read_text())
        for name in ("format", "files", "sha256"):
            del document["attributes"][name]
        path.write_text(json.dumps(document))
    outcome = _segment(inputs, tiny_checkpoint, tmp_path / "out.tif", cache)
    assert outcome.code == 0, outcome.stderr
    (line,) = outcome.stderr.splitlines()
    for fragment in (f"cache {cache}", "older version", "without checksums", "recomputed"):
        assert fragment in line, (fragment, line)
    assert _counts(outcome) == (2, 0)
    assert "2 entries without checksum (older version) recomputed" in outcome.stdout
    assert np.array_equal(tifffile.imread(tmp_path / "out.tif"), clean["labels"])
    assert snapshot(cache) == snapshot(clean["cache"])


def _a_file(cache: Path) -> Path:
    shutil.rmtree(cache)
    cache.write_text("my notes\n")
    return cache


def _not_a_cache(cache: Path) -> Path:
    shutil.rmtree(cache)
    (cache / "notes").mkdir(parents=True)
    (cache / "notes" / "a.txt").write_text("x")
    return cache


def _a_zarr_image(cache: Path) -> Path:
    shutil.rmtree(cache)
    zarr.open_array(str(cache), mode="w", shape=(8, 8), dtype="uint8")[...] = 3
    return cache


def _another_model(cache: Path) -> Path:
    path = cache / "zarr.json"
    document = json.loads(path.read_text())
    document["attributes"]["signature"]["precision"] = "bf16"
    path.write_text(json.dumps(document))
    return cache


def _damaged_root(cache: Path) -> Path:
    path = cache / "zarr.json"
    path.write_bytes(path.read_bytes()[:30])
    return cache


FOLDERS = {
    "a file": (_a_file, ("is a file",)),
    "a folder that is not a cache": (_not_a_cache, ("not an embedding cache",)),
    "a zarr image": (_a_zarr_image, ("not an embedding cache",)),
    "another model's cache": (_another_model, ("another model", "precision")),
    "a cache whose own metadata is damaged": (_damaged_root, ("is damaged", "delete")),
}


@pytest.mark.parametrize("case", FOLDERS)
@pytest.mark.parametrize("command", ["segment", "embed"])
def test_folder_that_cannot_be_this_cache_is_one_line(case, command, cache, inputs,
                                                      tiny_checkpoint, tmp_path):
    make, fragments = FOLDERS[case]
    path = make(cache)
    before = snapshot(path) if path.is_dir() else path.read_bytes()
    if command == "segment":
        outcome = _segment(inputs, tiny_checkpoint, tmp_path / "out.tif", path)
    else:
        outcome = _embed(inputs, tiny_checkpoint, path)
    assert_user_error(outcome, f"cache folder {path}", *fragments)
    assert (snapshot(path) if path.is_dir() else path.read_bytes()) == before
    assert not (tmp_path / "out.tif").exists() and leftovers(tmp_path) == []


def _refusing_write(code: int):
    def write_entry(path, signature, key, embedding):
        (path / "embeddings").mkdir(parents=True)  # part of an entry, then the disk refuses
        (path / "embeddings" / "zarr.json").write_text("{}")
        raise OSError(code, os.strerror(code))
    return write_entry


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES], ids=["disk full", "no permission"])
def test_cache_that_cannot_be_written_costs_only_the_reuse(code, clean, inputs, tiny_checkpoint,
                                                           tmp_path, monkeypatch):
    monkeypatch.setattr(cache_folder, "write_entry", _refusing_write(code))
    cache = tmp_path / "emb.zarr"
    outcome = _segment(inputs, tiny_checkpoint, tmp_path / "out.tif", cache)
    assert outcome.code == 0, outcome.stderr
    (line,) = outcome.stderr.splitlines()
    for fragment in (f"cache {cache}", "cannot be stored", os.strerror(code), "goes on"):
        assert fragment in line, (fragment, line)
    assert _counts(outcome) == (2, 0)
    assert f"2 embeddings not stored ({os.strerror(code)})" in outcome.stdout
    assert np.array_equal(tifffile.imread(tmp_path / "out.tif"), clean["labels"])
    assert sorted(p.name for p in cache.iterdir()) == ["zarr.json"]
    assert leftovers(tmp_path) == []


def test_embed_stops_when_its_cache_cannot_be_written(inputs, tiny_checkpoint, tmp_path,
                                                      monkeypatch):
    monkeypatch.setattr(cache_folder, "write_entry", _refusing_write(errno.ENOSPC))
    cache = tmp_path / "emb.zarr"
    outcome = _embed(inputs, tiny_checkpoint, cache)
    assert outcome.code == 2 and "Traceback" not in outcome.stderr, outcome.stderr
    warning, error = outcome.stderr.splitlines()
    assert warning.startswith("hqsam embed: warning: ") and "No space left" in warning
    assert error.startswith(f"hqsam embed: error: cache folder {cache}: ")
    assert "No space left on device" in error and "run again" in error
    assert sorted(p.name for p in cache.iterdir()) == ["zarr.json"]
    assert leftovers(tmp_path) == []


def test_embed_replaces_a_damaged_entry(clean, cache, inputs, tiny_checkpoint):
    _delete_chunk(cache, clean["key"])
    outcome = _embed(inputs, tiny_checkpoint, cache)
    assert outcome.code == 0, outcome.stderr
    (line,) = outcome.stderr.splitlines()
    assert f"entry {clean['key']} is damaged" in line and "is missing" in line
    assert _counts(outcome) == (1, 1) and "1 damaged entry recomputed" in outcome.stdout
    assert snapshot(cache) == snapshot(clean["cache"])


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_temporary_folders_of_dead_runs_are_removed(clean, cache, inputs, tiny_checkpoint,
                                                    tmp_path):
    key = clean["key"]
    dead = cache / f".tmp-{key}-{cache_folder._HOST}-{_dead_pid()}-0a1b2c3d"
    old = cache / f".tmp-{key}-0a1b2c3d"  # the name an earlier version gave: judged by age
    for path in (dead, old):
        shutil.copytree(cache / key, path)
    hours_ago = time.time() - 2 * cache_folder.STALE_SECONDS
    for path in [old, *old.rglob("*")]:
        os.utime(path, (hours_ago, hours_ago))
    outcome = _segment(inputs, tiny_checkpoint, tmp_path / "out.tif", cache)
    assert outcome.code == 0 and outcome.stderr == "", outcome.stderr
    assert _counts(outcome) == (0, 2)
    assert np.array_equal(tifffile.imread(tmp_path / "out.tif"), clean["labels"])
    assert leftovers(tmp_path) == [] and snapshot(cache) == snapshot(clean["cache"])


@pytest.mark.parametrize("command", ["segment", "auto"])
def test_another_models_cache_is_refused_before_the_model_loads(command, tiny_checkpoint,
                                                               tmp_path, monkeypatch):
    import napari_hq_sam.loading
    from napari_hq_sam.engine.cache import EmbeddingCache

    def no_model(*args, **kwargs):
        raise AssertionError("the model loaded before the cache folder was checked")

    folder = tmp_path / "other.zarr"
    EmbeddingCache({"model_type": "vit_b", "checkpoint_sha256": "0" * 64,
                    "adapter_sha256": None, "precision": "fp32", "version": "0"},
                   directory=folder)
    before = snapshot(folder)
    monkeypatch.setattr(napari_hq_sam.loading, "load_model", no_model)
    image = tmp_path / "img.npy"
    np.save(image, np.arange(2 * 32 * 32, dtype=np.uint16).reshape(2, 32, 32))
    prompts = tmp_path / "p.json"
    prompts.write_text('[{"slice": [0], "box": [2, 2, 20, 20]}]')
    extra = ["--prompts", prompts] if command == "segment" else []
    outcome = run_cli([command, image, *extra, "--model", "vit_tiny", "--checkpoint",
                       tiny_checkpoint, "--cache", folder, "--out", tmp_path / "out.tif"])
    assert_user_error(outcome, str(folder))
    assert snapshot(folder) == before and not (tmp_path / "out.tif").exists()
