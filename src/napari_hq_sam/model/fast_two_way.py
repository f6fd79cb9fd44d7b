"""Cross-attention of SAM's two-way transformer without projecting the image tokens.

In the mask decoder, a few prompt tokens (T: 6 output tokens plus the prompt's
points, 8 for a box) attend to 4096 image tokens and back. Meta's ``Attention``
projects all 4096 image tokens to q, k or v (4096 x 256 x 128 products) and
applies ``out_proj`` to 4096 rows, in each of five image-side attentions per
prompt. As attention is linear in those projections, the same values come from
moving the small side through the weights instead (exact up to float rounding):

- token -> image: ``softmax((Q_h Wk_h) k^T / sqrt(c))`` (the key bias adds a
  constant per query and cancels in the softmax) and ``(P_h v) Wv_h^T + bv_h``
  (softmax rows sum to 1);
- image -> token: scores ``q (Wq_h^T K_h^T) + bq_h K_h^T`` and output
  ``sum_h P_h (V_h Wo_h^T) + bo``.

Each image-side product then has inner or outer width heads x T (64 for a box)
instead of 128, so it pays while heads x T is below the attention's internal
width; otherwise, and with autograd, Meta's own forward runs.
"""

from __future__ import annotations

import math

import torch
from segment_anything.modeling.transformer import Attention, TwoWayTransformer

from ._inference import inference_only


def _pays(attention: Attention, tokens: int) -> bool:
    return inference_only(attention) and attention.num_heads * tokens < attention.internal_dim


def _head_weights(linear: torch.nn.Linear, heads: int) -> torch.Tensor:
    """(heads, c, D) view of a projection's (heads * c, D) weight."""
    return linear.weight.view(heads, -1, linear.weight.shape[1])


class TokenToImageAttention(Attention):
    """Meta's ``Attention`` with q = tokens (B, T, D) and k, v = image tokens (B, N, D)."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """(B, T, D) attention output of the tokens, as Meta's forward."""
        b, t, _ = q.shape
        if not _pays(self, t):
            return super().forward(q, k, v)
        heads = self.num_heads
        c = self.internal_dim // heads
        q_heads = self.q_proj(q).view(b, t, heads, c)
        # query of head h moved to the input space: Q_h Wk_h, (B, heads * T, D)
        q_in = torch.einsum("bthc,hcd->bhtd", q_heads, _head_weights(self.k_proj, heads))
        scores = q_in.reshape(b, heads * t, -1) @ k.transpose(1, 2)
        probs = torch.softmax(scores / math.sqrt(c), dim=-1)
        pooled = (probs @ v).view(b, heads, t, -1)  # (P_h v), (B, heads, T, D)
        out = torch.einsum("bhtd,hcd->bthc", pooled, _head_weights(self.v_proj, heads))
        out = out + self.v_proj.bias.view(heads, c)
        return self.out_proj(out.reshape(b, t, heads * c))


class ImageToTokenAttention(Attention):
    """Meta's ``Attention`` with q = image tokens (B, N, D) and k, v = tokens (B, T, D)."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """(B, N, D) attention output of the image tokens, as Meta's forward."""
        b, t, _ = k.shape
        if not _pays(self, t):
            return super().forward(q, k, v)
        heads = self.num_heads
        c = self.internal_dim // heads
        k_heads = self.k_proj(k).view(b, t, heads, c) / math.sqrt(c)
        v_heads = self.v_proj(v).view(b, t, heads, c)
        # keys moved to the input space: K_h Wq_h (B, heads * T, D) and K_h bq_h
        key_in = torch.einsum("hcd,bthc->bhtd", _head_weights(self.q_proj, heads), k_heads)
        key_bias = torch.einsum("hc,bthc->bht", self.q_proj.bias.view(heads, c), k_heads)
        # scores laid out (B, heads, T, N): the softmax over T then runs along
        # contiguous rows of N, much faster than over a last dimension of 8
        scores = torch.baddbmm(key_bias.reshape(b, heads * t, 1),
                               key_in.reshape(b, heads * t, -1), q.transpose(1, 2))
        probs = torch.softmax(scores.view(b, heads, t, -1), dim=2)
        # values moved to the output space: V_h Wo_h^T, (B, heads * T, D_out)
        out_weight = self.out_proj.weight.view(-1, heads, c)
        value_out = torch.einsum("bthc,ohc->bhto", v_heads, out_weight)
        return torch.baddbmm(self.out_proj.bias, probs.view(b, heads * t, -1).transpose(1, 2),
                             value_out.reshape(b, heads * t, -1))


def accelerate_two_way(transformer: TwoWayTransformer) -> TwoWayTransformer:
    """Switch the image-side attentions of a ``TwoWayTransformer`` to the classes above.

    In place and idempotent; parameters and state-dict keys do not change.
    """
    swaps = [(layer.cross_attn_token_to_image, TokenToImageAttention)
             for layer in transformer.layers]
    swaps += [(layer.cross_attn_image_to_token, ImageToTokenAttention)
              for layer in transformer.layers]
    swaps.append((transformer.final_attn_token_to_image, TokenToImageAttention))
    for module, fast in swaps:
        if type(module) is Attention:
            module.__class__ = fast
    return transformer
