"""HQ-SAM mask decoder: SAM's decoder plus the HQ output token and feature fusion."""

from __future__ import annotations

import torch
from segment_anything.modeling import MaskDecoder
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.mask_decoder import MLP
from torch import nn

from ._inference import true_fp32

# Names of the HQ modules inside the decoder: the only parameters HQ-SAM trains.
HQ_MODULE_NAMES = (
    "hf_token",
    "hf_mlp",
    "compress_vit_feat",
    "embedding_encoder",
    "embedding_maskfeature",
)
# State-dict key prefixes of those modules in a whole model (``mask_decoder.hf_token.`` …).
HQ_KEY_PREFIXES = tuple(f"mask_decoder.{name}." for name in HQ_MODULE_NAMES)


def _upsample_x4(in_chans: int, mid_chans: int, out_chans: int) -> nn.Sequential:
    """Two stride-2 transposed convolutions with LayerNorm2d and GELU between."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_chans, mid_chans, kernel_size=2, stride=2),
        LayerNorm2d(mid_chans),
        nn.GELU(),
        nn.ConvTranspose2d(mid_chans, out_chans, kernel_size=2, stride=2),
    )


class MaskDecoderHQ(MaskDecoder):
    """SAM's ``MaskDecoder`` with the HQ output token of HQ-SAM.

    The SAM modules (``iou_token``, ``mask_tokens``, ``output_upscaling``,
    ``output_hypernetworks_mlps``, ``iou_prediction_head``, ``transformer``) are
    Meta's; the HQ modules are named as in the official checkpoints.

    Parameters
    ----------
    transformer_dim : int
        Channel width of the two-way transformer (256).
    transformer : nn.Module
        SAM's ``TwoWayTransformer``.
    vit_dim : int
        Channels C of the encoder's early feature (160, 768, 1024 or 1280).
    """

    def __init__(self, *, transformer_dim: int, transformer: nn.Module, vit_dim: int,
                 num_multimask_outputs: int = 3, iou_head_depth: int = 3,
                 iou_head_hidden_dim: int = 256):
        super().__init__(transformer_dim=transformer_dim, transformer=transformer,
                         num_multimask_outputs=num_multimask_outputs,
                         iou_head_depth=iou_head_depth, iou_head_hidden_dim=iou_head_hidden_dim)
        d = transformer_dim
        self.hf_token = nn.Embedding(1, d)
        self.hf_mlp = MLP(d, d, d // 8, 3)
        self.compress_vit_feat = _upsample_x4(vit_dim, d, d // 8)
        self.embedding_encoder = _upsample_x4(d, d // 4, d // 8)
        self.embedding_maskfeature = nn.Sequential(
            nn.Conv2d(d // 8, d // 4, 3, 1, 1),
            LayerNorm2d(d // 4),
            nn.GELU(),
            nn.Conv2d(d // 4, d // 8, 3, 1, 1),
        )

    def hq_parameters(self):
        """Iterate over the parameters of the HQ modules only."""
        for name in HQ_MODULE_NAMES:
            yield from getattr(self, name).parameters()

    def compute_hq_features(self, image_embeddings: torch.Tensor,
                            early_features: torch.Tensor) -> torch.Tensor:
        """Fuse the final embedding with the early ViT feature.

        Parameters
        ----------
        image_embeddings : torch.Tensor
            (B, 256, 64, 64) encoder output.
        early_features : torch.Tensor
            (B, 64, 64, C) output of the first global-attention block (channels last).

        Returns
        -------
        torch.Tensor
            (B, 32, 256, 256) HQ feature; it depends on the image only, so callers
            compute it once per image and reuse it for every prompt.
        """
        early = early_features.permute(0, 3, 1, 2)
        return self.embedding_encoder(image_embeddings) + self.compress_vit_feat(early)

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                sparse_prompt_embeddings: torch.Tensor, dense_prompt_embeddings: torch.Tensor,
                multimask_output: bool, hq_token_only: bool = False,
                hq_features: torch.Tensor | None = None,
                early_features: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict one mask per prompt for one image.

        Parameters
        ----------
        image_embeddings : torch.Tensor
            (1, 256, 64, 64) embedding of the image.
        image_pe : torch.Tensor
            (1, 256, 64, 64) dense positional encoding.
        sparse_prompt_embeddings : torch.Tensor
            (B, N, 256) point and box embeddings, one row per prompt.
        dense_prompt_embeddings : torch.Tensor
            (B, 256, 64, 64) mask-prompt embeddings.
        multimask_output : bool
            If True the SAM logits are those of the token among 1-3 with the highest
            predicted IoU (one mask, as in the official HQ-SAM); else token 0.
        hq_token_only : bool
            Return the HQ logits alone instead of SAM + HQ logits.
        hq_features : torch.Tensor, optional
            (1, 32, 256, 256) from :meth:`compute_hq_features`.
        early_features : torch.Tensor, optional
            (1, 64, 64, C); used to compute ``hq_features`` when they are not given.

        Returns
        -------
        masks : torch.Tensor
            (B, 1, 256, 256) low-resolution logits.
        iou_pred : torch.Tensor
            (B, 1) SAM's predicted IoU of the selected SAM mask.
        """
        with true_fp32(image_embeddings.device):
            if hq_features is None:
                if early_features is None:
                    raise ValueError("Give hq_features or early_features to the HQ decoder.")
                hq_features = self.compute_hq_features(image_embeddings, early_features)
            sam_logits, hq_logits, iou_pred = self.predict_all_masks(
                image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                hq_features)
        if multimask_output:
            iou_pred, best = iou_pred[:, 1:4].max(dim=1, keepdim=True)
            sam_mask = torch.gather(
                sam_logits[:, 1:4], 1,
                best[:, :, None, None].expand(-1, -1, *sam_logits.shape[-2:]))
        else:
            iou_pred, sam_mask = iou_pred[:, :1], sam_logits[:, :1]
        masks = hq_logits if hq_token_only else sam_mask + hq_logits
        return masks, iou_pred

    def predict_all_masks(self, image_embeddings, image_pe, sparse_prompt_embeddings,
                          dense_prompt_embeddings, hq_features):
        """Run the transformer once for all output tokens.

        Returns
        -------
        sam_logits : torch.Tensor
            (B, 4, 256, 256) logits of SAM's four mask tokens.
        hq_logits : torch.Tensor
            (B, 1, 256, 256) logits of the HQ token.
        iou_pred : torch.Tensor
            (B, 4) predicted IoU of SAM's four masks.
        """
        n_sam = self.num_mask_tokens
        output_tokens = torch.cat(
            [self.iou_token.weight, self.mask_tokens.weight, self.hf_token.weight], dim=0)
        b = sparse_prompt_embeddings.shape[0]
        tokens = torch.cat(
            (output_tokens.unsqueeze(0).expand(b, -1, -1), sparse_prompt_embeddings), dim=1)
        # expand, not copy: the same values as the official repeat_interleave
        src = image_embeddings.expand(b, -1, -1, -1) + dense_prompt_embeddings
        pos_src = image_pe.expand(b, -1, -1, -1)
        _, c, h, w = src.shape
        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 2 + n_sam, :]

        upscaled_sam = self.upscale(src, (h, w))
        hyper_sam = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1)
        hyper_hq = self.hf_mlp(mask_tokens_out[:, n_sam, :])
        sam_logits = self.sam_logits(upscaled_sam, hyper_sam)
        hq_logits = self.hq_logits(upscaled_sam, hyper_hq, hq_features)
        return sam_logits, hq_logits, self.iou_prediction_head(iou_token_out)

    def upscale(self, src: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """SAM's ``output_upscaling`` of the transformer's image tokens.

        Parameters
        ----------
        src : torch.Tensor
            (b, h*w, 256) image tokens in row-major grid order.
        grid : tuple of int
            (h, w), 64 x 64.

        Returns
        -------
        torch.Tensor
            (b, 32, 4h, 4w) upscaled mask features.
        """
        b, _, c = src.shape
        return self.output_upscaling(src.transpose(1, 2).view(b, c, *grid))

    def sam_logits(self, upscaled: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
        """Logits of SAM's mask tokens: ``hyper . upscaled`` at every pixel.

        Parameters
        ----------
        upscaled : torch.Tensor
            (b, 32, H, W) upscaled mask features.
        hyper : torch.Tensor
            (b, 4, 32) hypernetwork outputs of the four mask tokens.

        Returns
        -------
        torch.Tensor
            (b, 4, H, W) logits.
        """
        b, c, h, w = upscaled.shape
        return (hyper @ upscaled.view(b, c, h * w)).view(b, -1, h, w)

    def hq_logits(self, upscaled: torch.Tensor, hyper: torch.Tensor,
                  hq_features: torch.Tensor) -> torch.Tensor:
        """HQ token logits ``hyper . (embedding_maskfeature(upscaled) + hq_features)``.

        Parameters
        ----------
        upscaled : torch.Tensor
            (b, 32, 256, 256) upscaled SAM mask features.
        hyper : torch.Tensor
            (b, 32) output of ``hf_mlp`` for the HQ token.
        hq_features : torch.Tensor
            (1 or b, 32, 256, 256) prompt-independent HQ feature.

        Returns
        -------
        torch.Tensor
            (b, 1, 256, 256) HQ logits.
        """
        b, c, h, w = upscaled.shape
        upscaled_hq = self.embedding_maskfeature(upscaled) + hq_features
        return (hyper[:, None] @ upscaled_hq.view(b, c, h * w)).view(b, 1, h, w)
