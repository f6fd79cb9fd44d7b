"""EmbeddingCache on disk: entries verified when read, damaged ones replaced, failed writes."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from napari_hq_sam.engine import cache_folder
from napari_hq_sam.engine.cache import CacheWarning, EmbeddingCache, image_key
from napari_hq_sam.errors import InputError, OutputError
from napari_hq_sam.predictor import ImageEmbedding

SIGNATURE = {"model_type": "vit_tiny", "checkpoint_sha256": "0" * 64, "adapter_sha256": None,
             "precision": "fp32", "version": "test"}
KEY = image_key(np.arange(12, dtype=np.uint8).reshape(2, 2, 3))
OTHER_KEY = image_key(np.zeros((2, 2, 3), np.uint8))


def embedding(seed: int = 0) -> ImageEmbedding:
    generator = torch.Generator().manual_seed(seed)
    return ImageEmbedding(torch.randn(1, 256, 64, 64, generator=generator),
                          torch.randn(1, 32, 256, 256, generator=generator), (61, 57), (1024, 957))


def same(a: ImageEmbedding, b: ImageEmbedding) -> bool:
    return (torch.equal(a.embeddings, b.embeddings) and torch.equal(a.hq_features, b.hq_features)
            and a.original_size == b.original_size and a.input_size == b.input_size)


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".tmp-"))


def read_caught(folder: Path, key: str = KEY):
    """``(embedding or None, warning texts, cache)`` of a fresh cache reading ``key``."""
    cache = EmbeddingCache(SIGNATURE, directory=folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = cache.get(key)
    return found, [str(w.message) for w in caught if w.category is CacheWarning], cache


@pytest.fixture
def stored(tmp_path) -> Path:
    """A cache folder with two whole entries, KEY (seed 0) and OTHER_KEY (seed 1)."""
    folder = tmp_path / "emb.zarr"
    cache = EmbeddingCache(SIGNATURE, directory=folder)
    cache.put(KEY, embedding(0))
    cache.put(OTHER_KEY, embedding(1))
    return folder


def chunk(folder: Path, name: str = "hq_features") -> Path:
    (path,) = [p for p in (folder / KEY / name / "c").rglob("*") if p.is_file()]
    return path


def test_entry_reads_back_exactly_and_records_its_checksum(stored):
    found, messages, cache = read_caught(stored)
    assert same(found, embedding(0)) and messages == []
    assert cache.stored_keys() == sorted([KEY, OTHER_KEY])
    attrs = json.loads((stored / KEY / "zarr.json").read_text())["attributes"]
    assert attrs["format"] == cache_folder.FORMAT and len(attrs["sha256"]) == 64
    assert set(attrs["files"]) == {"embeddings/zarr.json", "hq_features/zarr.json",
                                   "embeddings/c/0/0/0/0", "hq_features/c/0/0/0/0"}
    assert cache.report() == "" and temporaries(stored) == []


def _delete_chunk(folder):
    chunk(folder).unlink()


def _flip_bytes(folder):
    path = chunk(folder)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    path.write_bytes(bytes(data))


def _truncate_chunk(folder):
    path = chunk(folder, "embeddings")
    path.write_bytes(path.read_bytes()[:1000])


def _truncate_metadata(folder):
    path = folder / KEY / "zarr.json"
    path.write_bytes(path.read_bytes()[:40])


def _garble_metadata(folder):
    (folder / KEY / "zarr.json").write_text('{"attributes": {"original_size": [61, 57], '
                                            '"input_size": [1024, 957]}, "zarr_format": ')


def _other_sizes(folder):
    # well-formed JSON whose recorded image size was changed: only the checksum sees it
    path = folder / KEY / "zarr.json"
    document = json.loads(path.read_text())
    document["attributes"]["original_size"] = [57, 61]
    path.write_text(json.dumps(document))


def _delete_array_metadata(folder):
    (folder / KEY / "embeddings" / "zarr.json").unlink()


def _empty_folder(folder):
    for path in sorted((folder / KEY).rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()


def _another_models_entry(folder):
    other = EmbeddingCache(dict(SIGNATURE, checkpoint_sha256="1" * 64),
                           directory=folder.parent / "other.zarr")
    other.put(KEY, embedding(0))
    _empty_folder(folder)
    (folder / KEY).rmdir()
    os.rename(folder.parent / "other.zarr" / KEY, folder / KEY)


DAMAGE = {
    "deleted chunk": (_delete_chunk, "hq_features/c/0/0/0/0 is missing"),
    "flipped bytes": (_flip_bytes, "checksum"),
    "truncated chunk": (_truncate_chunk, "embeddings/c/0/0/0/0 has 1000 bytes"),
    "truncated metadata": (_truncate_metadata, "zarr.json cannot be read"),
    "garbled metadata": (_garble_metadata, "zarr.json cannot be read"),
    "edited metadata": (_other_sizes, "checksum"),
    "array metadata deleted": (_delete_array_metadata, "embeddings/zarr.json is missing"),
    "empty entry folder": (_empty_folder, "zarr.json is missing"),
    "another model's entry": (_another_models_entry, "checksum"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_entry_is_a_miss_then_replaced(stored, damage):
    spoil, reason = DAMAGE[damage]
    spoil(stored)
    found, messages, cache = read_caught(stored)
    assert found is None
    (message,) = messages
    assert str(stored) in message and KEY in message and reason in message, message
    assert cache.damaged == 1 and cache.report() == "1 damaged entry recomputed"
    # asked again before it is replaced (e.g. the same slice twice in a batch): no new report
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        assert cache.get(KEY) is None and cache.stored_keys() == [OTHER_KEY]
    assert again == [] and cache.damaged == 1
    cache.put(KEY, embedding(2))  # the segmenter's recomputed embedding
    found, messages, fresh = read_caught(stored)
    assert same(found, embedding(2)) and messages == [] and fresh.damaged == 0
    assert fresh.stored_keys() == sorted([KEY, OTHER_KEY]) and temporaries(stored) == []


def test_listing_finds_structural_damage_reading_finds_the_rest(stored):
    _flip_bytes(stored)  # the files keep their sizes: only reading the entry finds it
    cache = EmbeddingCache(SIGNATURE, directory=stored)
    assert cache.stored_keys() == sorted([KEY, OTHER_KEY])
    with pytest.warns(CacheWarning, match="checksum"):
        assert cache.get(KEY) is None
    chunk(stored, "embeddings").unlink()
    cache = EmbeddingCache(SIGNATURE, directory=stored)
    with pytest.warns(CacheWarning, match="embeddings/c/0/0/0/0 is missing"):
        assert cache.stored_keys() == [OTHER_KEY]
    assert same(cache.get(OTHER_KEY), embedding(1))


def test_entries_of_the_older_format_are_recomputed_with_one_message(stored):
    for key in (KEY, OTHER_KEY):  # as written before entries carried a checksum
        path = stored / key / "zarr.json"
        document = json.loads(path.read_text())
        for name in ("format", "files", "sha256"):
            del document["attributes"][name]
        path.write_text(json.dumps(document))
    cache = EmbeddingCache(SIGNATURE, directory=stored)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cache.get(KEY) is None and cache.get(OTHER_KEY) is None
    (message,) = [str(w.message) for w in caught]
    assert str(stored) in message and "older version" in message and "checksum" in message
    assert (cache.outdated, cache.damaged) == (2, 0)
    assert cache.report() == "2 entries without checksum (older version) recomputed"
    cache.put(KEY, embedding(0))
    assert same(EmbeddingCache(SIGNATURE, directory=stored).get(KEY), embedding(0))


def test_folder_problems_name_the_folder(tmp_path, stored):
    file = tmp_path / "cache.zarr"
    file.write_text("not a folder")
    with pytest.raises(InputError, match=f"{file} is a file"):
        EmbeddingCache(SIGNATURE, directory=file)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    with pytest.raises(InputError, match="is not an embedding cache"):
        EmbeddingCache(SIGNATURE, directory=tmp_path / "notes")
    image = tmp_path / "image.zarr"  # a zarr image, not a cache: never written into
    zarr.open_array(str(image), mode="w", shape=(4, 4), dtype="uint8")[...] = 7
    with pytest.raises(InputError, match="names no model"):
        EmbeddingCache(SIGNATURE, directory=image)
    with pytest.raises(InputError, match="another model"):
        EmbeddingCache(dict(SIGNATURE, precision="bf16"), directory=stored)
    (stored / "zarr.json").write_text('{"attributes": {"signa')
    with pytest.raises(InputError, match=f"cache folder {stored} is damaged"):
        EmbeddingCache(SIGNATURE, directory=stored)
    with pytest.raises(OutputError, match=f"cache folder {file / 'sub'} cannot be created"):
        EmbeddingCache(SIGNATURE, directory=file / "sub")


def _failing_write(code):
    def write(path, signature, key, embedding):
        (path / "embeddings").mkdir(parents=True)  # part of an entry, then the disk refuses
        (path / "embeddings" / "zarr.json").write_text("{}")
        raise OSError(code, os.strerror(code))
    return write


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_failed_write_keeps_the_embedding_in_memory_and_says_so_once(tmp_path, monkeypatch,
                                                                     code):
    folder = tmp_path / "emb.zarr"
    cache = EmbeddingCache(SIGNATURE, directory=folder)
    monkeypatch.setattr(cache_folder, "write_entry", _failing_write(code))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cache.put(KEY, embedding(0))
        cache.put(OTHER_KEY, embedding(1))
    (message,) = [str(w.message) for w in caught]
    assert str(folder) in message and os.strerror(code) in message, message
    assert same(cache.get(KEY), embedding(0)) and same(cache.get(OTHER_KEY), embedding(1))
    assert cache.unstored == 2 and cache.write_error == os.strerror(code)
    assert cache.report() == f"2 embeddings not stored ({os.strerror(code)})"
    assert sorted(p.name for p in folder.iterdir()) == ["zarr.json"]  # no .tmp- left


def test_replacing_a_bad_entry_that_cannot_be_moved_is_a_failed_write(stored, monkeypatch):
    _delete_chunk(stored)
    found, _, cache = read_caught(stored)
    real_rename = os.rename

    def rename(src, dst):
        if Path(src) == stored / KEY:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_rename(src, dst)

    monkeypatch.setattr(cache_folder.os, "rename", rename)
    with pytest.warns(CacheWarning, match="Permission denied"):
        cache.put(KEY, embedding(0))
    assert same(cache.get(KEY), embedding(0)) and temporaries(stored) == []
    monkeypatch.undo()
    assert read_caught(stored)[0] is None  # still damaged, still refused


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_temporaries_of_gone_writers_are_removed_when_the_cache_opens(stored):
    host = cache_folder._HOST
    dead = stored / f".tmp-{KEY}-{host}-{_dead_pid()}-0000abcd"
    old = stored / f".tmp-{KEY}-1234abcd"  # no writer recorded: judged by age
    live = stored / f".tmp-{KEY}-{host}-{os.getpid()}-0000abcd"
    elsewhere = stored / f".tmp-{KEY}-{'f' * 8}-{_dead_pid()}-0000abcd"  # another machine's
    root_file = stored / f".tmp-root-{host}-{_dead_pid()}-0000abcd"
    for path in (dead, old, live, elsewhere):
        (path / "embeddings").mkdir(parents=True)
        (path / "embeddings" / "zarr.json").write_text("{}")
    root_file.write_text("{}")
    hours_ago = time.time() - 2 * cache_folder.STALE_SECONDS
    for path in [old, *old.rglob("*")]:
        os.utime(path, (hours_ago, hours_ago))
    EmbeddingCache(SIGNATURE, directory=stored)
    assert temporaries(stored) == sorted([live.name, elsewhere.name])
    assert EmbeddingCache(SIGNATURE, directory=stored).stored_keys() == sorted([KEY, OTHER_KEY])


def test_concurrent_writers_and_repairers_leave_whole_entries(stored):
    _flip_bytes(stored)
    errors = []

    def worker(seed):
        try:
            cache = EmbeddingCache(SIGNATURE, directory=stored)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if cache.get(KEY) is None:
                    cache.put(KEY, embedding(0))
                for n in range(3):
                    cache.put(image_key(np.full((2, 2, 3), n + 100, np.uint8)), embedding(n))
        except Exception as exc:  # reported below with the thread's error
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    found, messages, cache = read_caught(stored)
    assert same(found, embedding(0)) and messages == []
    for n in range(3):
        assert same(cache.get(image_key(np.full((2, 2, 3), n + 100, np.uint8))), embedding(n))
    assert len(cache.stored_keys()) == 5 and temporaries(stored) == []


WRITER = """
import sys, warnings
import numpy as np
sys.path.insert(0, {tests!r})
from test_embedding_cache import SIGNATURE, embedding
from napari_hq_sam.engine.cache import EmbeddingCache, image_key
warnings.simplefilter("error")
for n in range(6):
    # a fresh cache per entry: each open also cleans the folder's temporaries
    EmbeddingCache(SIGNATURE, directory={folder!r}).put(
        image_key(np.full((2, 2, 3), n + 100, np.uint8)), embedding(n))
"""


def test_two_processes_writing_the_same_entries(tmp_path):
    folder = tmp_path / "emb.zarr"
    EmbeddingCache(SIGNATURE, directory=folder)
    script = WRITER.format(tests=str(Path(__file__).parent), folder=str(folder))
    writers = [subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE,
                                text=True) for _ in range(2)]
    errors = [writer.communicate(timeout=300)[1] for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0], errors
    cache = EmbeddingCache(SIGNATURE, directory=folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for n in range(6):
            assert same(cache.get(image_key(np.full((2, 2, 3), n + 100, np.uint8))),
                        embedding(n))
    assert len(cache.stored_keys()) == 6 and temporaries(folder) == []
