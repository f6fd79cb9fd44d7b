"""What a checkpoint file is: where the official ones come from and how a file is identified.

- the official files (:data:`REGISTRY`, kept in the torch-free ``model_types``), a
  local cache of them and verified downloads;
- :func:`file_sha256`, the content hash every consumer records (embedding-cache
  signatures, adapter base checks), reusing the stamp a verified download wrote;
- :func:`checkpoint_model_type`, the backbone of a local file.

A verified download ``<file>`` is accompanied by ``<file>.verified`` holding
``"<sha256 hex> <size in bytes>"``; the stamp is trusted while the size matches.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from .errors import HQSamError, MissingFileError
from .model.build import check_model_type
from .model.checkpoint import CheckpointError, detect_model_type, read_state_dict
from .model_types import MODEL_TYPES, REGISTRY, CheckpointFile

__all__ = [
    "REGISTRY",
    "CheckpointFile",
    "DownloadError",
    "cache_dir",
    "cached_checkpoint",
    "checkpoint_model_type",
    "checkpoint_url",
    "download_checkpoint",
    "file_sha256",
]

DEFAULT_ENDPOINT = "https://huggingface.co"
REPOSITORY = "lkeab/hq-sam"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class DownloadError(HQSamError, RuntimeError):
    """A checkpoint could not be downloaded or did not verify; nothing usable was kept.

    ``model_type`` names the backbone whose file was wanted (None when unknown).
    """

    def __init__(self, message: str, model_type: str | None = None):
        super().__init__(message)
        self.model_type = model_type


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's content, hex, reading the file at most once per process.

    A download stamp ``<file>.verified`` whose size matches the file gives the hash
    without reading the file. Otherwise the file is hashed once per (resolved path,
    size, modification time in ns): a file rewritten in place is hashed again.

    Parameters
    ----------
    path : str or Path
        The file (a checkpoint or an adapter).

    Raises
    ------
    MissingFileError
        The file does not exist.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise MissingFileError(f"File not found: {path}.")
    stat = path.stat()
    stamped = _read_stamp(path)
    if stamped is not None and stamped[1] == stat.st_size:
        return stamped[0]
    return _hash_once(str(path), stat.st_size, stat.st_mtime_ns)


def checkpoint_model_type(path: str | Path) -> str:
    """Backbone of a local checkpoint file: ``vit_tiny``, ``vit_b``, ``vit_l`` or ``vit_h``.

    An official file name (``sam_hq_vit_b.pth`` …) answers without reading the file;
    any other file is read (never running its code) and told apart by its keys.

    Raises
    ------
    MissingFileError
        The file does not exist.
    CheckpointError
        The file is not a checkpoint, or not one of a known backbone.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"Checkpoint file not found: {path}.")
    for model_type, entry in REGISTRY.items():
        if path.name == entry.filename:
            return model_type
    found = detect_model_type(read_state_dict(path))
    if found is None:
        raise CheckpointError(f"{path} is not an HQ-SAM checkpoint of a known backbone "
                              f"({', '.join(MODEL_TYPES)}).")
    return found


def cache_dir() -> Path:
    """Folder holding downloaded checkpoints (``NAPARI_HQ_SAM_CACHE`` overrides)."""
    override = os.environ.get("NAPARI_HQ_SAM_CACHE")
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("napari-hq-sam"))


def checkpoint_url(model_type: str) -> str:
    """Download address of the official file, honouring ``HF_ENDPOINT``."""
    entry = REGISTRY[check_model_type(model_type)]
    endpoint = os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")
    return f"{endpoint}/{REPOSITORY}/resolve/{entry.revision}/{entry.filename}"


def cached_checkpoint(model_type: str) -> Path | None:
    """Path of the verified file in the cache, or None when it is not there."""
    entry = REGISTRY[check_model_type(model_type)]
    path = cache_dir() / entry.filename
    if not path.is_file():
        return None
    stamped = _read_stamp(path)
    if stamped is None or stamped[1] != path.stat().st_size:
        return None
    return path


class _CallbackBar:
    """The tqdm-like object pooch updates, forwarding ``(bytes done, bytes total)``."""

    def __init__(self, report: Callable[[int, int], None]):
        self.report, self.total, self.n = report, 0, 0

    def update(self, count: int) -> None:
        self.n += int(count)
        self.report(min(self.n, self.total or self.n), self.total or self.n)

    def reset(self) -> None:
        self.n = 0

    def close(self) -> None:
        """Nothing to release."""


