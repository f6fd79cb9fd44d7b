"""Embedding cache: bounded in-memory LRU, optionally backed by a zarr folder on disk.

An entry is keyed by the content hash of the model's uint8 ``(H, W, 3)`` input (so
contrast limits are part of it) and holds an :class:`ImageEmbedding`: the final
embedding ``(1, 256, 64, 64)`` and the HQ feature ``(1, 32, 256, 256)``, float32.

A whole cache belongs to one *signature*: model type, sha256 of the checkpoint,
sha256 of the adapter (if any), encoder precision and package version. A disk
folder records its signature when created and refuses any other model.

On disk (zarr v3)::

    CACHE/zarr.json              root group, attributes {"signature": {...}}
    CACHE/<key>/                 one group per slice: embeddings, hq_features arrays,
                                 attributes original_size, input_size

An entry is written to a hidden temporary group and renamed into place when
complete, so a killed run leaves only whole entries; a rerun reuses them (resume).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import uuid
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..errors import InputError
from ..predictor import ImageEmbedding
from ..weights import file_sha256


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
    """

    def __init__(self, signature: dict | None = None, *, max_items: int = 8,
                 directory: str | Path | None = None):
        if signature is None and directory is not None:
            raise InputError("an on-disk embedding cache needs a model signature "
                             "(napari_hq_sam.engine.cache.model_signature).")
        self.signature = None if signature is None else dict(signature)
        self.max_items = int(max_items)
        self.directory = None if directory is None else Path(directory)
        self._memory: OrderedDict[str, ImageEmbedding] = OrderedDict()
        self._lock = threading.Lock()
        if self.directory is not None:
            self._open_directory()

    # -- public --------------------------------------------------------------------------
    def get(self, key: str) -> ImageEmbedding | None:
        """The embedding stored under ``key`` (on the CPU), or None."""
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key]
        embedding = self._read(key) if self.directory is not None else None
        if embedding is None:
            return None
        with self._lock:
            self._remember(key, embedding)
        return embedding

    def put(self, key: str, embedding: ImageEmbedding) -> None:
        """Store ``embedding`` under ``key`` in memory and, if configured, on disk."""
        embedding = embedding.to("cpu")
        with self._lock:
            self._remember(key, embedding)
        if self.directory is not None and not (self.directory / key).exists():
            self._write(key, embedding)

    def stored_keys(self) -> list[str]:
        """Keys of complete entries on disk."""
        if self.directory is None:
            return []
        return sorted(p.name for p in self.directory.iterdir()
                      if p.is_dir() and not p.name.startswith(".")
                      and (p / "zarr.json").is_file())

    # -- internals -----------------------------------------------------------------------
    def _remember(self, key: str, embedding: ImageEmbedding) -> None:
        self._memory[key] = embedding
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_items:
            self._memory.popitem(last=False)

    def _open_directory(self) -> None:
        import zarr

        root = self.directory
        if (root / "zarr.json").is_file():
            stored = dict(zarr.open_group(str(root), mode="r").attrs.get("signature", {}))
            if stored != self.signature:
                raise InputError(_mismatch_message(root, stored, self.signature))
        elif root.exists() and any(root.iterdir()):
            raise InputError(f"cache folder {root} exists but is not an embedding cache: "
                             "choose an empty or new folder.")
        else:
            zarr.open_group(str(root), mode="w").attrs["signature"] = self.signature

    def _read(self, key: str) -> ImageEmbedding | None:
        import zarr

        path = self.directory / key
        if not (path / "zarr.json").is_file():
            return None
        group = zarr.open_group(str(path), mode="r")
        return ImageEmbedding(torch.from_numpy(np.asarray(group["embeddings"][...])),
                              torch.from_numpy(np.asarray(group["hq_features"][...])),
                              tuple(group.attrs["original_size"]),
                              tuple(group.attrs["input_size"]))

    def _write(self, key: str, embedding: ImageEmbedding) -> None:
        import zarr

        tmp = self.directory / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        group = zarr.open_group(str(tmp), mode="w")
        for name in ("embeddings", "hq_features"):
            data = getattr(embedding, name).numpy().astype(np.float32, copy=False)
            group.create_array(name, shape=data.shape, dtype=data.dtype,
                               chunks=data.shape)[...] = data
        group.attrs.update({"original_size": list(embedding.original_size),
                            "input_size": list(embedding.input_size)})
        try:
            os.rename(tmp, self.directory / key)
        except OSError:  # another worker stored the same slice first
            shutil.rmtree(tmp, ignore_errors=True)


def _mismatch_message(root: Path, stored: dict, wanted: dict) -> str:
    diffs = [f"{k}: {_short(stored.get(k))} in the cache vs {_short(wanted.get(k))} now"
             for k in sorted(set(stored) | set(wanted)) if stored.get(k) != wanted.get(k)]
    return (f"cache folder {root} holds embeddings of another model or version "
            f"({'; '.join(diffs)}): use another cache folder or delete this one.")


def _short(value) -> str:
    text = str(value)
    return text[:12] + "…" if len(text) > 16 else text
