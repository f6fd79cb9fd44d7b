"""BCE + Dice on points sampled by uncertainty, as in HQ-SAM (after Mask2Former/PointRend)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def point_sample(x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear values of a map at normalised points.

    Border padding: points within half a pixel of the edge take the edge value
    (detectron2's ``point_sample`` pads with zeros, which pulls edge logits to 0).

    Parameters
    ----------
    x : torch.Tensor
        (B, C, H, W) map.
    coords : torch.Tensor
        (B, P, 2) points, (x, y) in [0, 1] of the map's extent (pixel corners).

    Returns
    -------
    torch.Tensor
        (B, C, P).
    """
    grid = (2.0 * coords - 1.0)[:, :, None, :]
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                         align_corners=False)[..., 0]


def uncertain_points(logits: torch.Tensor, n: int, oversample: float, importance: float,
                     generator: torch.Generator) -> torch.Tensor:
    """Points where the logits are closest to 0, plus random points.

    ``oversample × n`` random candidates are scored by uncertainty ``-|logit|``; the
    ``importance × n`` most uncertain are kept and ``(1 - importance) × n`` uniformly
    random points added.

    Parameters
    ----------
    logits : torch.Tensor
        (B, 1, h, w) mask logits (not differentiated through).

    Returns
    -------
    torch.Tensor
        (B, n, 2) points in [0, 1].
    """
    b, device = logits.shape[0], logits.device
    candidates = torch.rand(b, int(n * oversample), 2, generator=generator).to(device)
    uncertainty = -point_sample(logits, candidates)[:, 0].abs()
    n_uncertain = int(importance * n)
    top = uncertainty.topk(n_uncertain, dim=1).indices
    chosen = torch.gather(candidates, 1, top[..., None].expand(-1, -1, 2))
    extra = torch.rand(b, n - n_uncertain, 2, generator=generator).to(device)
    return torch.cat([chosen, extra], dim=1)


def bce_dice_loss(logits: torch.Tensor, targets: torch.Tensor, n_points: int,
                  oversample: float, importance: float, generator: torch.Generator,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sigmoid BCE and Dice on uncertainty-sampled points, each summed over masks.

    Parameters
    ----------
    logits : torch.Tensor
        (B, 1, 256, 256) predicted HQ logits.
    targets : torch.Tensor
        (B, 1, H, W) ground truth in [0, 1], same frame as ``logits`` (any resolution).

    Returns
    -------
    bce, dice : torch.Tensor
        Scalars: per-mask mean BCE over the points, and per-mask Dice loss
        ``1 - (2 Σ p t + 1) / (Σ p + Σ t + 1)``, both summed over the B masks
        (divide by the number of masks to average).
    """
    with torch.no_grad():
        coords = uncertain_points(logits.detach(), n_points, oversample, importance, generator)
        labels = point_sample(targets, coords)[:, 0]
    point_logits = point_sample(logits, coords)[:, 0]
    bce = F.binary_cross_entropy_with_logits(point_logits, labels, reduction="none").mean(1)
    probs = point_logits.sigmoid()
    dice = 1 - (2 * (probs * labels).sum(1) + 1) / (probs.sum(1) + labels.sum(1) + 1)
    return bce.sum(), dice.sum()
