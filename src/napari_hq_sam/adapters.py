"""Adapter files: the trained HQ tensors alone, tied to the base checkpoint they fit.

An adapter is a ``torch.save`` of a plain dict (readable with ``weights_only=True``)::

    {"format": "napari-hq-sam-adapter", "version": 1,
     "model_type": "vit_b",
     "base_sha256": "<sha256 of the base checkpoint file>",
     "state_dict": {"mask_decoder.hf_token.weight": tensor, ...},   # the 25 HQ tensors
     "training": {...settings...}, "metrics": {...}}

Everything else of the model comes from the base checkpoint, so an adapter is a
few MB (about 1.8 MB for vit_tiny, 6.4 MB for vit_h).
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import HQSamError, MissingFileError
from .model import HQ_KEY_PREFIXES, HQ_MODULE_NAMES, HQSam
from .weights import cached_checkpoint, file_sha256

ADAPTER_FORMAT = "napari-hq-sam-adapter"
ADAPTER_VERSION = 1


class AdapterError(HQSamError, ValueError):
    """An adapter file is unreadable or does not fit the model it is loaded into."""


@dataclass
class Adapter:
    """Contents of an adapter file (see the module docstring)."""

    model_type: str
    base_sha256: str
    state_dict: dict[str, torch.Tensor]
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


def hq_state_dict(model: HQSam) -> dict[str, torch.Tensor]:
    """The HQ tensors of ``model`` (25 keys, ``mask_decoder.<hq module>.…``), on the CPU."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()
            if k.startswith(HQ_KEY_PREFIXES)}


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


def save_adapter(model: HQSam, path: str | Path, *, base_checkpoint: str | Path | None,
                 training: dict | None = None, metrics: dict | None = None) -> Path:
    """Write the HQ tensors of ``model`` to an adapter file.

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

    Returns
    -------
    Path
        The written file.
    """
    payload = {
        "format": ADAPTER_FORMAT,
        "version": ADAPTER_VERSION,
        "model_type": model.model_type,
        "base_sha256": _base_hash(base_checkpoint, model.model_type),
        "state_dict": hq_state_dict(model),
        "training": dict(training or {}),
        "metrics": dict(metrics or {}),
    }
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def read_adapter(path: str | Path) -> Adapter:
    """Read an adapter file safely (``weights_only=True``) and check its structure."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"Adapter file not found: {path}.")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise AdapterError(f"{path} is not a readable adapter file ({type(exc).__name__}).") \
            from exc
    if not isinstance(data, dict) or data.get("format") != ADAPTER_FORMAT:
        raise AdapterError(f"{path} is not a napari-hq-sam adapter file (no '{ADAPTER_FORMAT}' "
                           "marker); a full checkpoint goes to --checkpoint instead.")
    if data.get("version") != ADAPTER_VERSION:
        raise AdapterError(f"{path} has adapter format version {data.get('version')}; this "
                           f"napari-hq-sam reads version {ADAPTER_VERSION}.")
    state = data.get("state_dict")
    if not isinstance(state, dict) or not state or not all(
            k.startswith(HQ_KEY_PREFIXES) and isinstance(v, torch.Tensor)
            for k, v in state.items()):
        raise AdapterError(f"{path} must hold only HQ tensors ({', '.join(HQ_MODULE_NAMES)}).")
    return Adapter(data["model_type"], data["base_sha256"], state,
                   data.get("training", {}), data.get("metrics", {}))


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
        Wrong model type, another base checkpoint, or missing/extra/mis-shaped tensors.
    """
    adapter = read_adapter(path)
    if adapter.model_type != model.model_type:
        raise AdapterError(f"{path} was trained for {adapter.model_type}, not "
                           f"{model.model_type}: load it on a {adapter.model_type} model.")
    if check_base:
        actual = _base_hash(base_checkpoint, model.model_type)
        if actual != adapter.base_sha256:
            raise AdapterError(
                f"{path} was trained on another base checkpoint (sha256 "
                f"{adapter.base_sha256[:12]}…) than the one given ({actual[:12]}…): use the "
                "checkpoint it was trained on.")
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
