"""Fast inference path for SAM's ViT encoder, with the same weights and function.

:func:`accelerate_vit` swaps the class of every ``Block`` and ``Attention`` of
Meta's ``ImageEncoderViT`` for the subclasses below. Parameters, buffers and
state-dict keys (``norm1``, ``attn.qkv``, ``attn.proj``, ``attn.rel_pos_h``,
``attn.rel_pos_w``, ``norm2``, ``mlp``) are untouched, so the swap is invisible
to checkpoint loading and saving. What changes:

- On GPUs, attention runs in ``F.scaled_dot_product_attention`` (a fused,
  memory-lean kernel). In bf16/fp16 the decomposed relative-position bias is
  folded into widened queries and keys, so flash attention runs without a mask;
  in fp32 it is the kernel's additive mask, built for chunks of query rows so
  the mask of one chunk stays small.
- On CPUs, where the fused kernel with a mask is slower than plain matrix
  products, attention is computed head by head on chunks of query rows small
  enough to stay in cache: scores by a matrix product, the two bias terms added
  in place by broadcasting (the full (rows, H*W) bias is never built), softmax,
  product with the values.
- Windowed blocks compute ``qkv`` on the H x W tokens before window padding
  (a padded token's ``qkv`` is the layer's bias, since the padding is zeros) and
  apply ``proj`` after cropping: no work is spent on padding tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, Block, get_rel_pos
from torch import nn

from ._inference import inference_only
from ._weights_cache import derived_cache, weights_key

# Most values in the bias mask of one chunk of global attention: B x heads x
# (rows * W) x (H * W). 2**26 gives 4 chunks of 16 rows for one vit_b slice (256 MB
# in fp32) and bounds the memory of large GPU batches.
MASK_BUDGET = 2**26
# Most attention scores computed at once by the CPU path: 2**21 (8 MB in fp32)
# is 8 query rows x 4096 keys of one head of global attention, or ~54 heads of
# 14 x 14 windows: the best of the chunkings measured on a 2-core EPYC.
SCORE_BUDGET = 2**21
# Devices and dtypes where the bias is folded into q and k
# (_folded_bias_attention), so that flash attention runs without a mask. fp32
# has no flash kernel, so there the wider q and k would only cost time: it keeps
# the additive mask.
FOLDED_BIAS_DEVICES = ("cuda",)
FOLDED_BIAS_DTYPES = (torch.bfloat16, torch.float16)


def _rel_pos_bias(q: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor) -> torch.Tensor:
    """Additive decomposed relative-position bias of SAM's attention.

    Parameters
    ----------
    q : torch.Tensor
        (B, heads, qh, qw, d) queries (unscaled), laid out on their grid.
    rel_h, rel_w : torch.Tensor
        (qh, kh, d) and (qw, kw, d) relative embeddings from ``get_rel_pos``.

    Returns
    -------
    torch.Tensor
        (B, heads, qh * qw, kh * kw) bias: ``q . Rh[qh, kh] + q . Rw[qw, kw]``.
    """
    b, n, qh, qw, _ = q.shape
    kh, kw = rel_h.shape[1], rel_w.shape[1]
    bias_h = torch.einsum("bnhwc,hkc->bnhwk", q, rel_h)
    bias_w = torch.einsum("bnhwc,wkc->bnhwk", q, rel_w)
    mask = q.new_empty(b, n, qh, qw, kh, kw)
    torch.add(bias_h.unsqueeze(-1), bias_w.unsqueeze(-2), out=mask)
    return mask.view(b, n, qh * qw, kh * kw)


def _global_attention_cpu(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          grid: tuple[int, int], rel_h: torch.Tensor, rel_w: torch.Tensor,
                          scale: float) -> torch.Tensor:
    """Global attention with the decomposed relative-position bias, in cache-sized pieces.

    The same function as Meta's ``Attention`` (scores ``scale * q.k`` plus
    ``q . Rh[qh, kh] + q . Rw[qw, kw]``, softmax over keys, times values),
    computed head by head on chunks of query rows holding at most
    :data:`SCORE_BUDGET` scores; the two bias terms are added to the scores in
    place by broadcasting.

    Parameters
    ----------
    q, k, v : torch.Tensor
        (B, heads, H*W, d) each; may be strided views of the qkv projection.
    grid : tuple of int
        (H, W) of the token grid shared by queries and keys.
    rel_h, rel_w : torch.Tensor
        (H, H, d) and (W, W, d) relative embeddings from ``get_rel_pos``.
    scale : float
        Multiplier of the query-key products (``d ** -0.5``).

    Returns
    -------
    torch.Tensor
        (B, heads, H*W, d), contiguous.
    """
    h, w = grid
    b, n, tokens, d = q.shape
    out = q.new_empty(b, n, tokens, d)
    rows = max(1, min(h, SCORE_BUDGET // (w * tokens)))
    for i in range(b):
        for j in range(n):
            q_grid = q[i, j].view(h, w, d)
            bias_h = torch.einsum("hwc,hkc->hwk", q_grid, rel_h)
            bias_w = torch.einsum("hwc,wkc->hwk", q_grid, rel_w)
            keys_t = k[i, j].transpose(0, 1)
            for r in range(0, h, rows):
                nr = min(rows, h - r)
                scores = torch.mm(q_grid[r:r + nr].reshape(nr * w, d) * scale, keys_t)
                grid_scores = scores.view(nr, w, h, w)  # (qh, qw, kh, kw)
                grid_scores.add_(bias_h[r:r + nr, :, :, None]).add_(bias_w[r:r + nr, :, None])
                torch.mm(torch.softmax(scores, dim=-1), v[i, j], out=out[i, j, r * w:(r + nr) * w])
    return out


def _augmented_qk(q: torch.Tensor, k: torch.Tensor, grid: tuple[int, int],
                  rel_h: torch.Tensor, rel_w: torch.Tensor, scale: float,
                  align: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries and keys whose product is the scores with the relative-position bias.

    ``q . Rh[qh, kh]`` is the product of the augmented query
    ``[scale * q, q.Rh[qh, :], q.Rw[qw, :]]`` with the augmented key
    ``[k, onehot(kh), onehot(kw)]`` (key token ``kh * W + kw``), likewise for ``Rw``.

    Parameters
    ----------
    q, k : torch.Tensor
        (B, heads, H*W, d) each; may be strided views.
    grid, rel_h, rel_w, scale
        As in :func:`_global_attention_cpu`.
    align : int
        The head dim ``d + H + W`` is padded with zeros to a multiple of this.

    Returns
    -------
    queries, keys : torch.Tensor
        (B, heads, H*W, d + H + W + padding) each, contiguous.
    """
    h, w = grid
    b, n, tokens, d = q.shape
    width = d + h + w
    full = width + -width % align
    q_grid = q.reshape(b, n, h, w, d)
    queries = q.new_zeros(b, n, tokens, full) if full > width else q.new_empty(b, n, tokens, full)
    torch.mul(q, scale, out=queries[..., :d])
    queries[..., d:d + h].view(b, n, h, w, h).copy_(
        torch.einsum("bnhwc,hkc->bnhwk", q_grid, rel_h))
    queries[..., d + h:width].view(b, n, h, w, w).copy_(
        torch.einsum("bnhwc,wkc->bnhwk", q_grid, rel_w))
    keys = k.new_zeros(b, n, tokens, full)
    keys[..., :d] = k
    eye_h = torch.eye(h, dtype=k.dtype, device=k.device)
    keys[..., d:d + h].view(b, n, h, w, h).copy_(eye_h.view(h, 1, h))
    keys[..., d + h:width].view(b, n, h, w, w).copy_(torch.eye(w, dtype=k.dtype,
                                                               device=k.device))
    return queries, keys


