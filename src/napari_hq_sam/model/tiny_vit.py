"""TinyViT image encoder of Light HQ-SAM (``vit_tiny``), without ``timm``.

The module tree mirrors MobileSAM's TinyViT so that the state-dict keys of the
official ``sam_hq_vit_tiny.pth`` load strictly (``image_encoder.patch_embed.seq.0.c``,
``image_encoder.layers.1.blocks.0.attn.qkv``, ``image_encoder.norm_head`` …).
Only inference-relevant behaviour is implemented (no drop-path, no checkpointing).

Inference fast path (:meth:`TinyViT.fuse`, switched on by ``build_hq_sam``): in
eval mode without autograd, every ``Conv2dBN`` runs as one convolution with the
BatchNorm folded into its weights, and each attention's bias table is gathered
once; both run in ``F.scaled_dot_product_attention``. The folded weights are a
cache next to the parameters, never parameters or buffers themselves: the state
dict keeps exactly the official keys and values, training mode (and any call
with gradients) uses the plain modules, and the cache is rebuilt whenever a
source tensor changes (in place, by replacement or through ``.data``), device
or dtype (see :mod:`._weights_cache`).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from torch import nn

from ._inference import gelu_, inference_only
from ._weights_cache import derived_cache, weights_key

# Elements of one strip of expanded activations in MBConv's CPU path (4 MB in fp32).
STRIP_ELEMENTS = 2**20


def _inference_cache(module: nn.Module, sources: tuple[torch.Tensor, ...], dtype, compute):
    """Value of ``compute()`` cached on ``module`` until a source tensor changes.

    Returns None in training mode or when autograd is on (callers then take the
    plain path, so gradients and BatchNorm statistics behave as usual).
    """
    if not inference_only(module):
        return None
    return derived_cache(module, "_inference_cache").get(weights_key(sources, dtype), compute)


# At inference, activations and residual adds are applied in place on tensors a
# module has just made (page faults cost more than the ops; see ``gelu_``), never
# on a block's input, which callers may keep.
def _gelu(act: nn.GELU, x: torch.Tensor, in_place: bool) -> torch.Tensor:
    return gelu_(act, x) if in_place else act(x)


def _add(fresh: torch.Tensor, other: torch.Tensor, in_place: bool) -> torch.Tensor:
    """``fresh + other``, written into ``fresh`` when allowed."""
    return fresh.add_(other) if in_place else fresh + other


class Conv2dBN(nn.Sequential):
    """Convolution without bias followed by BatchNorm; keys ``c`` and ``bn``.

    With ``fused`` set (see :meth:`TinyViT.fuse`), inference runs one convolution
    whose weights fold in the BatchNorm statistics.
    """

    def __init__(self, in_chans, out_chans, kernel=1, stride=1, pad=0, groups=1):
        super().__init__()
        self.add_module("c", nn.Conv2d(in_chans, out_chans, kernel, stride, pad, groups=groups,
                                       bias=False))
        self.add_module("bn", nn.BatchNorm2d(out_chans))
        self.fused = False

    def _folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight (O, I/g, k, k), bias (O,)) of the convolution with BatchNorm folded in."""
        bn, w = self.bn, self.c.weight
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        weight = w.double() * scale[:, None, None, None]
        bias = bn.bias.double() - bn.running_mean.double() * scale
        return weight.to(w.dtype), bias.to(w.dtype)

    def folded(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Cached folded (weight, bias), or None when not fused or not in inference."""
        if not self.fused:
            return None
        bn = self.bn
        return _inference_cache(
            self, (self.c.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var),
            dtype, self._folded)

    def forward(self, x):
        folded = self.folded(x.dtype)
        if folded is None:
            return self.bn(self.c(x))
        c = self.c
        return F.conv2d(x, folded[0], folded[1], c.stride, c.padding, c.dilation, c.groups)


class PatchEmbed(nn.Module):
    """Two stride-2 convolutions: (B, 3, 1024, 1024) -> (B, dim, 256, 256)."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        self.seq = nn.Sequential(Conv2dBN(in_chans, dim // 2, 3, 2, 1), nn.GELU(),
                                 Conv2dBN(dim // 2, dim, 3, 2, 1))

    def forward(self, x):
        conv1, act, conv2 = self.seq
        return conv2(_gelu(act, conv1(x), inference_only(self)))


class MBConv(nn.Module):
    """Inverted residual block on (B, C, H, W)."""

    def __init__(self, dim: int, expand_ratio: float):
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = Conv2dBN(dim, hidden)
        self.act1 = nn.GELU()
        self.conv2 = Conv2dBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = Conv2dBN(hidden, dim)
        self.act3 = nn.GELU()

    def forward(self, x):
        in_place = inference_only(self)
        if in_place and x.device.type == "cpu":
            weights = [conv.folded(x.dtype) for conv in (self.conv1, self.conv2, self.conv3)]
            if all(w is not None for w in weights):
                return self._forward_in_strips(x, weights)
        y = _gelu(self.act1, self.conv1(x), in_place)
        y = _gelu(self.act2, self.conv2(y), in_place)
        return _gelu(self.act3, _add(self.conv3(y), x, in_place), in_place)


    def _forward_in_strips(self, x: torch.Tensor, weights) -> torch.Tensor:
        """The same block, computed a strip of rows at a time (CPU inference).

        The expanded (4x channels) activations of one strip stay in cache and
        their buffers are reused, instead of three 67 MB tensors per block that
        cost page faults; the result is bit-identical. Each strip's 1x1
        convolution also covers one halo row above and below for the 3x3
        depth-wise convolution; at the image border the depth-wise convolution's
        own zero padding stands in for it, as in the whole-image computation.

        Parameters
        ----------
        x : torch.Tensor
            (B, C, H, W) input, normally channels-last.
        weights : list of tuple
            Folded (weight, bias) of ``conv1``, ``conv2``, ``conv3``.
        """
        (w1, b1), (w2, b2), (w3, b3) = weights
        b, _, h, w = x.shape
        hidden = w1.shape[0]
        rows = max(1, STRIP_ELEMENTS // (b * hidden * w) - 2)
        out = None
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            lo, hi = max(0, r0 - 1), min(h, r1 + 1)
            y = gelu_(self.act1, F.conv2d(x[:, :, lo:hi], w1, b1))
            y = F.conv2d(y, w2, b2, padding=1, groups=hidden)[:, :, r0 - lo:r1 - lo]
            y = F.conv2d(gelu_(self.act2, y), w3, b3)
            if out is None:
                out = torch.empty(x.shape, dtype=y.dtype, device=x.device,
                                  memory_format=torch.channels_last)
            strip = out[:, :, r0:r1]
            torch.add(y, x[:, :, r0:r1], out=strip)
            gelu_(self.act3, strip)
        return out


class PatchMerging(nn.Module):
    """Down-sampling between stages; returns tokens (B, H'*W', out_dim).

    The merge into 320 channels keeps stride 1 (as in MobileSAM) so the final
    feature map stays 64 x 64.
    """

    def __init__(self, resolution: tuple[int, int], dim: int, out_dim: int):
        super().__init__()
        self.resolution = resolution
        stride = 1 if out_dim in (320, 448, 576) else 2
        self.act = nn.GELU()
        self.conv1 = Conv2dBN(dim, out_dim)
        self.conv2 = Conv2dBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim)

    def forward(self, x):
        if x.ndim == 3:  # tokens (B, H*W, C) -> (B, C, H, W), a channels-last view
            h, w = self.resolution
            x = x.view(len(x), h, w, -1).permute(0, 3, 1, 2)
        in_place = inference_only(self)
        x = _gelu(self.act, self.conv1(x), in_place)
        x = self.conv3(_gelu(self.act, self.conv2(x), in_place))
        return x.permute(0, 2, 3, 1).reshape(len(x), -1, x.shape[1])  # free if channels last


class Attention(nn.Module):
    """Window attention with a learned bias per head and (|dy|, |dx|) offset."""

    def __init__(self, dim: int, num_heads: int, window: int):
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = dim // num_heads
        self.scale = self.key_dim**-0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        points = list(itertools.product(range(window), range(window)))
        offsets: dict[tuple[int, int], int] = {}
        idxs = []
        for p1 in points:
            for p2 in points:
                off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
                idxs.append(offsets.setdefault(off, len(offsets)))
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, len(offsets)))
        n = len(points)
        self.register_buffer("attention_bias_idxs", torch.tensor(idxs).view(n, n),
                             persistent=False)

    def bias(self) -> torch.Tensor:
        """Attention bias of shape (heads, N, N) for N = window**2 tokens."""
        return self.attention_biases[:, self.attention_bias_idxs]

    def forward(self, x):  # x: (B, N, C)
        b, n, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, -1)
        q, k, v = qkv.split([self.key_dim] * 3, dim=3)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        bias = _inference_cache(self, (self.attention_biases,), x.dtype,
                                lambda: self.bias().to(x.dtype)[None])
        bias = self.bias()[None] if bias is None else bias  # (1, heads, N, N)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        return self.proj(x.transpose(1, 2).reshape(b, n, -1))