def download_checkpoint(model_type: str,
                        progress: bool | Callable[[int, int], None] = True) -> Path:
    """Return the path of the official checkpoint, downloading it on first use.

    The file goes to :func:`cache_dir`. Its size and sha256 are checked against
    what the server announces (``X-Linked-Etag``/``X-Linked-Size``, as the
    Hugging Face hub sends) and against what this package knows of the file; a
    file that does not match is deleted and never used.

    Parameters
    ----------
    model_type : str
        ``vit_tiny``, ``vit_b``, ``vit_l`` or ``vit_h``.
    progress : bool or callable
        True shows a progress bar on stderr; a callable is called as
        ``progress(bytes done, bytes total)`` as the file arrives (the widget's bar).

    Raises
    ------
    DownloadError
        No network, an HTTP error, or a file that does not verify.
    """
    cached = cached_checkpoint(model_type)
    if cached is not None:
        return cached
    import pooch
    import requests

    entry = REGISTRY[model_type]
    url = checkpoint_url(model_type)
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / entry.filename
    for stale in (target, _stamp(target)):  # an unverified leftover is never reused
        stale.unlink(missing_ok=True)
    try:
        sha256, size = _announced_content(url, requests)
    except requests.RequestException as exc:
        raise DownloadError(_network_hint(model_type, url, exc), model_type) from exc
    _check_known(entry, sha256, size, url)
    bar = _CallbackBar(progress) if callable(progress) else bool(progress)
    try:
        pooch.retrieve(url, known_hash=f"sha256:{sha256}" if sha256 else None,
                       fname=entry.filename, path=folder,
                       downloader=pooch.HTTPDownloader(progressbar=bar, timeout=60))
    except requests.RequestException as exc:
        raise DownloadError(_network_hint(model_type, url, exc), model_type) from exc
    except ValueError as exc:  # pooch: hash mismatch; it has already deleted the file
        target.unlink(missing_ok=True)
        raise DownloadError(f"The file downloaded from {url} does not match its announced "
                            f"sha256 and was deleted. Try again later or use another "
                            f"HF_ENDPOINT.") from exc
    _verify_file(target, entry, sha256, size, url)
    return target


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _read_stamp(path: Path) -> tuple[str, int] | None:
    """(sha256, size) recorded by a verified download of ``path``, or None."""
    try:
        parts = _stamp(path).read_text().split()
    except OSError:
        return None
    if len(parts) != 2 or not _SHA256.match(parts[0]) or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


@lru_cache(maxsize=64)
def _hash_once(path: str, size: int, mtime_ns: int) -> str:
    """:func:`_digest` memoised; ``size`` and ``mtime_ns`` only key the memo."""
    return _digest(Path(path))


def _digest(path: Path) -> str:
    """sha256 hex digest of a file, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _announced_content(url: str, requests) -> tuple[str | None, int | None]:
    """(sha256, size) the server announces for ``url``, each None when not sent."""
    response = requests.head(url, allow_redirects=False, timeout=30)
    if response.is_redirect:  # the hub answers with a redirect carrying the linked headers
        headers = response.headers
    else:
        response.raise_for_status()
        headers = response.headers
    etag = (headers.get("X-Linked-Etag") or headers.get("ETag") or "").strip('W/"')
    size = headers.get("X-Linked-Size") or (None if response.is_redirect
                                            else headers.get("Content-Length"))
    return (etag if _SHA256.match(etag) else None), (int(size) if size else None)


def _check_known(entry: CheckpointFile, sha256, size, url) -> None:
    if sha256 and entry.sha256_prefix and not sha256.startswith(entry.sha256_prefix):
        raise DownloadError(f"{url} announces sha256 {sha256[:12]}…, not the official "
                            f"{entry.sha256_prefix}…: refusing an unexpected file.")
    if size and entry.size and size != entry.size:
        raise DownloadError(f"{url} announces {size} bytes, not the official {entry.size}: "
                            f"refusing an unexpected file.")


def _verify_file(target: Path, entry: CheckpointFile, sha256, size, url) -> None:
    """Check size and hash of a finished download; delete it when anything is off."""
    actual, actual_size = _digest(target), target.stat().st_size
    problems = []
    if sha256 and actual != sha256:
        problems.append(f"sha256 {actual[:12]}… instead of {sha256[:12]}…")
    if entry.sha256_prefix and not actual.startswith(entry.sha256_prefix):
        problems.append(f"sha256 {actual[:12]}… is not the official {entry.sha256_prefix}…")
    expected_size = size or entry.size
    if expected_size and actual_size != expected_size:
        problems.append(f"{actual_size} bytes instead of {expected_size}")
    if not (sha256 or entry.sha256_prefix):
        problems.append("no hash to check it against (the server sent none)")
    if problems:
        target.unlink(missing_ok=True)
        raise DownloadError(f"The file downloaded from {url} was deleted: {'; '.join(problems)}.")
    _stamp(target).write_text(f"{actual} {actual_size}\n")


def _network_hint(model_type: str, url: str, exc: Exception) -> str:
    return (f"Could not download the {model_type} checkpoint from {url} ({type(exc).__name__}: "
            f"{exc}). Without network, fetch {REGISTRY[model_type].filename} elsewhere and give "
            f"its path (--checkpoint), or set HF_ENDPOINT to a reachable mirror.")