def _window_attention_cpu(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          grid: tuple[int, int], rel_h: torch.Tensor, rel_w: torch.Tensor,
                          scale: float) -> torch.Tensor:
    """Attention within small windows, the relative-position bias folded into q and k.

    With :func:`_augmented_qk`, one matrix product (head dim d + H + W) gives
    scores with the bias included: for 14 x 14 windows this costs less than
    adding the bias to scores with short (14-wide) inner dimensions.

    Parameters
    ----------
    q, k, v : torch.Tensor
        (B, heads, H*W, d) each, B being batch x windows.
    grid, rel_h, rel_w, scale
        As in :func:`_global_attention_cpu`.

    Returns
    -------
    torch.Tensor
        (B, heads, H*W, d), contiguous.
    """
    b, n, tokens, d = q.shape
    queries, keys = _augmented_qk(q, k, grid, rel_h, rel_w, scale)
    queries = queries.view(b * n, tokens, -1)
    keys_t = keys.view(b * n, tokens, -1).transpose(1, 2)
    values = v.reshape(b * n, tokens, d)
    out = q.new_empty(b * n, tokens, d)
    pairs = max(1, SCORE_BUDGET // (tokens * tokens))
    for p in range(0, b * n, pairs):
        part = slice(p, p + pairs)
        scores = torch.bmm(queries[part], keys_t[part])
        torch.bmm(torch.softmax(scores, dim=-1), values[part], out=out[part])
    return out.view(b, n, tokens, d)


def _folded_bias_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           grid: tuple[int, int], rel_h: torch.Tensor, rel_w: torch.Tensor,
                           scale: float) -> torch.Tensor:
    """One fused attention call with the relative-position bias folded into q and k.

    The augmented queries and keys of :func:`_augmented_qk` give the scores with
    the bias, so ``scaled_dot_product_attention`` runs without a mask
    (flash attention on GPUs) and the (tokens x tokens) bias is never built. The
    head dim is padded with zeros to a multiple of 8, values too (flash attention
    wants equal head dims).

    Parameters and returns as in :func:`_global_attention_cpu`.
    """
    d = q.shape[-1]
    queries, keys = _augmented_qk(q, k, grid, rel_h, rel_w, scale, align=8)
    values = v.new_zeros(keys.shape)
    values[..., :d] = v
    out = F.scaled_dot_product_attention(queries, keys, values, scale=1.0)
    return out[..., :d]


