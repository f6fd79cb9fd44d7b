"""Settings of HQ-branch training, with the paper's values where they apply."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import InputError


@dataclass
class TrainingConfig:
    """How to train the HQ branch (``hf_token``, ``hf_mlp`` and the three fusion modules).

    The paper trains 12 epochs of HQSeg-44K at batch 32 on 8 GPUs; here a run is a
    number of steps, each on one image with ``batch_size`` of its objects.
    """

    steps: int = 300  # optimiser steps
    batch_size: int = 4  # objects (prompts) per step, all from one image
    lr: float = 1e-3  # Adam, no weight decay (the paper)
    lr_drop_at: float = 10 / 12  # ×0.1 after this fraction of the steps (paper: epoch 10 of 12)
    flip: bool = True  # also train on the horizontally flipped images (features cached too)
    prompt_kinds: tuple[str, ...] = ("box", "points", "mask")  # one per object, uniformly
    n_points: int = 10  # foreground points of a "points" prompt (the paper: 10)
    mask_noise_scale: int = 8  # noise region of a "mask" prompt: |mask - up(down(mask, /8))|
    mask_prompt_logit: float = 10.0  # a "mask" prompt is ±this logit (fg +, bg -)
    loss_points: int = 112 * 112  # points sampled per mask for BCE + Dice (the paper)
    oversample_ratio: float = 3.0  # candidates = oversample × loss_points (the paper)
    importance_ratio: float = 0.75  # share of points taken by uncertainty (the paper)
    val_fraction: float = 0.2  # share of objects held out for validation
    max_val_objects: int = 64  # cap on held-out objects scored at each validation
    eval_every: int = 25  # validate every this many steps (and at step 0 and the end)
    seed: int = 0  # objects split, prompt sampling and batch order

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise InputError("steps and batch_size must be at least 1.")
        unknown = set(self.prompt_kinds) - {"box", "points", "mask"}
        if unknown or not self.prompt_kinds:
            raise InputError(f"prompt_kinds must be among box, points, mask; got {unknown}.")
        if not 0.0 <= self.val_fraction < 1.0:
            raise InputError("val_fraction must be in [0, 1).")
        self.prompt_kinds = tuple(self.prompt_kinds)

    def to_dict(self) -> dict:
        """Plain dict (lists instead of tuples), for adapter files and JSON."""
        data = asdict(self)
        data["prompt_kinds"] = list(self.prompt_kinds)
        return data
