"""Inference fast path of the HQ mask decoder, with the same weights and function.

Per prompt, the official HQ branch computes ``embedding_maskfeature(upscaled)``:
Conv3x3(32->64), LayerNorm2d, GELU, Conv3x3(64->32) on 256 x 256 maps, then
adds the HQ feature and takes the dot product with the HQ token's 32-vector
``hyper``. The last convolution is linear, so ``hyper . conv2(z)`` equals one
Conv3x3(64->1) whose weight is ``hyper`` contracted with conv2's weight: 1/32 of
the work of conv2, exactly the same function. The first convolution runs in the
channels-last layout (2-3x faster on CPUs). Only used without autograd; training
and ``fast=False`` take :class:`~.hq_decoder.MaskDecoderHQ`'s own path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .hq_decoder import MaskDecoderHQ


class FastMaskDecoderHQ(MaskDecoderHQ):
    """:class:`MaskDecoderHQ` (same parameters) with the folded HQ mask head."""

    def hq_logits(self, upscaled: torch.Tensor, hyper: torch.Tensor,
                  hq_features: torch.Tensor) -> torch.Tensor:
        """:meth:`MaskDecoderHQ.hq_logits` (same shapes and values) with conv2 folded."""
        if self.training or torch.is_grad_enabled():
            return super().hq_logits(upscaled, hyper, hq_features)
        conv1, norm, act, conv2 = self.embedding_maskfeature
        b, c, h, w = upscaled.shape
        z = act(norm(conv1(upscaled.contiguous(memory_format=torch.channels_last))))
        weight = torch.einsum("bo,oikl->bikl", hyper, conv2.weight)  # (b, 64, 3, 3)
        bias = hyper @ conv2.bias  # (b,)
        if b == 1:
            folded = F.conv2d(z, weight, bias, padding=conv2.padding)
        else:
            folded = F.conv2d(z.reshape(1, -1, h, w), weight, bias, padding=conv2.padding,
                              groups=b).view(b, 1, h, w)
        from_features = (hyper[:, None] @ hq_features.reshape(-1, c, h * w)).view(b, 1, h, w)
        return folded + from_features


def accelerate_decoder(decoder: MaskDecoderHQ) -> MaskDecoderHQ:
    """Switch an HQ decoder to :class:`FastMaskDecoderHQ`, in place (same state dict)."""
    if type(decoder) is MaskDecoderHQ:
        decoder.__class__ = FastMaskDecoderHQ
    return decoder
