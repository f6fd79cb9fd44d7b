"""Adapter files: the trained HQ tensors alone, tied to the base checkpoint they fit.

An adapter is a ``torch.save`` of a plain dict (readable with ``weights_only=True``)::

    {"format": "napari-hq-sam-adapter", "version": 2,
     "model_type": "vit_b",
     "base_sha256": "<sha256 of the base checkpoint file>",
     "state_dict": {"mask_decoder.hf_token.weight": tensor, ...},   # the 25 HQ tensors
     "tensors_sha256": "<tensors_digest(state_dict)>",
     "training": {...settings...}, "metrics": {...}}

Everything else of the model comes from the base checkpoint, so an adapter is a
few MB (about 1.8 MB for vit_tiny, 6.4 MB for vit_h).

Integrity. ``torch.load`` does not check the CRC-32 that its zip archive stores for
every member, so a damaged adapter would load and silently change the masks. A file
is therefore read only when every member's CRC-32 matches and, from version 2 on,
when :func:`tensors_digest` of the loaded tensors equals the recorded one (this also
catches tensors edited and saved again). Files of version 1 (no digest) are still
read: the zip CRC-32s, computed by the writer over the same bytes, catch the damage
the digest is for (flipped bytes, truncation), and they were written by
napari-hq-sam 0.1.0, whose users should not have to train again.

Files are written whole or not at all: to a hidden temporary file in the target's
folder (``.NAME.partial-XXXXXXXX``), flushed to disk, then renamed over the target.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tempfile
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import HQSamError, MissingFileError, OutputError
from .model import HQ_KEY_PREFIXES, HQ_MODULE_NAMES, HQSam
from .weights import cached_checkpoint, file_sha256

ADAPTER_FORMAT = "napari-hq-sam-adapter"
ADAPTER_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: no tensors_sha256, verified by the zip CRC-32s alone

# A temporary file older than this is left over from a killed writer (a write takes
# well under a second): the next save to the same target removes it.
_STALE_PARTIAL_SECONDS = 600.0

_WHAT_TO_DO = "copy it again from where it came from, or train a new one with `hqsam train`"


class AdapterError(HQSamError, ValueError):
    """An adapter file is unreadable, damaged, or does not fit the model it is loaded into."""


@dataclass
class Adapter:
    """Contents of an adapter file (see the module docstring)."""

    model_type: str
    base_sha256: str
    state_dict: dict[str, torch.Tensor]
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    version: int = ADAPTER_VERSION


def hq_state_dict(model: HQSam) -> dict[str, torch.Tensor]:
    """The HQ tensors of ``model`` (25 keys, ``mask_decoder.<hq module>.…``), on the CPU."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()
            if k.startswith(HQ_KEY_PREFIXES)}


