"""Embedding cache: bounded in-memory LRU, optionally backed by a zarr folder on disk.

An entry is keyed by the content hash of the model's uint8 ``(H, W, 3)`` input (so
contrast limits are part of it) and holds an :class:`ImageEmbedding`: the final
embedding ``(1, 256, 64, 64)`` and the HQ feature ``(1, 32, 256, 256)``, float32.

A whole cache belongs to one *signature*: model type, sha256 of the checkpoint,
sha256 of the adapter (if any), encoder precision and package version. A disk
folder (:class:`~.cache_folder.CacheFolder`, where its layout is described) records
its signature when created and refuses any other model.

Every disk entry is verified when read. One that is not whole (a chunk missing or
truncated, flipped bytes, damaged metadata) or that was written before entries had a
checksum is never used: it is a miss, so the caller recomputes the embedding and
:meth:`EmbeddingCache.put` replaces the entry; a :class:`CacheWarning` says so once
per entry (once in all for entries of the older format), and :meth:`EmbeddingCache.report`
sums it up for a run's summary. Entries are written whole or not at all, so a killed
run leaves only whole entries and a rerun reuses them (resume). A write that fails
(disk full, no permission) leaves nothing behind and is said once; the run goes on
with the embedding in memory, and nothing more is written to that folder.
"""

from __future__ import annotations

import hashlib
import threading
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..errors import HQSamWarning, InputError
from ..predictor import ImageEmbedding
from ..weights import file_sha256
from .cache_folder import OUTDATED, CacheFolder, reason


class CacheWarning(HQSamWarning):
    """An on-disk embedding cache had a damaged entry or could not be written; the run goes on."""


