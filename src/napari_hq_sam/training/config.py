"""Settings of HQ-branch training, with the paper's values where they apply."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

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
        at_least_one = ("steps", "batch_size", "n_points", "mask_noise_scale", "loss_points",
                        "max_val_objects", "eval_every")
        for name in at_least_one:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InputError(f"{name} must be a whole number of at least 1, got {value!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) \
                or self.seed < 0:
            raise InputError(f"seed must be a whole number of at least 0, got {self.seed!r}.")
        _check_number("lr", self.lr, lambda v: v > 0, "above 0")
        _check_number("lr_drop_at", self.lr_drop_at, lambda v: 0 <= v <= 1, "from 0 to 1")
        _check_number("val_fraction", self.val_fraction, lambda v: 0 <= v < 1,
                      "at least 0 and below 1")
        _check_number("oversample_ratio", self.oversample_ratio, lambda v: v >= 1,
                      "at least 1")
        _check_number("importance_ratio", self.importance_ratio, lambda v: 0 <= v <= 1,
                      "from 0 to 1")
        _check_number("mask_prompt_logit", self.mask_prompt_logit, lambda v: v > 0, "above 0")
        if self.mask_noise_scale > 256:
            raise InputError(f"mask_noise_scale must be at most 256 (the mask prompt's size), "
                             f"got {self.mask_noise_scale}.")
        if isinstance(self.prompt_kinds, str):
            self.prompt_kinds = (self.prompt_kinds,)
        unknown = set(self.prompt_kinds) - {"box", "points", "mask"}
        if unknown or not self.prompt_kinds:
            raise InputError(f"prompt_kinds must be among box, points, mask; got {unknown}.")
        self.prompt_kinds = tuple(self.prompt_kinds)

    def to_dict(self) -> dict:
        """Plain dict (lists instead of tuples), for adapter files and JSON."""
        data = asdict(self)
        data["prompt_kinds"] = list(self.prompt_kinds)
        return data


def _check_number(name: str, value, ok: Callable[[float], bool], rule: str) -> None:
    """Refuse a setting that is not a finite number satisfying ``ok`` (``rule`` in words)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
            or not math.isfinite(value) or not ok(value):
        raise InputError(f"{name} must be a finite number {rule}, got {value!r}.")
