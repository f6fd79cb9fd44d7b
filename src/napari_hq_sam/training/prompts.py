"""Prompts drawn from ground-truth masks: tight box, foreground points, noisy mask."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """Tight boxes of (B, H, W) bool masks: (B, 4) XYXY in pixels, max inclusive."""
    rows, cols = masks.any(dim=2), masks.any(dim=1)
    idx_r = torch.arange(masks.shape[1], device=masks.device)
    idx_c = torch.arange(masks.shape[2], device=masks.device)
    big = max(masks.shape[1:])
    y0 = torch.where(rows, idx_r, big).amin(1)
    y1 = torch.where(rows, idx_r, -1).amax(1)
    x0 = torch.where(cols, idx_c, big).amin(1)
    x1 = torch.where(cols, idx_c, -1).amax(1)
    return torch.stack([x0, y0, x1, y1], dim=1).float()


def sample_points(masks: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` random foreground pixels of each mask (with replacement).

    Parameters
    ----------
    masks : torch.Tensor
        (B, H, W) bool masks, none empty.

    Returns
    -------
    torch.Tensor
        (B, n, 2) float, (X, Y) in pixels.
    """
    out = []
    for mask in masks:
        ys, xs = torch.nonzero(mask, as_tuple=True)
        pick = torch.randint(len(ys), (n,), generator=generator).to(ys.device)
        out.append(torch.stack([xs[pick], ys[pick]], dim=1))
    return torch.stack(out).float()


def noisy_mask_logits(targets: torch.Tensor, generator: torch.Generator, scale: int = 8,
                      logit: float = 10.0) -> torch.Tensor:
    """A ground-truth mask prompt with noise in its boundary region.

    As in HQ-SAM's training: the 256×256 mask, Gaussian noise (σ = 1) added where it
    differs from its own ×``scale`` down-and-up-sampled copy (the boundary region),
    thresholded at 0.5. Returned as logits ±``logit``, like the predictor's low-res output.

    Parameters
    ----------
    targets : torch.Tensor
        (B, 1, 1024, 1024) float ground truth in the padded input frame.

    Returns
    -------
    torch.Tensor
        (B, 1, 256, 256) mask-prompt logits.
    """
    m = F.interpolate(targets, (256, 256), mode="bilinear", align_corners=False)
    small = F.interpolate(m, (256 // scale, 256 // scale), mode="bilinear", align_corners=False)
    recovered = F.interpolate(small, (256, 256), mode="bilinear", align_corners=False)
    region = ((m - recovered).abs() >= 0.01).float()
    noise = torch.randn(m.shape, generator=generator).to(m.device)
    noisy = (m + noise * region) > 0.5
    return torch.where(noisy, logit, -logit)
