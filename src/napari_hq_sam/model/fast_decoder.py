"""Inference fast path of the HQ mask decoder, with the same weights and function.

Per prompt, after the two-way transformer, the decoder upscales the 64 x 64
image tokens to 256 x 256 mask features and runs the HQ branch's
``embedding_maskfeature`` on them (Conv3x3 32->64, LayerNorm2d, GELU,
Conv3x3 64->32). The official code does this in the channels-first layout,
with ``LayerNorm2d`` written as five separate tensor operations. Here:

- The two stride-2 transposed convolutions of ``output_upscaling`` are matrix
  products on channel-last rows (kernel 2 = stride 2: every input pixel makes
  its own 2 x 2 output block); LayerNorm and GELU act on those rows, and one
  copy at the end puts the 2 x 2 blocks in place, giving the channels-last
  layout the 3 x 3 convolution wants.
- LayerNorm2d over channels is ``F.layer_norm`` on the channels-last view (one
  fused kernel instead of five passes over a 64 x 256 x 256 map).
- The last HQ convolution is linear, so ``hyper . conv2(z)`` equals one
  Conv3x3(64->1) whose weight is ``hyper`` contracted with conv2's weight (1/32
  of the work), computed as one matrix product giving the 9 taps per pixel and
  9 shifted adds.
- :meth:`FastMaskDecoderHQ.logits_in_strips` runs all of this for one prompt a
  band of token rows at a time, so that the 64-channel 256 x 256 map never exists
  whole and each band's intermediates stay in the CPU's caches between steps.

The transformer's image-side attentions skip projecting the 4096 image tokens,
see :mod:`.fast_two_way`. Only used without autograd; training and ``fast=False`` take
:class:`~.hq_decoder.MaskDecoderHQ`'s own path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._inference import gelu_, inference_only
from .fast_two_way import accelerate_two_way
from .hq_decoder import MaskDecoderHQ

# Token rows per band of :meth:`FastMaskDecoderHQ.logits_in_strips`: 16 rows make
# 64 x 256 pixels, whose 64-channel map (4 MB) stays near the core that made it
# (measured on a 2-core AVX-512 CPU: 45 ms per prompt against 62 whole, 8 rows 51)
STRIP_ROWS = 16


def _layer_norm_last(x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
    """SAM's ``LayerNorm2d`` applied over the last (channel) dimension of ``x``."""
    return F.layer_norm(x, (x.shape[-1],), norm.weight, norm.bias, norm.eps)


def _transposed_conv2x2(rows: torch.Tensor, conv: nn.ConvTranspose2d) -> torch.Tensor:
    """A ConvTranspose2d with kernel 2 and stride 2 on channel-last rows.

    Parameters
    ----------
    rows : torch.Tensor
        (..., C_in) input pixels, channels last.
    conv : nn.ConvTranspose2d
        Weight (C_in, C_out, 2, 2), kernel_size = stride = 2.

    Returns
    -------
    torch.Tensor
        (..., 2, 2, C_out): output pixel (2y + i, 2x + j) of input pixel (y, x) at
        index (i, j).
    """
    c_in, c_out = conv.weight.shape[:2]
    weight = conv.weight.permute(0, 2, 3, 1).reshape(c_in, 4 * c_out)
    out = torch.addmm(conv.bias.repeat(4), rows.reshape(-1, c_in), weight)
    return out.view(*rows.shape[:-1], 2, 2, c_out)


