"""Many prompts on one image embedding, decoded in two stages: scores, then masks.

Segment everything decodes hundreds of single-point prompts on one embedding and
throws most of their masks away on SAM's predicted IoU. The IoU head reads only
the transformer's IoU token, never the 256 x 256 mask features, so
:class:`StagedDecoder` runs

1. :meth:`~StagedDecoder.tokens`: the prompt encoder and SAM's two-way transformer
   for every prompt, then the IoU head: the score and the chosen SAM mask token of
   each prompt (as :class:`~.model.hq_decoder.MaskDecoderHQ` chooses them);
2. :meth:`~StagedDecoder.masks`: the mask heads (upscaling, SAM's hypernetwork of
   the chosen token, the HQ branch at 256 x 256) only for the prompts the caller
   keeps.

The values are those of ``MaskDecoderHQ.forward`` up to float rounding (the
official generator's masks are compared in the tests). The transformer is Meta's
``TwoWayTransformer`` written for this shape of work:

- The image tokens entering the first block are the same for every prompt (image
  embedding plus the no-mask embedding): the first block's attentions read one
  shared (4096, 256) array instead of a copy per prompt, as one matrix product
  for the whole batch.
- Attentions move the few prompt tokens through the projection weights instead
  of projecting 4096 image tokens (as :mod:`.model.fast_two_way`, linear algebra
  only).
- The per-prompt image tokens (4 MB each) are processed a few prompts at a time
  so that they stay in the CPU's caches between the steps that read them; on a
  CPU the chunks go to one thread per core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .model._inference import inference_only, true_fp32

# Prompts whose per-prompt image tokens are processed together: 4 MB each, so a
# chunk stays within a CPU's last-level cache; a GPU takes the whole batch.
CPU_CHUNK = 4


@dataclass
class TokenOutputs:
    """What the transformer gave for a batch of B prompts.

    Attributes
    ----------
    scores : torch.Tensor
        (B,) predicted IoU of the chosen SAM mask.
    token : torch.Tensor
        (B,) int64 index of the chosen SAM mask token (0, or 1-3 with multimask).
    mask_tokens : torch.Tensor
        (B, 5, 256) transformer outputs of SAM's four mask tokens and the HQ token.
    image_tokens : torch.Tensor
        (B, 4096, 256) the transformer's image tokens, needed for the masks.
    index : torch.Tensor
        (B,) int64 position of each prompt in the batch given to
        :meth:`StagedDecoder.tokens`.
    """

    scores: torch.Tensor
    token: torch.Tensor
    mask_tokens: torch.Tensor
    image_tokens: torch.Tensor
    index: torch.Tensor

    def select(self, keep) -> TokenOutputs:
        """The outputs of the prompts ``keep`` (bool (B,), int indices or a slice)."""
        return TokenOutputs(self.scores[keep], self.token[keep], self.mask_tokens[keep],
                            self.image_tokens[keep], self.index[keep])

    def __len__(self) -> int:
        return len(self.scores)


def _heads(linear: nn.Linear, heads: int) -> torch.Tensor:
    """(heads, c, D) view of a projection's (heads * c, D) weight."""
    return linear.weight.view(heads, -1, linear.weight.shape[1])


