"""Where checkpoints come from: the official files, a local cache, verified downloads."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .model.build import check_model_type

DEFAULT_ENDPOINT = "https://huggingface.co"
REPOSITORY = "lkeab/hq-sam"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class CheckpointFile:
    """One official file: name, pinned revision, and what is known of its content."""

    filename: str
    revision: str
    size: int | None  # bytes, when known
    sha256_prefix: str | None  # leading hex digits of the sha256, when known


REGISTRY = {
    "vit_tiny": CheckpointFile("sam_hq_vit_tiny.pth", "a3a77cd0a2e5e50eaa76faccf61b964732d9b35f",
                               42_526_881, "0f32c075"),
    "vit_b": CheckpointFile("sam_hq_vit_b.pth", "67ab82412bc794d5ce2e9799b8b6a3c0a8cfe1d2",
                            379_335_069, "14a9d662"),
    "vit_l": CheckpointFile("sam_hq_vit_l.pth", "67ab82412bc794d5ce2e9799b8b6a3c0a8cfe1d2",
                            None, None),
    "vit_h": CheckpointFile("sam_hq_vit_h.pth", "67ab82412bc794d5ce2e9799b8b6a3c0a8cfe1d2",
                            2_570_940_653, "a7ac14a0"),
}


class DownloadError(RuntimeError):
    """A checkpoint could not be downloaded or did not verify; nothing usable was kept."""


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
    if not path.is_file() or not _stamp(path).is_file():
        return None
    if path.stat().st_size != int(_stamp(path).read_text().split()[1]):
        return None
    return path


def download_checkpoint(model_type: str, progress: bool = True) -> Path:
    """Return the path of the official checkpoint, downloading it on first use.

    The file goes to :func:`cache_dir`. Its size and sha256 are checked against
    what the server announces (``X-Linked-Etag``/``X-Linked-Size``, as the
    Hugging Face hub sends) and against what this package knows of the file; a
    file that does not match is deleted and never used.

    Parameters
    ----------
    model_type : str
        ``vit_tiny``, ``vit_b``, ``vit_l`` or ``vit_h``.
    progress : bool
        Show a progress bar on stderr.

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
        raise DownloadError(_network_hint(model_type, url, exc)) from exc
    _check_known(entry, sha256, size, url)
    try:
        pooch.retrieve(url, known_hash=f"sha256:{sha256}" if sha256 else None,
                       fname=entry.filename, path=folder,
                       downloader=pooch.HTTPDownloader(progressbar=progress, timeout=60))
    except requests.RequestException as exc:
        raise DownloadError(_network_hint(model_type, url, exc)) from exc
    except ValueError as exc:  # pooch: hash mismatch; it has already deleted the file
        target.unlink(missing_ok=True)
        raise DownloadError(f"The file downloaded from {url} does not match its announced "
                            f"sha256 and was deleted. Try again later or use another "
                            f"HF_ENDPOINT.") from exc
    _verify_file(target, entry, sha256, size, url)
    return target


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


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
    digest = hashlib.sha256()
    with open(target, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    actual, actual_size = digest.hexdigest(), target.stat().st_size
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
