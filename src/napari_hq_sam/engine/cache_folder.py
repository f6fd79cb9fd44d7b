"""The on-disk form of an embedding cache: a signed zarr folder of verified entries.

Layout (zarr v3)::

    CACHE/zarr.json              root group, attributes {"signature": {...}}
    CACHE/<key>/                 one group per slice: embeddings (1, 256, 64, 64) and
                                 hq_features (1, 32, 256, 256) float32 arrays;
                                 attributes original_size, input_size, format,
                                 files (byte size of each file of the entry), sha256

``<key>`` is the 40 hex digits of :func:`~.cache.image_key`. The sha256
(:func:`entry_sha256`) covers the folder's signature, the key, both sizes and the
arrays' shapes, dtypes and bytes, so an entry is whole only if it reads back as it
was written: a chunk file missing (which zarr would read as zeros), flipped bytes,
truncated or garbled metadata, an entry copied from another model's folder all fail.
Entries written before entries had a checksum cannot be verified (:data:`OUTDATED`).

An entry is written to a hidden temporary group ``.tmp-<key>-<host>-<pid>-<random>``
and renamed into place when complete, so a killed writer leaves only whole entries
and concurrent writers (processes, Dask workers) never read half of one; the first
rename wins. Temporary groups of writers that are gone (this machine's, by process
id) or silent for :data:`STALE_SECONDS` are removed when a folder opens.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import time
import uuid
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError, OutputError
from ..predictor import ImageEmbedding
from .resources import process_alive

FORMAT = 2  # entries with "files" and "sha256"; earlier ones had neither
ARRAYS = ("embeddings", "hq_features")
STALE_SECONDS = 3600.0  # a temporary group this old belongs to no live writer
OUTDATED = "written before entries had a checksum"  # the problem of such an entry
_KEY = re.compile(r"[0-9a-f]{40}")
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


class CacheFolder:
    """A signed zarr folder of embedding entries, opened (or created) for one signature.

    Parameters
    ----------
    root : str or Path
        The folder; created with its parents if missing.
    signature : dict
        From :func:`~.cache.model_signature`.

    Raises
    ------
    InputError
        ``root`` is a file, a folder that is not an embedding cache, another model's
        cache, or a cache whose own ``zarr.json`` is damaged.
    OutputError
        ``root`` cannot be created.
    """

    def __init__(self, root: str | Path, signature: dict):
        self.root = Path(root)
        self.signature = dict(signature)
        stored = read_folder_signature(self.root)
        if stored is None:
            self._create()
            stored = read_folder_signature(self.root)  # a concurrent creator may have won
        if stored != self.signature:
            raise InputError(_mismatch_message(self.root, stored or {}, self.signature))
        self._remove_abandoned()

    def keys(self) -> list[str]:
        """Names of the entries in the folder, sorted (whole or not)."""
        try:
            return sorted(p.name for p in self.root.iterdir() if _KEY.fullmatch(p.name))
        except OSError:
            return []

    def has(self, key: str) -> bool:
        """Whether something (whole or not) is stored under ``key``."""
        return os.path.lexists(self.root / key)

    def inspect(self, key: str) -> tuple[dict | None, str | None]:
        """``(attributes, None)`` of a whole-looking entry, else ``(None, what is wrong)``.

        Reads only the entry's metadata and the sizes of its files: quick, and finds
        everything but changed bytes, which :meth:`read` finds.
        """
        path = self.root / key
        try:
            document = json.loads((path / "zarr.json").read_bytes())
        except FileNotFoundError:
            return None, "its zarr.json is missing"
        except (OSError, ValueError) as exc:
            return None, f"its zarr.json cannot be read: {reason(exc)}"
        attrs = document.get("attributes") if isinstance(document, dict) else None
        if not isinstance(attrs, dict) or not {"original_size", "input_size"} <= set(attrs):
            return None, "its zarr.json is not an entry's metadata"
        if "format" not in attrs and "sha256" not in attrs:
            return None, OUTDATED
        files = attrs.get("files")
        if (attrs.get("format") != FORMAT or not isinstance(attrs.get("sha256"), str)
                or not isinstance(files, dict)):
            return None, "its zarr.json is not an entry's metadata"
        for name, size in files.items():
            part = Path(name)
            if part.is_absolute() or ".." in part.parts:
                return None, "its zarr.json is not an entry's metadata"
            try:
                actual = (path / part).stat().st_size
            except FileNotFoundError:
                return None, f"{name} is missing"
            except OSError as exc:
                return None, f"{name} cannot be read: {reason(exc)}"
            if actual != size:
                return None, f"{name} has {actual} bytes instead of {size}"
        return attrs, None

    def read(self, key: str) -> tuple[ImageEmbedding | None, str | None]:
        """The verified embedding under ``key``: ``(embedding, None)``.

        ``(None, None)`` when nothing is stored under ``key``; ``(None, what is
        wrong)`` for an entry that is not whole (or :data:`OUTDATED`).
        """
        import zarr

        if not self.has(key):
            return None, None
        attrs, problem = self.inspect(key)
        if problem is not None:
            return None, problem
        try:
            group = zarr.open_group(str(self.root / key), mode="r")
            arrays = {name: np.ascontiguousarray(group[name][...]) for name in ARRAYS}
            original_size = tuple(int(v) for v in attrs["original_size"])
            input_size = tuple(int(v) for v in attrs["input_size"])
        except Exception as exc:  # any decoding failure (codec, json, types) is damage
            return None, f"it cannot be read: {reason(exc)}"
        if entry_sha256(self.signature, key, arrays, original_size,
                        input_size) != attrs["sha256"]:
            return None, "its data do not match its checksum"
        return ImageEmbedding(torch.from_numpy(arrays["embeddings"]),
                              torch.from_numpy(arrays["hq_features"]),
                              original_size, input_size), None

    def write(self, key: str, embedding: ImageEmbedding, replace: bool = False) -> None:
        """Store ``embedding`` under ``key`` as a whole entry, unless another writer did.

        Parameters
        ----------
        replace : bool
            Take out what is stored under ``key`` first (an entry found not whole);
            otherwise an entry already there is kept.

        Raises
        ------
        OSError
            The write failed (disk full, no permission); nothing of it is left.
        """
        tmp, target = self._temporary(key), self.root / key
        try:
            write_entry(tmp, self.signature, key, embedding)
            if replace:
                self._move_aside(key)
        except OSError:
            _remove(tmp)
            raise
        try:
            os.rename(tmp, target)
        except OSError:
            _remove(tmp)
            if not os.path.isdir(target):
                raise
            # else another writer's entry got there first, and the first one wins

    # -- internals -----------------------------------------------------------------------
    def _create(self) -> None:
        document = {"zarr_format": 3, "node_type": "group",
                    "attributes": {"signature": self.signature}}
        tmp = self.root / f".tmp-root-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(document, indent=2))
            try:
                os.link(tmp, self.root / "zarr.json")  # fails if another creator was first
            except FileExistsError:
                pass
            except OSError:  # a file system without hard links
                os.replace(tmp, self.root / "zarr.json")
        except OSError as exc:
            raise OutputError(f"cache folder {self.root} cannot be created ({reason(exc)}): "
                              "choose a folder you can write to.") from exc
        finally:
            _remove(tmp)

    def _remove_abandoned(self) -> None:
        """Remove the temporary groups of writers that are gone (best effort)."""
        try:
            paths = [p for p in self.root.iterdir() if p.name.startswith(".tmp-")]
        except OSError:
            return
        now = time.time()
        for path in paths:
            if _abandoned(path, now):
                _remove(path)

    def _temporary(self, key: str) -> Path:
        return self.root / f".tmp-{key}-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def _move_aside(self, key: str) -> None:
        """Take what is under ``key`` out of the way (as a temporary group) and remove it."""
        aside = self._temporary(key)
        try:
            os.rename(self.root / key, aside)
        except FileNotFoundError:  # another writer took it away first
            return
        _remove(aside)


def entry_sha256(signature: dict, key: str, arrays: dict[str, np.ndarray],
                 original_size, input_size) -> str:
    """The checksum stored with an entry.

    Parameters
    ----------
    signature : dict
        The folder's model signature (an entry copied into another model's folder fails).
    key : str
        The entry's key (an entry renamed to another key fails).
    arrays : dict of str to np.ndarray
        ``embeddings`` ``(1, 256, 64, 64)`` and ``hq_features`` ``(1, 32, 256, 256)``.
    original_size, input_size : sequence of int
        ``(H, W)`` each, as in :class:`~napari_hq_sam.predictor.ImageEmbedding`.
    """
    header = {"format": FORMAT, "signature": signature, "key": key,
              "original_size": [int(v) for v in original_size],
              "input_size": [int(v) for v in input_size],
              "arrays": {name: [list(arrays[name].shape), arrays[name].dtype.str]
                         for name in ARRAYS}}
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for name in ARRAYS:
        digest.update(np.ascontiguousarray(arrays[name]).reshape(-1).view(np.uint8))
    return digest.hexdigest()


def write_entry(path: Path, signature: dict, key: str, embedding: ImageEmbedding) -> None:
    """Write ``embedding`` as a whole entry (arrays, file sizes, sha256) into folder ``path``.

    Raises the ``OSError`` of a failed write (disk full, no permission); the caller
    removes what was written.
    """
    import zarr

    arrays = {name: np.ascontiguousarray(getattr(embedding, name).detach().float().numpy())
              for name in ARRAYS}
    group = zarr.open_group(str(path), mode="w")
    for name, data in arrays.items():
        group.create_array(name, shape=data.shape, dtype=data.dtype,
                           chunks=data.shape)[...] = data
    files = {p.relative_to(path).as_posix(): p.stat().st_size
             for p in sorted(path.rglob("*")) if p.is_file() and p.parent != path}
    group.attrs.update({
        "format": FORMAT,
        "original_size": [int(v) for v in embedding.original_size],
        "input_size": [int(v) for v in embedding.input_size],
        "files": files,
        "sha256": entry_sha256(signature, key, arrays, embedding.original_size,
                               embedding.input_size),
    })


def read_folder_signature(root: str | Path) -> dict | None:
    """The signature a cache folder records; None for a new or empty folder.

    Raises
    ------
    InputError
        ``root`` is a file, a folder that is not an embedding cache, or a cache whose
        own ``zarr.json`` cannot be read.
    """
    root = Path(root)
    if os.path.lexists(root) and not root.is_dir():
        raise InputError(f"cache folder {root} is a file, not a folder: give the path of a "
                         "cache folder (a new one is created).")
    try:
        raw = (root / "zarr.json").read_bytes()
    except (FileNotFoundError, NotADirectoryError):  # a new folder (creating it will tell)
        raw = None
    except OSError as exc:
        raise InputError(f"cache folder {root} cannot be read ({reason(exc)}): check its "
                         "permissions or choose another folder.") from exc
    if raw is None:
        try:
            others = root.is_dir() and any(not p.name.startswith(".tmp-")
                                           for p in root.iterdir())
        except OSError as exc:
            raise InputError(f"cache folder {root} cannot be read ({reason(exc)}): check "
                             "its permissions or choose another folder.") from exc
        if others:
            raise InputError(f"cache folder {root} exists but is not an embedding cache: "
                             "choose an empty or new folder.")
        return None
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise InputError(f"cache folder {root} is damaged: its zarr.json cannot be read "
                         f"({reason(exc)}); delete the folder (its embeddings are "
                         "recomputed) or choose another one.") from None
    attrs = document.get("attributes") if isinstance(document, dict) else None
    signature = attrs.get("signature") if isinstance(attrs, dict) else None
    if not isinstance(signature, dict):
        raise InputError(f"cache folder {root} exists but is not an embedding cache (its "
                         "zarr.json names no model): choose an empty or new folder.")
    return signature


def reason(exc: BaseException) -> str:
    """An exception in a few words, for a message (an OS error's own text)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _abandoned(path: Path, now: float) -> bool:
    """Whether a temporary group's writer is gone: a dead process here, or long silence."""
    parts = path.name[len(".tmp-"):].split("-")
    if len(parts) == 4 and parts[1] == _HOST and parts[2].isdigit():
        if not process_alive(int(parts[2])):
            return True
    try:
        members = list(path.rglob("*")) if path.is_dir() and not path.is_symlink() else []
        newest = max(p.lstat().st_mtime for p in [path, *members])
    except OSError:
        return False
    return now - newest > STALE_SECONDS


def _remove(path: Path) -> None:
    """Remove a file or folder if possible (what is left is cleaned when a folder opens)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except OSError:
            pass


def _mismatch_message(root: Path, stored: dict, wanted: dict) -> str:
    diffs = [f"{k}: {_short(stored.get(k))} in the cache vs {_short(wanted.get(k))} now"
             for k in sorted(set(stored) | set(wanted)) if stored.get(k) != wanted.get(k)]
    return (f"cache folder {root} holds embeddings of another model or version "
            f"({'; '.join(diffs)}): use another cache folder or delete this one.")


def _short(value) -> str:
    text = str(value)
    return text[:12] + "…" if len(text) > 16 else text