def tensors_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 of named tensors: names, dtypes, shapes and bytes, in name order.

    Parameters
    ----------
    state_dict : dict of str to torch.Tensor
        Tensors on any device.

    Returns
    -------
    str
        Hex digest. The bytes are taken little-endian, so the digest does not depend
        on the machine that computes it.
    """
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        header = f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0"
        digest.update(header.encode())
        raw = tensor.reshape(-1).view(torch.uint8).numpy()
        if sys.byteorder == "big" and tensor.element_size() > 1:
            raw = raw.reshape(-1, tensor.element_size())[:, ::-1]
        digest.update(raw.tobytes())
    return digest.hexdigest()


def _base_hash(base_checkpoint: str | Path | None, model_type: str) -> str:
    """sha256 of the base checkpoint (:func:`~napari_hq_sam.weights.file_sha256`)."""
    if base_checkpoint is None:
        base_checkpoint = cached_checkpoint(model_type)
        if base_checkpoint is None:
            raise AdapterError(
                f"Give the base checkpoint the adapter was trained on (base_checkpoint=...); "
                f"no official {model_type} file is in the cache.")
    if not Path(base_checkpoint).expanduser().is_file():
        raise MissingFileError(f"Base checkpoint not found: {base_checkpoint}.")
    return file_sha256(base_checkpoint)


# -- writing ----------------------------------------------------------------------------------

def check_adapter_output(path: str | Path, overwrite: bool = False) -> Path:
    """Refuse an adapter output that cannot be written, before any work is done.

    The target must not be a folder, must not exist unless ``overwrite``, and its
    folder must exist or be creatable in a writable folder. Nothing is created
    (a probe file in the nearest existing folder is removed at once).

    Parameters
    ----------
    path : str or Path
        The adapter file to write.
    overwrite : bool
        An existing file may be replaced.

    Returns
    -------
    Path
        ``path`` with ``~`` expanded.

    Raises
    ------
    OutputError
        What is wrong, and what to do.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputError(f"adapter output {path} is a folder: give a file name in it, e.g. "
                          f"{path / 'adapter.pt'}.")
    if path.exists() or path.is_symlink():
        if not path.is_file():
            raise OutputError(f"adapter output {path} exists and is not a regular file: "
                              "choose another file name.")
        if not overwrite:
            raise OutputError(f"{path} exists; use --overwrite to replace it, or choose "
                              "another file name.")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"cannot write adapter {path}: {folder} is a file, not a folder; "
                          "choose another file name.")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.partial-probe-", dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write adapter {path}: folder {folder} is not writable "
                          f"({exc.strerror or exc}); choose another file name.") from exc
    os.close(fd)
    os.unlink(probe)
    return path


def save_adapter(model: HQSam, path: str | Path, *, base_checkpoint: str | Path | None,
                 training: dict | None = None, metrics: dict | None = None,
                 overwrite: bool = True) -> Path:
    """Write the HQ tensors of ``model`` to an adapter file, whole or not at all.

    Parameters
    ----------
    model : HQSam
        Model whose HQ branch was trained.
    path : str or Path
        Output file (``.pt`` by convention); parent folders are created.
    base_checkpoint : str or Path or None
        The checkpoint the model was loaded from; its sha256 goes into the file.
        None means the official cached file of ``model.model_type``.
    training, metrics : dict, optional
        Training settings and scores to keep with the weights (plain types only).
    overwrite : bool
        Replace an existing file (default). False refuses it, also when it appeared
        after :func:`check_adapter_output` was called.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    OutputError
        The file cannot be written (a folder, exists, unwritable folder, disk full);
        an existing file is then unchanged and no temporary file is left.
    AdapterError
        The HQ tensors hold NaN or infinite values.
    """
    path = check_adapter_output(path, overwrite)
    state = hq_state_dict(model)
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise AdapterError(f"not writing {path}: the model's HQ tensors hold NaN or infinite "
                           f"values ({bad[0]}); train again with a lower learning rate.")
    payload = {
        "format": ADAPTER_FORMAT,
        "version": ADAPTER_VERSION,
        "model_type": model.model_type,
        "base_sha256": _base_hash(base_checkpoint, model.model_type),
        "state_dict": state,
        "tensors_sha256": tensors_digest(state),
        "training": dict(training or {}),
        "metrics": dict(metrics or {}),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    created = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, buffer.getbuffer(), overwrite)
    except BaseException as exc:
        for folder in created:  # deepest first; only the folders made here, if still empty
            try:
                folder.rmdir()
            except OSError:
                break
        if isinstance(exc, OSError) and not isinstance(exc, HQSamError):
            raise OutputError(f"cannot write adapter {path}: {exc.strerror or exc}; free some "
                              "space or choose another file name.") from exc
        raise
    return path


