"""Official-format checkpoints with random weights, for tests and benchmarks.

No pretrained weights reach the build machines, so tests write their own files in
the official format: a plain ``dict`` of tensors saved with ``torch.save`` whose
keys are exactly those of ``sam_hq_<model_type>.pth``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .model import HQ_KEY_PREFIXES, build_hq_sam


def reference_state_dict(model_type: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """State dict built by the official ``segment_anything_hq`` package when installed.

    Falls back to this project's builder, whose keys are identical (tested). The
    initial weights are drawn from a generator seeded with ``seed`` (the global RNG
    state is restored afterwards), so the same seed gives the same file every run.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            from segment_anything_hq import sam_model_registry
        except ImportError:
            return build_hq_sam(model_type).state_dict()
        return sam_model_registry[model_type]().state_dict()


def perturb_state_dict(state: dict[str, torch.Tensor], seed: int = 0,
                       scale: float = 0.02) -> dict[str, torch.Tensor]:
    """Add noise to every tensor so that each one influences the output.

    Zero-initialised tensors (relative positions, biases, position embeddings)
    would otherwise hide a wrong key mapping. BatchNorm variances stay positive.
    """
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        if not value.is_floating_point():
            out[key] = value + torch.randint(1, 100, value.shape, generator=gen).to(value.dtype)
            continue
        noise = torch.randn(value.shape, generator=gen, dtype=value.dtype)
        if key.endswith("running_var"):
            out[key] = value * (1.0 + 0.5 * torch.rand(value.shape, generator=gen))
        else:
            out[key] = value + scale * noise
    return out


def write_random_checkpoint(path: str | Path, model_type: str, seed: int = 0,
                            drop_hq_keys: bool = False) -> Path:
    """Write an official-format checkpoint with random, perturbed weights.

    Parameters
    ----------
    path : str or Path
        Output file (``.pth``).
    model_type : str
        Backbone whose keys the file holds.
    seed : int
        Seed of the perturbation.
    drop_hq_keys : bool
        Leave out the 25 HQ keys, which makes a plain SAM checkpoint.
    """
    state = perturb_state_dict(reference_state_dict(model_type, seed), seed)
    if drop_hq_keys:
        state = {k: v for k, v in state.items() if not k.startswith(HQ_KEY_PREFIXES)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def with_changed_hq(model, seed: int = 0, scale: float = 0.05):
    """A copy of ``model`` whose HQ tensors moved by ``scale`` x N(0, 1), as training would.

    The base weights are shared in value, not in memory (a deep copy); the same seed
    gives the same change.
    """
    import copy

    changed = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in changed.mask_decoder.hq_parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return changed