class FastAttention(Attention):
    """SAM's ``Attention`` (same parameters) running in ``scaled_dot_product_attention``."""

    def _rel_pos(self, size: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``get_rel_pos`` of both axes, (size, size, d) each, cached outside training."""
        params = (self.rel_pos_h, self.rel_pos_w)
        if not inference_only(self):
            return tuple(get_rel_pos(size, size, p).to(dtype) for p in params)
        return derived_cache(self, "_rel_pos_cache").get(
            weights_key(params, size, dtype),
            lambda: tuple(get_rel_pos(size, size, p).to(dtype) for p in params))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               grid: tuple[int, int], chunk_rows: int | None = None) -> torch.Tensor:
        """Attention of queries on a ``grid`` of tokens with the relative-position bias.

        Parameters
        ----------
        q, k, v : torch.Tensor
            (B, heads, H*W, d) each; may be non-contiguous views.
        grid : tuple of int
            (H, W) of the token grid (queries and keys share it).
        chunk_rows : int, optional
            Process the queries at most this many grid rows at a time (limits the
            mask size); all rows at once when None.

        Returns
        -------
        torch.Tensor
            (B, heads, H*W, d).
        """
        h, w = grid
        b, n, _, d = q.shape
        if not self.use_rel_pos:
            return F.scaled_dot_product_attention(q, k, v)
        if h != w:
            raise ValueError(f"FastAttention expects a square token grid, got {h} x {w}.")
        rel_h, rel_w = self._rel_pos(h, q.dtype)
        if q.device.type in FOLDED_BIAS_DEVICES and q.dtype in FOLDED_BIAS_DTYPES:
            return _folded_bias_attention(q, k, v, (h, w), rel_h, rel_w, self.scale)
        if q.device.type == "cpu":
            # folding the bias into q and k widens the head dim by h + w: worth it
            # for 14 x 14 windows (64 -> 92), not for the 64 x 64 global grid
            attention = _window_attention_cpu if h + w <= d else _global_attention_cpu
            return attention(q, k, v, (h, w), rel_h, rel_w, self.scale)
        q_grid = q.view(b, n, h, w, d)
        rows = h if chunk_rows is None else max(1, min(h, chunk_rows))
        rows = -(-h // -(-h // rows))  # equal chunks
        out = []
        for r in range(0, h, rows):
            q_rows = q_grid[:, :, r:r + rows]
            mask = _rel_pos_bias(q_rows, rel_h[r:r + rows], rel_w)
            out.append(F.scaled_dot_product_attention(
                q_rows.reshape(b, n, -1, d), k, v, attn_mask=mask))
        return out[0] if len(out) == 1 else torch.cat(out, dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Global attention on (B, H, W, C) tokens; returns (B, H, W, C)."""
        b, h, w, c = x.shape
        qkv = self.qkv(x).view(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        per_row = b * self.num_heads * w * h * w
        out = self.attend(q, k, v, (h, w), chunk_rows=MASK_BUDGET // per_row)
        return self.proj(out.transpose(1, 2).reshape(b, h, w, c))

    def windowed(self, x: torch.Tensor, window: int) -> torch.Tensor:
        """Attention within non-overlapping ``window`` x ``window`` windows.

        Parameters
        ----------
        x : torch.Tensor
            (B, H, W, C) normalised tokens (not padded).
        window : int
            Window size; the grid is padded bottom/right to a multiple of it.

        Returns
        -------
        torch.Tensor
            (B, H, W, C), the same as Meta's partition / attention / unpartition.
        """
        b, h, w, c = x.shape
        heads, d = self.num_heads, c // self.num_heads
        qkv = self.qkv(x)
        ph, pw = -(-h // window) * window, -(-w // window) * window
        if (ph, pw) != (h, w):  # zero-padded tokens would give qkv == bias
            padded = qkv.new_empty(b, ph, pw, 3 * c)
            padded[:] = 0 if self.qkv.bias is None else self.qkv.bias.to(qkv.dtype)
            padded[:, :h, :w] = qkv
            qkv = padded
        nh, nw = ph // window, pw // window
        qkv = qkv.view(b, nh, window, nw, window, 3, heads, d)
        qkv = qkv.permute(5, 0, 1, 3, 6, 2, 4, 7).reshape(3, b * nh * nw, heads, window**2, d)
        out = self.attend(qkv[0], qkv[1], qkv[2], (window, window))
        out = out.view(b, nh, nw, heads, window, window, d).permute(0, 1, 4, 2, 5, 3, 6)
        out = out.reshape(b, ph, pw, c)[:, :h, :w]
        return self.proj(out)


class FastBlock(Block):
    """SAM's ViT ``Block`` (same parameters) using :class:`FastAttention`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        y = self.norm1(x)
        y = self.attn.windowed(y, self.window_size) if self.window_size > 0 else self.attn(y)
        x = x + y
        return x + self.mlp(self.norm2(x))


def accelerate_vit(encoder: nn.Module) -> nn.Module:
    """Switch the blocks of a SAM ``ImageEncoderViT`` to the fast path, in place.

    Idempotent; parameters and state-dict keys do not change.
    """
    for block in encoder.blocks:
        if type(block) is Block:
            block.__class__ = FastBlock
        if type(block.attn) is Attention:
            block.attn.__class__ = FastAttention
    return encoder