def _write_atomically(path: Path, data, overwrite: bool) -> None:
    """``data`` to a temporary sibling, fsync, rename onto ``path``; no temporary left."""
    _remove_stale_partials(path)
    tmp = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if not overwrite and path.exists():
            raise OutputError(f"{path} appeared while the adapter was being made: not replacing "
                              "it; use --overwrite, or choose another file name.")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_stale_partials(path: Path) -> None:
    """Delete temporary files of ``path`` left by a writer that was killed."""
    now = time.time()
    for old in path.parent.glob(f".{path.name}.partial-*"):
        try:
            if now - old.stat().st_mtime > _STALE_PARTIAL_SECONDS:
                old.unlink()
        except OSError:
            pass


# -- reading ----------------------------------------------------------------------------------

def _check_archive(path: Path) -> None:
    """Refuse a file that is not a whole, undamaged adapter archive, before unpickling it.

    The pickle member is read first (cheap, and it names the format), then every
    member's CRC-32 is checked.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise AdapterError(f"{path} is not an adapter file (not a PyTorch archive): give "
                                   "the .pt file written by `hqsam train`.")
            if ADAPTER_FORMAT.encode() not in archive.read(pickles[0]):
                raise AdapterError(
                    f"{path} is not a napari-hq-sam adapter file (no '{ADAPTER_FORMAT}' marker);"
                    " a full checkpoint goes to --checkpoint instead.")
            damaged = archive.testzip()
    except zipfile.BadZipFile as exc:
        if "CRC" in str(exc):
            damaged = str(exc)
        else:
            raise AdapterError(f"{path} is not a readable adapter file (not a whole zip archive: "
                               f"cut short, damaged, or another kind of file): {_WHAT_TO_DO}."
                               ) from exc
    except HQSamError:
        raise
    except Exception as exc:  # any other failure to parse untrusted bytes
        raise AdapterError(f"{path} is not a readable adapter file ({exc}): {_WHAT_TO_DO}.") \
            from exc
    if damaged is not None:
        raise AdapterError(f"{path} is damaged (its data fail their CRC-32 check at "
                           f"{damaged}): {_WHAT_TO_DO}.")


def read_adapter(path: str | Path) -> Adapter:
    """Read an adapter file safely (``weights_only=True``) and verify it.

    Parameters
    ----------
    path : str or Path
        A file written by :func:`save_adapter`.

    Returns
    -------
    Adapter

    Raises
    ------
    MissingFileError
        No such file.
    AdapterError
        Not an adapter file, damaged (CRC-32 or tensors checksum mismatch), an
        unknown format version, or tensors that are not the HQ modules' or not finite.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise AdapterError(f"adapter {path} is a folder: give the .pt file written by "
                           "`hqsam train`.")
    if not path.is_file():
        raise MissingFileError(f"Adapter file not found: {path}.")
    _check_archive(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure to unpickle untrusted bytes: not an adapter
        raise AdapterError(f"{path} is not a readable adapter file ({type(exc).__name__}): "
                           f"{_WHAT_TO_DO}.") from exc
    if not isinstance(data, dict) or data.get("format") != ADAPTER_FORMAT:
        raise AdapterError(f"{path} is not a napari-hq-sam adapter file (no '{ADAPTER_FORMAT}' "
                           "marker); a full checkpoint goes to --checkpoint instead.")
    version = data.get("version")
    if version not in READABLE_VERSIONS:
        raise AdapterError(f"{path} has adapter format version {version}; this napari-hq-sam "
                           f"reads versions {', '.join(map(str, READABLE_VERSIONS))}: update "
                           "napari-hq-sam, or train the adapter again with this one.")
    state = data.get("state_dict")
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and k.startswith(HQ_KEY_PREFIXES) and isinstance(v, torch.Tensor)
            for k, v in state.items()):
        raise AdapterError(f"{path} must hold only HQ tensors ({', '.join(HQ_MODULE_NAMES)}).")
    model_type, base = data.get("model_type"), data.get("base_sha256")
    if not isinstance(model_type, str) or not isinstance(base, str):
        raise AdapterError(f"{path} lacks its model type or base checkpoint hash: "
                           f"{_WHAT_TO_DO}.")
    if version >= 2:
        recorded = data.get("tensors_sha256")
        if not isinstance(recorded, str) or tensors_digest(state) != recorded:
            raise AdapterError(f"{path} is damaged or was altered (its tensors do not match "
                               f"their recorded sha256): {_WHAT_TO_DO}.")
    for key, value in state.items():
        if value.is_floating_point() and not bool(value.isfinite().all()):
            raise AdapterError(f"{path} holds NaN or infinite values ({key}): train the "
                               "adapter again with a lower learning rate.")
    training, metrics = data.get("training", {}), data.get("metrics", {})
    return Adapter(model_type, base, state, training if isinstance(training, dict) else {},
                   metrics if isinstance(metrics, dict) else {}, version)