def _conv3x3_one_output(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Zero-padded 3 x 3 convolution to one channel, a different kernel per image.

    Parameters
    ----------
    z : torch.Tensor
        (b, H, W, C) channels-last input.
    weight : torch.Tensor
        (b, C, 3, 3) kernel of each image.
    bias : torch.Tensor
        (b,) bias of each image.

    Returns
    -------
    torch.Tensor
        (b, 1, H, W), as ``F.conv2d(z_b, weight_b, bias_b, padding=1)``.
    """
    b, h, w, c = z.shape
    # 16 columns, not 9: one AVX-512 register per row makes the product faster
    weight16 = weight.new_zeros(b, c, 16)
    weight16[:, :, :9] = weight.reshape(b, c, 9)
    taps = torch.bmm(z.reshape(b, h * w, c), weight16)[..., :9].view(b, h, w, 3, 3)
    out = bias.view(b, 1, 1).expand(b, h, w).clone()
    for i in range(3):
        # output row y reads input row y + i - 1: skip the rows that fall in the padding
        out_y = slice(max(0, 1 - i), h - max(0, i - 1))
        in_y = slice(max(0, i - 1), h - max(0, 1 - i))
        for j in range(3):
            out_x = slice(max(0, 1 - j), w - max(0, j - 1))
            in_x = slice(max(0, j - 1), w - max(0, 1 - j))
            out[:, out_y, out_x] += taps[:, in_y, in_x, i, j]
    return out.unsqueeze(1)


class FastMaskDecoderHQ(MaskDecoderHQ):
    """:class:`MaskDecoderHQ` (same parameters) with channels-last mask heads."""

    def upscale(self, src: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """:meth:`MaskDecoderHQ.upscale` (same values), channels-last memory."""
        if not inference_only(self):
            return super().upscale(src, grid)
        up1, norm, act1, up2, act2 = self.output_upscaling
        b, h, w = src.shape[0], *grid
        y = gelu_(act1, _layer_norm_last(_transposed_conv2x2(src, up1), norm))  # (b, hw, 2, 2, 64)
        y = gelu_(act2, _transposed_conv2x2(y, up2))  # (b, hw, i1, j1, i2, j2, 32)
        c = y.shape[-1]
        # pixel (4y + 2 i1 + i2, 4x + 2 j1 + j2): one copy into row-major order
        y = y.view(b, h, w, 2, 2, 2, 2, c).permute(0, 1, 3, 5, 2, 4, 6, 7)
        return y.reshape(b, 4 * h, 4 * w, c).permute(0, 3, 1, 2)

    def sam_logits(self, upscaled: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
        """:meth:`MaskDecoderHQ.sam_logits` (same values) on channels-last features."""
        if not upscaled.is_contiguous(memory_format=torch.channels_last):
            return super().sam_logits(upscaled, hyper)
        b, c, h, w = upscaled.shape
        pixels = upscaled.permute(0, 2, 3, 1).reshape(b, h * w, c)
        return (pixels @ hyper.transpose(1, 2)).transpose(1, 2).reshape(b, -1, h, w)

    def hq_logits(self, upscaled: torch.Tensor, hyper: torch.Tensor,
                  hq_features: torch.Tensor) -> torch.Tensor:
        """:meth:`MaskDecoderHQ.hq_logits` (same shapes and values) with conv2 folded."""
        if not inference_only(self):
            return super().hq_logits(upscaled, hyper, hq_features)
        conv1, norm, act, conv2 = self.embedding_maskfeature
        b, c, h, w = upscaled.shape
        z = conv1(upscaled.contiguous(memory_format=torch.channels_last))
        z = gelu_(act, _layer_norm_last(z.permute(0, 2, 3, 1), norm))  # (b, h, w, 64)
        weight = torch.einsum("bo,oikl->bikl", hyper, conv2.weight)  # (b, 64, 3, 3)
        folded = _conv3x3_one_output(z, weight, hyper @ conv2.bias)
        from_features = (hyper[:, None] @ hq_features.reshape(-1, c, h * w)).view(b, 1, h, w)
        return folded + from_features

    def logits_in_strips(self, src: torch.Tensor, grid: tuple[int, int], hq_hyper: torch.Tensor,
                         sam_hyper: torch.Tensor | None, hq_features: torch.Tensor,
                         rows: int = STRIP_ROWS) -> torch.Tensor:
        """Mask logits of one prompt computed in bands of token rows (same values).

        Equals ``hq_logits(up, hq_hyper, hq_features) + sam_logits(up, sam_hyper)``
        with ``up = upscale(src, grid)`` up to float rounding. Each band of
        ``rows`` token rows is upscaled with one token row of context on each side:
        the HQ branch's two 3 x 3 convolutions reach two pixels past a band, and
        the context row gives four, so the band's own pixels are exact.

        Parameters
        ----------
        src : torch.Tensor
            (1, h * w, 256) the prompt's image tokens after the transformer.
        grid : tuple of int
            (h, w) token grid.
        hq_hyper : torch.Tensor
            (1, 32) the HQ token through ``hf_mlp``.
        sam_hyper : torch.Tensor or None
            (1, 1, 32) the chosen SAM token through its hypernetwork; None for HQ
            logits alone.
        hq_features : torch.Tensor
            (1, 32, 4 h, 4 w) the image's HQ features.
        rows : int
            Token rows per band.

        Returns
        -------
        torch.Tensor
            (1, 1, 4 h, 4 w) logits.
        """
        conv1, norm, act, conv2 = self.embedding_maskfeature
        h, w = grid
        tokens = src.view(h, w, -1)
        weight = torch.einsum("bo,oikl->bikl", hq_hyper, conv2.weight)  # (1, 64, 3, 3)
        bias = hq_hyper @ conv2.bias
        features = hq_features[0].permute(1, 2, 0)  # (4h, 4w, 32)
        out = src.new_empty(1, 1, 4 * h, 4 * w)
        for top in range(0, h, rows):
            bottom = min(top + rows, h)
            first, last = max(top - 1, 0), min(bottom + 1, h)
            up = self.upscale(tokens[first:last].reshape(1, -1, tokens.shape[-1]),
                              (last - first, w))  # (1, 32, 4 n, 4 w) channels-last
            z = gelu_(act, _layer_norm_last(conv1(up).permute(0, 2, 3, 1), norm))
            own = slice(4 * (top - first), 4 * (bottom - first))
            logits = _conv3x3_one_output(z, weight, bias)[0, 0, own]
            logits += features[4 * top:4 * bottom] @ hq_hyper[0]
            if sam_hyper is not None:
                logits += up[0].permute(1, 2, 0)[own] @ sam_hyper[0, 0]
            out[0, 0, 4 * top:4 * bottom] = logits
        return out


def accelerate_decoder(decoder: MaskDecoderHQ) -> MaskDecoderHQ:
    """Switch an HQ decoder and its transformer's cross-attentions to their fast paths.

    In place; the state dict does not change. See :mod:`.fast_two_way`.
    """
    if type(decoder) is MaskDecoderHQ:
        decoder.__class__ = FastMaskDecoderHQ
    accelerate_two_way(decoder.transformer)
    return decoder
