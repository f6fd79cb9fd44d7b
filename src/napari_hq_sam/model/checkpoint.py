"""Reading official HQ-SAM checkpoint files safely and with clear errors."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import HQSamError, MissingFileError
from ..model_types import MODEL_TYPES, REGISTRY
from .hq_decoder import HQ_KEY_PREFIXES

# Width of the ViT patch embedding tells the three ViT backbones apart.
_VIT_WIDTH_TO_TYPE = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}


class CheckpointError(HQSamError, ValueError):
    """A checkpoint file cannot be used for the requested model."""


def _download_hint(model_type: str | None) -> str:
    if model_type not in REGISTRY:
        return (f"Get an official HQ-SAM file with `hqsam download <model>` "
                f"({', '.join(MODEL_TYPES)}).")
    return (f"Get the HQ-SAM file {REGISTRY[model_type].filename} with "
            f"`hqsam download {model_type}`.")


def read_state_dict(path: str | Path, model_type: str | None = None
                    ) -> dict[str, torch.Tensor]:
    """Load a checkpoint file as a plain dict of tensors, never running its code.

    Parameters
    ----------
    path : str or Path
        File to read.
    model_type : str, optional
        Backbone the caller expects; names the official file in error messages.

    Raises
    ------
    MissingFileError
        The file does not exist.
    CheckpointError
        The path is a folder, or the file is truncated, not a PyTorch checkpoint, or
        not a dict of tensors.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        name = REGISTRY[model_type].filename if model_type in REGISTRY else None
        which = (f"e.g. {path / name}" if name and (path / name).is_file() else
                 f"the official {model_type} file is {name}" if name else
                 "an official HQ-SAM .pth file")
        raise CheckpointError(f"Checkpoint {path} is a folder, not a file: give the checkpoint "
                              f"file itself ({which}).")
    if not path.is_file():
        raise MissingFileError(
            f"Checkpoint file not found: {path}. Check the path, or {_download_hint(model_type)}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (truncated, corrupt or another kind "
            f"of file; {type(exc).__name__}). Delete it and {_download_hint(model_type)}"
        ) from exc
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{path} does not hold a state dict of tensors, so it is not an HQ-SAM checkpoint. "
            + _download_hint(model_type))
    return state


def detect_model_type(state: dict[str, torch.Tensor]) -> str | None:
    """Backbone a state dict belongs to, or None when it is not recognisable."""
    if "image_encoder.patch_embed.seq.0.c.weight" in state:
        return "vit_tiny"
    proj = state.get("image_encoder.patch_embed.proj.weight")
    if proj is not None:
        return _VIT_WIDTH_TO_TYPE.get(int(proj.shape[0]))
    return None


def check_state_dict(state: dict[str, torch.Tensor], model: torch.nn.Module, model_type: str,
                     path: str | Path) -> None:
    """Raise :class:`CheckpointError` when ``state`` cannot load strictly into ``model``."""
    found = detect_model_type(state)
    if found is not None and found != model_type:
        raise CheckpointError(
            f"{path} holds {found} weights, not {model_type}: choose the model {found}, "
            f"or give the {REGISTRY[model_type].filename} file.")
    expected = set(model.state_dict())
    missing = expected - set(state)
    hq_missing = {k for k in missing if k.startswith(HQ_KEY_PREFIXES)}
    if hq_missing and hq_missing == missing:
        raise CheckpointError(
            f"{path} is a plain SAM checkpoint: it lacks the {len(hq_missing)} HQ-SAM keys "
            f"(mask_decoder.hf_token, hf_mlp, compress_vit_feat, …). {_download_hint(model_type)}")
    unexpected = set(state) - expected
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match the {model_type} HQ-SAM model: {len(missing)} keys missing "
            f"(e.g. {sorted(missing)[:3]}), {len(unexpected)} unexpected "
            f"(e.g. {sorted(unexpected)[:3]}). {_download_hint(model_type)}")
    own = model.state_dict()
    wrong = [k for k in expected if own[k].shape != state[k].shape]
    if wrong:
        k = sorted(wrong)[0]
        raise CheckpointError(
            f"{path} does not match the {model_type} HQ-SAM model: {len(wrong)} tensors have "
            f"another shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}). "
            + _download_hint(model_type))


def load_checkpoint(model: torch.nn.Module, path: str | Path, model_type: str) -> None:
    """Check and load an official HQ-SAM checkpoint strictly into ``model``."""
    state = read_state_dict(path, model_type)
    check_state_dict(state, model, model_type, path)
    model.load_state_dict(state, strict=True)