def weights_sha256(module: torch.nn.Module) -> str:
    """sha256 of a module's state dict (names and raw bytes), for models without a file."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def model_signature(model, checkpoint: str | Path | None = None,
                    adapter: str | Path | None = None) -> dict[str, str | None]:
    """What an embedding depends on besides the image.

    Parameters
    ----------
    model : HQSam
        The model (its ``model_type`` and ``precision`` are recorded).
    checkpoint : str or Path, optional
        The checkpoint file it was loaded from; None hashes the model's weights.
    adapter : str or Path, optional
        An adapter file loaded into the model.

    Files are identified by :func:`~napari_hq_sam.weights.file_sha256`, which reuses a
    download's verification stamp and hashes any other file once per process.
    """
    return {
        "model_type": model.model_type,
        "checkpoint_sha256": (file_sha256(checkpoint) if checkpoint is not None
                              else weights_sha256(model)),
        "adapter_sha256": None if adapter is None else file_sha256(adapter),
        "precision": getattr(model, "precision", "fp32"),
        "version": __version__,
    }


def image_key(image: np.ndarray) -> str:
    """Content hash of a model input image (shape, dtype and bytes)."""
    image = np.ascontiguousarray(image)
    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"{image.shape}{image.dtype}".encode())
    digest.update(image.data)
    return digest.hexdigest()


class EmbeddingCache:
    """In-memory LRU of embeddings, optionally persisted in a zarr folder.

    Parameters
    ----------
    signature : dict or None
        From :func:`model_signature`; entries of other models are refused. None is
        allowed for a memory-only cache that lives as long as one model.
    max_items : int
        Embeddings kept in memory (about 12 MB each).
    directory : str or Path, optional
        zarr folder for persistent entries (created if missing).

    Attributes
    ----------
    damaged : int
        Disk entries found damaged (each recomputed and replaced when used).
    outdated : int
        Disk entries found without a checksum, of an earlier version (likewise).
    unstored : int
        Embeddings that could not be written to the folder.
    write_error : str or None
        Why the first write failed; after it, nothing more is written.

    Raises
    ------
    InputError
        ``directory`` is a file, a folder that is not an embedding cache, another
        model's cache, or one whose own metadata is damaged.
    OutputError
        ``directory`` cannot be created.
    """

    def __init__(self, signature: dict | None = None, *, max_items: int = 8,
                 directory: str | Path | None = None):
        if signature is None and directory is not None:
            raise InputError("an on-disk embedding cache needs a model signature "
                             "(napari_hq_sam.engine.cache.model_signature).")
        self.signature = None if signature is None else dict(signature)
        self.max_items = int(max_items)
        self.directory = None if directory is None else Path(directory)
        self.damaged = self.outdated = self.unstored = 0
        self.write_error: str | None = None
        self._memory: OrderedDict[str, ImageEmbedding] = OrderedDict()
        self._bad: set[str] = set()  # disk entries found unusable and not replaced yet
        self._lock = threading.Lock()
        self._folder = (None if directory is None
                        else CacheFolder(self.directory, self.signature))

    def get(self, key: str) -> ImageEmbedding | None:
        """The embedding stored under ``key`` (on the CPU), or None (also for a bad entry)."""
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key]
            if self._folder is None or key in self._bad:
                return None
        embedding, problem = self._folder.read(key)
        if problem is not None:
            self._reject(key, problem)
        if embedding is None:
            return None
        with self._lock:
            self._remember(key, embedding)
        return embedding

    def put(self, key: str, embedding: ImageEmbedding) -> None:
        """Store ``embedding`` under ``key`` in memory and, if configured, on disk.

        A disk entry found bad is replaced; a whole one (another writer's) is kept.
        A failed write is said once and leaves nothing behind.
        """
        embedding = embedding.to("cpu")
        with self._lock:
            self._remember(key, embedding)
            if self._folder is None:
                return
            if self.write_error is not None:
                self.unstored += 1
                return
            replace = key in self._bad
        if not replace and self._folder.has(key):
            return
        try:
            self._folder.write(key, embedding, replace)
        except OSError as exc:
            self._write_failed(exc)
            return
        with self._lock:
            self._bad.discard(key)

    def stored_keys(self) -> list[str]:
        """Keys of the whole-looking entries on disk, sorted.

        An entry counts when its metadata reads and its files have their recorded
        sizes (its checksum is verified when it is read); others are reported as in
        :meth:`get` and left out, so they are recomputed.
        """
        if self._folder is None:
            return []
        keys = []
        for key in self._folder.keys():
            with self._lock:
                if key in self._bad:
                    continue
            problem = self._folder.inspect(key)[1]
            if problem is None:
                keys.append(key)
            else:
                self._reject(key, problem)
        return keys

    def report(self) -> str:
        """What went wrong with the folder so far, for a run's summary ('' if nothing).

        E.g. ``"1 damaged entry recomputed; 3 embeddings not stored (No space left on
        device)"``.
        """
        parts = []
        if self.damaged:
            parts.append(f"{_count(self.damaged, 'damaged entry', 'damaged entries')} "
                         "recomputed")
        if self.outdated:
            parts.append(f"{_count(self.outdated, 'entry', 'entries')} without checksum "
                         "(older version) recomputed")
        if self.unstored:
            parts.append(f"{_count(self.unstored, 'embedding', 'embeddings')} not stored "
                         f"({self.write_error})")
        return "; ".join(parts)

    def _remember(self, key: str, embedding: ImageEmbedding) -> None:
        self._memory[key] = embedding
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_items:
            self._memory.popitem(last=False)

    def _reject(self, key: str, problem: str) -> None:
        """Count and report an unusable entry once; it is a miss until replaced."""
        first = False
        with self._lock:
            if key in self._bad:
                return
            self._bad.add(key)
            if problem == OUTDATED:
                self.outdated += 1
                first = self.outdated == 1
            else:
                self.damaged += 1
        if problem != OUTDATED:
            _warn(f"cache {self.directory}: entry {key} is damaged ({problem}); its "
                  "embedding is recomputed and the entry replaced.")
        elif first:
            _warn(f"cache {self.directory}: its entries were written by an older version of "
                  "napari-hq-sam without checksums and cannot be verified; each is recomputed "
                  "and replaced when used.")

    def _write_failed(self, exc: OSError) -> None:
        why = reason(exc)
        with self._lock:
            self.unstored += 1
            first = self.write_error is None
            if first:
                self.write_error = why
        if first:
            _warn(f"cache {self.directory}: embeddings cannot be stored there ({why}); the "
                  "run goes on with them in memory and stores no more in this folder.")


def _warn(message: str) -> None:
    warnings.warn(message, CacheWarning, stacklevel=3)


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"