def check_adapter(path: str | Path, model_type: str,
                  base_checkpoint: str | Path | None = None) -> Adapter:
    """Verify an adapter for a model before the model loads (read, type, base checkpoint).

    The base checkpoint is compared when it is given, or when the official file of
    ``model_type`` is already cached; otherwise :func:`load_adapter` compares it later.

    Returns
    -------
    Adapter
        The file's contents.

    Raises
    ------
    MissingFileError, AdapterError
        As :func:`read_adapter`, or the adapter fits another model type or checkpoint.
    """
    adapter = read_adapter(path)
    _check_fits(adapter, path, model_type)
    if base_checkpoint is not None or cached_checkpoint(model_type) is not None:
        _check_base(adapter, path, base_checkpoint, model_type)
    return adapter


def _check_fits(adapter: Adapter, path, model_type: str) -> None:
    if adapter.model_type != model_type:
        raise AdapterError(f"{path} was trained for {adapter.model_type}, not "
                           f"{model_type}: load it on a {adapter.model_type} model.")


def _check_base(adapter: Adapter, path, base_checkpoint, model_type: str) -> None:
    actual = _base_hash(base_checkpoint, model_type)
    if actual != adapter.base_sha256:
        raise AdapterError(
            f"{path} was trained on another base checkpoint (sha256 "
            f"{adapter.base_sha256[:12]}…) than the one given ({actual[:12]}…): use the "
            "checkpoint it was trained on.")


def load_adapter(model: HQSam, path: str | Path, *, base_checkpoint: str | Path | None = None,
                 check_base: bool = True) -> Adapter:
    """Load an adapter's HQ tensors into ``model`` after checking that it fits.

    Parameters
    ----------
    model : HQSam
        Model built from the base checkpoint the adapter was trained on.
    path : str or Path
        Adapter file written by :func:`save_adapter`.
    base_checkpoint : str or Path, optional
        The checkpoint file ``model`` was loaded from; its sha256 must equal the
        adapter's. None means the official cached file of ``model.model_type``.
    check_base : bool
        Skip the hash check when False (the model type is still checked).

    Returns
    -------
    Adapter
        The file's contents (settings and metrics included).

    Raises
    ------
    AdapterError
        Damaged file, wrong model type, another base checkpoint, or
        missing/extra/mis-shaped tensors; ``model`` is then unchanged.
    """
    adapter = read_adapter(path)
    _check_fits(adapter, path, model.model_type)
    if check_base:
        _check_base(adapter, path, base_checkpoint, model.model_type)
    own = hq_state_dict(model)
    if set(own) != set(adapter.state_dict) or any(
            own[k].shape != v.shape for k, v in adapter.state_dict.items()):
        raise AdapterError(f"{path} does not match the HQ modules of the {model.model_type} "
                           "model (keys or shapes differ).")
    device = next(model.parameters()).device
    with torch.no_grad():
        params = dict(model.named_parameters())
        params.update(dict(model.named_buffers()))
        for key, value in adapter.state_dict.items():
            params[key].copy_(value.to(device))
    return adapter
