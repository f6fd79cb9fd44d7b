"""One-image predictor with the official HQ-SAM contract, on numpy or torch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from segment_anything import SamPredictor

from .model import HQSam


@dataclass
class ImageEmbedding:
    """Everything the HQ decoder needs from one image; cacheable.

    Attributes
    ----------
    embeddings : torch.Tensor
        (1, 256, 64, 64) image-encoder output.
    hq_features : torch.Tensor
        (1, 32, 256, 256) fused early/final feature of the HQ branch.
    original_size : tuple of int
        (H, W) of the image given to ``set_image``.
    input_size : tuple of int
        (h, w) after resizing the long side to 1024, before padding.
    """

    embeddings: torch.Tensor
    hq_features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]

    def to(self, device) -> ImageEmbedding:
        """Copy of this embedding on ``device``."""
        return ImageEmbedding(self.embeddings.to(device), self.hq_features.to(device),
                              self.original_size, self.input_size)


class HQSamPredictor(SamPredictor):
    """Compute an image's embedding once, then predict masks for many prompts.

    Same contract as the official ``segment_anything_hq.SamPredictor``: ``predict``
    returns ``(masks, scores, low_res_logits)``, one mask per call whether or not
    ``multimask_output`` is set (with it, SAM's best of its three multimask tokens
    is combined with the HQ token). The prompt-independent HQ feature is computed
    once in ``set_image`` instead of on every prompt.

    Coordinates are (X, Y) in pixels of the original image; boxes are XYXY.
    """

    def __init__(self, model: HQSam):
        if not isinstance(model, HQSam):
            raise TypeError("HQSamPredictor needs an HQSam model; build one with build_hq_sam().")
        super().__init__(model)

    # -- image ------------------------------------------------------------------------------
    @torch.no_grad()
    def set_torch_image(self, transformed_image: torch.Tensor,
                        original_image_size: tuple[int, ...]) -> None:
        """Embed an image already resized with ``self.transform`` (1, 3, h, w), long side 1024."""
        if not (transformed_image.ndim == 4 and transformed_image.shape[1] == 3
                and max(transformed_image.shape[2:]) == self.model.image_encoder.img_size):
            raise ValueError("set_torch_image input must be (1, 3, H, W) with long side "
                             f"{self.model.image_encoder.img_size}.")
        self.reset_image()
        embeddings, hq_features = self.model.encode(self.model.preprocess(transformed_image))
        self.set_image_embedding(ImageEmbedding(
            embeddings, hq_features, tuple(original_image_size)[:2],
            tuple(transformed_image.shape[-2:])))

    def get_image_embedding(self) -> ImageEmbedding:
        """Return the current image's :class:`ImageEmbedding` (to cache it)."""
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before reading its "
                               "embedding.")
        return ImageEmbedding(self.features, self.hq_features, self.original_size,
                              self.input_size)

    def set_image_embedding(self, embedding: ImageEmbedding) -> None:
        """Restore a cached :class:`ImageEmbedding` instead of running the encoder."""
        embedding = embedding.to(self.device)
        self.features = embedding.embeddings
        self.hq_features = embedding.hq_features
        self.original_size = tuple(embedding.original_size)
        self.input_size = tuple(embedding.input_size)
        self.is_image_set = True

    def reset_image(self) -> None:
        """Forget the current image."""
        super().reset_image()
        self.hq_features = None

    # -- prompts ----------------------------------------------------------------------------
    def predict(self, point_coords: np.ndarray | None = None,
                point_labels: np.ndarray | None = None, box: np.ndarray | None = None,
                mask_input: np.ndarray | None = None, multimask_output: bool = True,
                return_logits: bool = False, hq_token_only: bool = False,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predict the mask of one object from its prompts.

        Parameters
        ----------
        point_coords : np.ndarray, optional
            (N, 2) points, (X, Y) in pixels of the original image.
        point_labels : np.ndarray, optional
            (N,) 1 for a positive point, 0 for a negative one.
        box : np.ndarray, optional
            (4,) box, XYXY in pixels.
        mask_input : np.ndarray, optional
            (1, 256, 256) low-resolution logits from a previous call.
        multimask_output : bool
            Use SAM's best multimask token (True) or its single-mask token (False).
        return_logits : bool
            Return logits instead of thresholded masks.
        hq_token_only : bool
            HQ logits alone (advised for single objects) instead of SAM + HQ logits.

        Returns
        -------
        masks : np.ndarray
            (1, H, W) bool masks (or float logits) at the original size.
        scores : np.ndarray
            (1,) SAM's predicted IoU.
        low_res_logits : np.ndarray
            (1, 256, 256) logits to pass as ``mask_input`` later.
        """
        self._require_image()
        coords, labels, boxes, masks_in = None, None, None, None
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels must be supplied if point_coords is supplied.")
            coords = self._as_tensor(self.transform.apply_coords(point_coords, self.original_size),
                                     torch.float)[None]
            labels = self._as_tensor(point_labels, torch.int)[None]
        if box is not None:
            boxes = self._as_tensor(self.transform.apply_boxes(box, self.original_size),
                                    torch.float)[None]
        if mask_input is not None:
            masks_in = self._as_tensor(mask_input, torch.float)[None]
        masks, scores, low_res = self.predict_torch(
            coords, labels, boxes, masks_in, multimask_output, return_logits=return_logits,
            hq_token_only=hq_token_only)
        return (masks[0].detach().cpu().numpy(), scores[0].detach().cpu().numpy(),
                low_res[0].detach().cpu().numpy())

    @torch.no_grad()
    def predict_torch(self, point_coords: torch.Tensor | None, point_labels: torch.Tensor | None,
                      boxes: torch.Tensor | None = None, mask_input: torch.Tensor | None = None,
                      multimask_output: bool = True, return_logits: bool = False,
                      hq_token_only: bool = False,
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batched twin of :meth:`predict`: B prompts on the current image.

        Parameters
        ----------
        point_coords : torch.Tensor or None
            (B, N, 2) points, (X, Y) already transformed to the 1024 input frame
            (``self.transform.apply_coords_torch``).
        point_labels : torch.Tensor or None
            (B, N) 1 positive, 0 negative.
        boxes : torch.Tensor or None
            (B, 4) XYXY boxes in the 1024 input frame (``apply_boxes_torch``).
        mask_input : torch.Tensor or None
            (B, 1, 256, 256) low-resolution logits.

        Returns
        -------
        masks : torch.Tensor
            (B, 1, H, W) bool masks or logits at the original size.
        scores : torch.Tensor
            (B, 1) predicted IoU.
        low_res_logits : torch.Tensor
            (B, 1, 256, 256).
        """
        self._require_image()
        low_res, scores = self.decode_torch(point_coords, point_labels, boxes, mask_input,
                                            multimask_output, hq_token_only)
        masks = self.model.postprocess_masks(low_res, self.input_size, self.original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks, scores, low_res

    def decode_torch(self, point_coords, point_labels, boxes=None, mask_input=None,
                     multimask_output=True, hq_token_only=False):
        """Prompt encoder and HQ decoder only: ``(low_res_logits (B,1,256,256), scores (B,1))``.

        Gradients flow when called outside ``torch.no_grad`` (used by training).
        """
        points = None if point_coords is None else (point_coords, point_labels)
        sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        return self.model.mask_decoder(
            image_embeddings=self.features,
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            hq_token_only=hq_token_only,
            hq_features=self.hq_features,
        )

    # -- helpers ----------------------------------------------------------------------------
    def _require_image(self) -> None:
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")

    def _as_tensor(self, array, dtype) -> torch.Tensor:
        return torch.as_tensor(array, dtype=dtype, device=self.device)
