"""SAM's ViT image encoder, also returning the early feature HQ-SAM fuses."""

from __future__ import annotations

import torch
from segment_anything.modeling import ImageEncoderViT


class HQImageEncoderViT(ImageEncoderViT):
    """Meta's ``ImageEncoderViT`` with the same weights and keys.

    ``forward`` additionally returns the output of the first global-attention
    block (before the neck), which the HQ decoder fuses with the final embedding.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first_global_block = next(
            i for i, blk in enumerate(self.blocks) if blk.window_size == 0
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a normalised, padded image.

        Parameters
        ----------
        x : torch.Tensor
            (B, 3, 1024, 1024) image, normalised and zero-padded to the bottom/right.

        Returns
        -------
        embedding : torch.Tensor
            (B, 256, 64, 64) image embedding.
        early : torch.Tensor
            (B, 64, 64, C) output of the first global-attention block.
        """
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        early = None
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i == self.first_global_block:
                early = x
        return self.neck(x.permute(0, 3, 1, 2)), early