def _token_to_image(attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Meta's ``Attention(q=tokens, k=image, v=image)``; k, v (N, D) shared or (B, N, D)."""
    b, t, _ = q.shape
    heads = attention.num_heads
    c = attention.internal_dim // heads
    q_heads = attention.q_proj(q).view(b, t, heads, c)
    # the query of head h moved into the input space: Q_h Wk_h; the key bias adds
    # one constant per query and cancels in the softmax
    q_in = torch.einsum("bthc,hcd->bhtd", q_heads, _heads(attention.k_proj, heads))
    scores = torch.matmul(q_in.reshape(b, heads * t, -1), k.transpose(-1, -2))
    probs = torch.softmax(scores.mul_(1 / math.sqrt(c)), dim=-1)
    pooled = torch.matmul(probs, v).view(b, heads, t, -1)
    out = torch.einsum("bhtd,hcd->bthc", pooled, _heads(attention.v_proj, heads))
    out = out + attention.v_proj.bias.view(heads, c)
    return attention.out_proj(out.reshape(b, t, heads * c))


def _image_to_token_residual(attention, image_q: torch.Tensor, keys: torch.Tensor,
                             tokens_k: torch.Tensor, tokens_v: torch.Tensor) -> torch.Tensor:
    """``keys + Attention(q=image_q, k=tokens_k, v=tokens_v)``, (B, N, D).

    ``image_q`` and ``keys`` are (N, D) shared by all prompts or (B, N, D).
    """
    b, t, _ = tokens_k.shape
    heads = attention.num_heads
    c = attention.internal_dim // heads
    k_heads = attention.k_proj(tokens_k).view(b, t, heads, c) / math.sqrt(c)
    v_heads = attention.v_proj(tokens_v).view(b, t, heads, c)
    key_in = torch.einsum("hcd,bthc->bhtd", _heads(attention.q_proj, heads), k_heads)
    key_bias = torch.einsum("hc,bthc->bht", attention.q_proj.bias.view(heads, c), k_heads)
    # (B, heads * T, N): the softmax over T runs along contiguous rows of N
    scores = torch.matmul(key_in.reshape(b, heads * t, -1), image_q.transpose(-1, -2))
    scores += key_bias.reshape(b, heads * t, 1)
    probs = torch.softmax(scores.view(b, heads, t, -1), dim=2).view(b, heads * t, -1)
    value_out = torch.einsum("bthc,ohc->bhto", v_heads,
                             attention.out_proj.weight.view(-1, heads, c))
    # each head's probabilities sum to 1 over the T tokens, so the output bias is
    # the sum over heads of bias / heads: it rides on the values, not on N rows
    value_out = value_out + attention.out_proj.bias / heads
    return torch.baddbmm(keys.expand(b, -1, -1), probs.transpose(1, 2),
                         value_out.reshape(b, heads * t, -1))


def _on_cpu_threads(fn, items: list, threads: int) -> list:
    """``[fn(item) for item in items]`` on ``threads`` Python threads, one core each.

    Each chunk's products are small (4 prompts), so splitting every one of them
    over the cores costs a synchronisation per operation, and a core taken by
    another process stalls the other; whole chunks per core do not. Torch runs
    one intra-op thread meanwhile (its setting is restored after).
    """
    from concurrent.futures import ThreadPoolExecutor

    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(min(threads, len(items))) as pool:
            return list(pool.map(fn, items))
    finally:
        torch.set_num_threads(threads)


def _norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


class StagedDecoder:
    """Decode many prompts on one embedding: scores for all, masks for some.

    Parameters
    ----------
    model : HQSam
        The model; its mask decoder's modules and weights are used as they are.
    features : torch.Tensor
        (1, 256, 64, 64) image embedding.
    hq_features : torch.Tensor
        (1, 32, 256, 256) the image's HQ features.
    chunk : int, optional
        Prompts whose image tokens are processed at once; default :data:`CPU_CHUNK`
        on CPUs, all on other devices.
    """

    def __init__(self, model, features: torch.Tensor, hq_features: torch.Tensor,
                 chunk: int | None = None):
        self.model = model
        self.decoder = model.mask_decoder
        self.features, self.hq_features = features, hq_features
        self.device = features.device
        self.chunk = chunk or (CPU_CHUNK if self.device.type == "cpu" else 1 << 30)
        prompt_encoder = model.prompt_encoder
        no_mask = prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        self.grid = tuple(features.shape[-2:])
        # (N, D) image tokens (row-major grid), their positional encoding, and the sum
        self.image = (features + no_mask)[0].flatten(1).T.contiguous()
        self.pe = prompt_encoder.get_dense_pe()[0].flatten(1).T.contiguous()
        self.image_pe = self.image + self.pe

    @torch.no_grad()
    def tokens(self, point_coords: torch.Tensor | None, point_labels: torch.Tensor | None,
               boxes: torch.Tensor | None = None, multimask_output: bool = True,
               min_score: float | None = None) -> TokenOutputs:
        """Transformer and IoU head for B prompts.

        Parameters
        ----------
        point_coords : torch.Tensor or None
            (B, n, 2) points, (X, Y) in the model's 1024 input frame.
        point_labels : torch.Tensor or None
            (B, n) 1 positive, 0 negative, -1 padding.
        boxes : torch.Tensor or None
            (B, 4) XYXY boxes in the 1024 input frame.
        multimask_output : bool
            Choose SAM's mask token among 1-3 by predicted IoU (True) or take token 0.
        min_score : float, optional
            Return only the prompts whose predicted IoU is above this (the image
            tokens of the others are dropped as soon as their score is known).

        Returns
        -------
        TokenOutputs
            Of every prompt, or of those above ``min_score``; ``index`` says which.
        """
        points = None if point_coords is None else (point_coords, point_labels)
        sparse, _ = self.model.prompt_encoder(points=points, boxes=boxes, masks=None)
        starts = list(range(0, len(sparse), self.chunk))

        @torch.no_grad()      # grad mode is per thread
        def run(start: int) -> TokenOutputs:
            queries, image_tokens = self._transformer(sparse[start:start + self.chunk])
            part = self._scores(queries, image_tokens, multimask_output)
            part.index = part.index + start
            return part if min_score is None else part.select(part.scores > min_score)

        threads = torch.get_num_threads()
        with true_fp32(self.device):
            if self.device.type != "cpu" or threads < 2 or len(starts) < 2:
                parts = [run(start) for start in starts]
            else:
                parts = _on_cpu_threads(run, starts, threads)
        if len(parts) == 1:
            return parts[0]
        return TokenOutputs(*(torch.cat([getattr(p, name) for p in parts])
                              for name in ("scores", "token", "mask_tokens", "image_tokens",
                                           "index")))

    def _scores(self, queries: torch.Tensor, image_tokens: torch.Tensor,
                multimask_output: bool) -> TokenOutputs:
        """IoU head and the choice of SAM's mask token, as ``MaskDecoderHQ.forward``."""
        decoder = self.decoder
        iou = decoder.iou_prediction_head(queries[:, 0])
        if multimask_output:
            scores, token = iou[:, 1:4].max(dim=1)
            token = token + 1
        else:
            scores, token = iou[:, 0], torch.zeros(len(iou), dtype=torch.int64,
                                                   device=iou.device)
        n_mask = decoder.num_mask_tokens
        index = torch.arange(len(iou), device=iou.device)
        return TokenOutputs(scores, token, queries[:, 1:2 + n_mask], image_tokens, index)

    @torch.no_grad()
    def masks(self, outputs: TokenOutputs, hq_token_only: bool = False,
              windows: torch.Tensor | None = None, size: int = 0) -> torch.Tensor:
        """Low-resolution logits of the prompts in ``outputs``.

        SAM's chosen token plus the HQ token (or the HQ token alone), as
        :meth:`~.model.hq_decoder.MaskDecoderHQ.forward`.

        Parameters
        ----------
        outputs : TokenOutputs
            B prompts from :meth:`tokens`.
        hq_token_only : bool
            HQ logits alone.
        windows : torch.Tensor, optional
            (B, 2) int (row, column) of each prompt's window in the 64 x 64 token
            grid, ``size`` tokens square: the mask heads run on that window only.
            The upscaling is per token, so its values are exact; the HQ branch's
            two 3 x 3 convolutions see zeros past the window, so the outermost two
            pixels of a window side inside the grid are not exact.
        size : int
            Window side in tokens.

        Returns
        -------
        torch.Tensor
            (B, 1, 256, 256) logits, or (B, 1, 4 size, 4 size) with ``windows``.
        """
        decoder = self.decoder
        n_sam = decoder.num_mask_tokens
        if windows is None and self._in_strips():
            return self._masks_in_strips(outputs, hq_token_only)
        out = []
        with true_fp32(self.device):
            for i in range(0, len(outputs), self.chunk):
                part = outputs.select(slice(i, i + self.chunk))
                image_tokens, grid, hq_features = part.image_tokens, self.grid, self.hq_features
                if windows is not None:
                    image_tokens, hq_features = self._windows(part, windows[i:i + self.chunk],
                                                              size)
                    grid = (size, size)
                upscaled = decoder.upscale(image_tokens, grid)
                hq = decoder.hq_logits(upscaled, decoder.hf_mlp(part.mask_tokens[:, n_sam]),
                                       hq_features)
                if hq_token_only:
                    out.append(hq)
                    continue
                hyper = torch.stack([decoder.output_hypernetworks_mlps[int(k)](tokens[int(k)])
                                     for k, tokens in zip(part.token, part.mask_tokens)])
                out.append(decoder.sam_logits(upscaled, hyper[:, None]) + hq)
        if not out:
            side = 4 * size if windows is not None else 4 * self.grid[0]
            return self.features.new_zeros((0, 1, side, side))
        return torch.cat(out)

    def _in_strips(self) -> bool:
        """Whether the mask heads run per prompt in bands of rows (CPU, fast decoder)."""
        return (self.device.type == "cpu" and hasattr(self.decoder, "logits_in_strips")
                and inference_only(self.decoder))

    def _masks_in_strips(self, outputs: TokenOutputs, hq_token_only: bool) -> torch.Tensor:
        """:meth:`masks` without windows, one prompt at a time in bands of token rows.

        On a CPU the 64-channel 256 x 256 map of a whole prompt (16 MB) does not
        stay in the caches between the HQ branch's steps; bands of it do.
        """
        decoder = self.decoder
        n_sam = decoder.num_mask_tokens
        side = 4 * self.grid[0], 4 * self.grid[1]
        out = self.features.new_empty((len(outputs), 1, *side))
        with true_fp32(self.device):
            for i in range(len(outputs)):
                tokens = outputs.mask_tokens[i]
                k = int(outputs.token[i])
                sam_hyper = None if hq_token_only else \
                    decoder.output_hypernetworks_mlps[k](tokens[k]).view(1, 1, -1)
                out[i] = decoder.logits_in_strips(
                    outputs.image_tokens[i:i + 1], self.grid,
                    decoder.hf_mlp(tokens[n_sam:n_sam + 1]), sam_hyper, self.hq_features)[0]
        return out

    def _windows(self, part: TokenOutputs, origins: torch.Tensor, size: int):
        """(b, size^2, D) image tokens and (b, 32, 4 size, 4 size) HQ features of windows."""
        h, w = self.grid
        tokens = part.image_tokens.view(len(part), h, w, -1)
        feats = self.hq_features[0]
        rows, cols = origins[:, 0].tolist(), origins[:, 1].tolist()
        win = torch.stack([tokens[j, r:r + size, c:c + size]
                           for j, (r, c) in enumerate(zip(rows, cols))])
        hq = torch.stack([feats[:, 4 * r:4 * (r + size), 4 * c:4 * (c + size)]
                          for r, c in zip(rows, cols)])
        return win.reshape(len(part), size * size, -1), hq

    def _transformer(self, sparse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Meta's ``TwoWayTransformer.forward`` for (b, S, D) prompt embeddings.

        Returns the (b, T, D) output tokens (T = 6 + S) and the (b, N, D) image tokens.
        """
        decoder = self.decoder
        transformer = decoder.transformer
        b = len(sparse)
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight,
                                   decoder.hf_token.weight])
        point_embedding = torch.cat((output_tokens.unsqueeze(0).expand(b, -1, -1), sparse), 1)
        queries = point_embedding
        keys, keys_pe = self.image, self.image_pe      # shared until the first update
        for layer in transformer.layers:
            if layer.skip_first_layer_pe:
                queries = layer.self_attn(q=queries, k=queries, v=queries)
            else:
                q = queries + point_embedding
                queries = queries + layer.self_attn(q=q, k=q, v=queries)
            queries = _norm(layer.norm1, queries)
            q = queries + point_embedding
            queries = _norm(layer.norm2, queries + _token_to_image(
                layer.cross_attn_token_to_image, q, keys_pe, keys))
            queries = _norm(layer.norm3, queries + layer.mlp(queries))
            q = queries + point_embedding
            keys = _norm(layer.norm4, _image_to_token_residual(
                layer.cross_attn_image_to_token, keys_pe, keys, q, queries))
            keys_pe = keys + self.pe
        q = queries + point_embedding
        queries = queries + _token_to_image(transformer.final_attn_token_to_image, q, keys_pe,
                                            keys)
        return _norm(transformer.norm_final_attn, queries), keys