class Mlp(nn.Module):
    """Pre-norm MLP: LayerNorm, Linear, GELU, Linear."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x):
        return self.fc2(_gelu(self.act, self.fc1(self.norm(x)), inference_only(self)))


class TinyViTBlock(nn.Module):
    """Windowed attention, depth-wise local conv and MLP on tokens (B, H*W, C)."""

    def __init__(self, dim, resolution, num_heads, window, mlp_ratio=4.0, local_conv=3):
        super().__init__()
        self.resolution = resolution
        self.window = window
        self.attn = Attention(dim, num_heads, window)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = Conv2dBN(dim, dim, local_conv, 1, local_conv // 2, groups=dim)

    def _windowed_attention(self, x):
        h, w = self.resolution
        b, _, c = x.shape
        ws = self.window
        x = x.view(b, h, w, c)
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
        if pad_b or pad_r:  # zero tokens are normalised inside attention, as upstream
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        ph, pw = h + pad_b, w + pad_r
        nh, nw = ph // ws, pw // ws
        x = x.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
        x = self.attn(x)
        x = x.view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)
        return x[:, :h, :w].reshape(b, h * w, c)

    def forward(self, x):
        h, w = self.resolution
        b, n, c = x.shape
        in_place = inference_only(self)
        x = _add(self._windowed_attention(x), x, in_place)
        x = self.local_conv(x.view(b, h, w, c).permute(0, 3, 1, 2))  # channels-last view
        x = x.permute(0, 2, 3, 1).reshape(b, n, c)
        return _add(self.mlp(x), x, in_place)


class Stage(nn.Module):
    """A list of ``blocks`` followed by an optional ``downsample`` (PatchMerging)."""

    def __init__(self, blocks: list[nn.Module], downsample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class TinyViT(nn.Module):
    """TinyViT-5M encoder of MobileSAM / Light HQ-SAM at 1024 x 1024 input.

    ``forward`` maps a normalised, padded image (B, 3, 1024, 1024) to the image
    embedding (B, 256, 64, 64) and the early feature (B, 64, 64, 160): the output
    of the second stage after its patch merging, which HQ-SAM fuses.
    """

    def __init__(self, *, img_size=1024, in_chans=3, embed_dims=(64, 128, 160, 320),
                 depths=(2, 2, 6, 2), num_heads=(2, 4, 5, 10), window_sizes=(7, 7, 14, 7),
                 mlp_ratio=4.0, mbconv_expand_ratio=4.0, local_conv_size=3, out_chans=256,
                 num_classes=1000):
        super().__init__()
        self.img_size = img_size
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        res = img_size // 4
        resolutions = [res, res // 2, res // 4, res // 4]
        self.layers = nn.ModuleList()
        for i, (dim, depth) in enumerate(zip(embed_dims, depths)):
            r = (resolutions[i], resolutions[i])
            if i == 0:
                blocks = [MBConv(dim, mbconv_expand_ratio) for _ in range(depth)]
            else:
                blocks = [TinyViTBlock(dim, r, num_heads[i], window_sizes[i], mlp_ratio,
                                       local_conv_size) for _ in range(depth)]
            last = i == len(depths) - 1
            down = None if last else PatchMerging(r, dim, embed_dims[i + 1])
            self.layers.append(Stage(blocks, down))
        # Classification head of TinyViT: unused, but part of the official files.
        self.norm_head = nn.LayerNorm(embed_dims[-1])
        self.head = nn.Linear(embed_dims[-1], num_classes)
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        self.feature_size = res // 4

    def fuse(self, enabled: bool = True) -> TinyViT:
        """Fold each BatchNorm into its convolution for inference (see the module notes).

        The state dict is unchanged; folding applies only in eval mode without autograd.
        """
        for module in self.modules():
            if isinstance(module, Conv2dBN):
                module.fused = enabled
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(embedding (B, 256, 64, 64), early feature (B, 64, 64, 160))``."""
        s = self.feature_size
        # Channels-last convolutions are faster on CPUs and map to tokens without copies.
        x = self.layers[0](self.patch_embed(x.contiguous(memory_format=torch.channels_last)))
        x = self.layers[1](x)
        early = x.view(x.shape[0], s, s, -1)
        for layer in self.layers[2:]:
            x = layer(x)
        x = x.view(x.shape[0], s, s, -1).permute(0, 3, 1, 2)
        return self.neck(x).contiguous(), early
