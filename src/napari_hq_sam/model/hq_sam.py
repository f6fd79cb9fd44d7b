"""The HQ-SAM model: SAM's ``Sam`` container with an HQ decoder and encoder."""

from __future__ import annotations

import torch
from segment_anything.modeling import Sam

from ._inference import true_fp32
from .cuda_graph import graphed_call, graphs_apply
from .fast import best_precision, cast_copy, check_precision


class HQSam(Sam):
    """HQ-SAM: image encoder, prompt encoder and HQ mask decoder.

    Parameters
    ----------
    model_type : str
        Registry name of the backbone (``vit_tiny``, ``vit_b``, ``vit_l``, ``vit_h``).
    image_encoder, prompt_encoder, mask_decoder : nn.Module
        The encoder returns ``(embedding, early_feature)``; the decoder is a
        :class:`~napari_hq_sam.model.hq_decoder.MaskDecoderHQ`.
    """

    def __init__(self, *, model_type: str, image_encoder, prompt_encoder, mask_decoder):
        super().__init__(
            image_encoder=image_encoder,
            prompt_encoder=prompt_encoder,
            mask_decoder=mask_decoder,
            pixel_mean=[123.675, 116.28, 103.53],
            pixel_std=[58.395, 57.12, 57.375],
        )
        self.model_type = model_type
        self.precision = "fp32"
        # replay single-slice encodings on CUDA from a graph (see .cuda_graph)
        self.cuda_graphs = True

    @property
    def precision(self) -> str:
        """Encoder precision: ``fp32`` (exact), ``bf16`` or ``fp16``.

        Reduced precisions run the encoder under autocast with pre-cast weights
        (:mod:`napari_hq_sam.model.fast`); the decoder always runs in fp32.
        Setting ``"auto"`` stores the fastest one on the model's current device,
        :func:`~napari_hq_sam.model.fast.best_precision`.
        """
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        if value == "auto":
            value = best_precision(self.device)
        check_precision(value)
        self._precision = value

    @torch.no_grad()
    def encode(self, images: torch.Tensor, *, fuse: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode preprocessed images into what the decoder needs.

        Parameters
        ----------
        images : torch.Tensor
            (B, 3, 1024, 1024) float images, already normalised and padded with
            :meth:`preprocess`.
        fuse : bool
            Fuse the early feature into the HQ features (inference). False returns
            the raw early ViT feature instead, for training the fusion layers.

        Returns
        -------
        embeddings : torch.Tensor
            (B, 256, 64, 64) image embeddings, float32.
        hq_features : torch.Tensor
            (B, 32, 256, 256) prompt-independent HQ features; with ``fuse=False`` the
            early feature (B, 64, 64, C) instead, float32.
        """
        dtype = check_precision(self.precision)
        encoder = (self.image_encoder if dtype == torch.float32
                   else cast_copy(self, self.image_encoder, dtype))

        def run(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if dtype == torch.float32:
                with true_fp32(batch.device):
                    embeddings, early = encoder(batch)
                    if not fuse:
                        return embeddings, early
                    return embeddings, self.mask_decoder.compute_hq_features(embeddings, early)
            # no autocast cache: the weights are pre-cast, and CUDA graph capture
            # does not allow it
            with torch.autocast(batch.device.type, dtype=dtype, cache_enabled=False):
                embeddings, early = encoder(batch)
            embeddings, early = embeddings.float(), early.float()
            if not fuse:
                return embeddings, early
            return embeddings, self.mask_decoder.compute_hq_features(embeddings, early)

        if fuse and graphs_apply(self, images):
            return graphed_call(self, run, images, variant=(dtype, id(encoder)))
        return run(images)
