"""One-image predictor with the official HQ-SAM contract, on numpy or torch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from segment_anything import SamPredictor

from .errors import InputError
from .model import HQSam
from .predictor_checks import (
    check_flag,
    check_image,
    check_image_format,
    check_prompts,
    check_torch_image,
    check_torch_prompts,
    describe,
)


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

    Arguments are checked at the boundary (:mod:`napari_hq_sam.predictor_checks`): a
    wrong image or prompt raises :class:`~napari_hq_sam.errors.InputError` (a
    ``ValueError``) naming the argument, what it must be and what was given. A float
    image is refused, not rescaled: convert it with
    :func:`napari_hq_sam.engine.image.to_model_image` (or ``np.uint8`` when its values
    already are 0-255).
    """

    def __init__(self, model: HQSam):
        if not isinstance(model, HQSam):
            raise InputError(f"model must be an HQSam (from napari_hq_sam.build_hq_sam or "
                             f"load_model), got {describe(model)}.")
        super().__init__(model)

    # -- image ------------------------------------------------------------------------------
    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Embed ``image``, so that masks can be predicted for it.

        Parameters
        ----------
        image : np.ndarray
            ``(H, W, 3)`` uint8 RGB (float images are refused: see the class docstring).
        image_format : str
            ``"RGB"`` or ``"BGR"`` (the channels are swapped for the latter).
        """
        check_image(image, "image", self.transform.target_length)
        check_image_format(image_format)
        super().set_image(image, image_format)

    @torch.no_grad()
    def set_torch_image(self, transformed_image: torch.Tensor,
                        original_image_size: tuple[int, ...]) -> None:
        """Embed an image already resized with ``self.transform``.

        Parameters
        ----------
        transformed_image : torch.Tensor
            ``(1, 3, h, w)`` uint8 or float, values 0-255 (not normalised), long side
            1024: ``transform.apply_image`` of the image, channels first.
        original_image_size : tuple of int
            ``(H, W)`` of the image before resizing.
        """
        size = check_torch_image(transformed_image, original_image_size,
                                 self.model.image_encoder.img_size)
        transformed_image = transformed_image.to(self.device)
        self.reset_image()
        embeddings, hq_features = self.model.encode(self.model.preprocess(transformed_image))
        self.set_image_embedding(ImageEmbedding(
            embeddings, hq_features, size, tuple(transformed_image.shape[-2:])))

    def get_image_embedding(self) -> ImageEmbedding:
        """Return the current image's :class:`ImageEmbedding` (to cache it)."""
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before reading its "
                               "embedding.")
        return ImageEmbedding(self.features, self.hq_features, self.original_size,
                              self.input_size)

    def set_image_embedding(self, embedding: ImageEmbedding) -> None:
        """Restore a cached :class:`ImageEmbedding` instead of running the encoder."""
        if not isinstance(embedding, ImageEmbedding):
            raise InputError(f"embedding must be an ImageEmbedding (from get_image_embedding), "
                             f"got {describe(embedding)}.")
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
        """Predict the mask of one object from its points, box and/or mask (at least one).

        Parameters
        ----------
        point_coords : np.ndarray, optional
            (N, 2) finite points, (X, Y) in pixels of the original image.
        point_labels : np.ndarray, optional
            (N,) 1 for a positive point, 0 for a negative one; required with points.
        box : np.ndarray, optional
            (4,) or (1, 4) box, XYXY in pixels, ``x0 <= x1`` and ``y0 <= y1``.
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

        Raises
        ------
        InputError
            A prompt or flag of the wrong shape, dtype or value (see the class docstring).
        """
        self._require_image()
        point_coords, point_labels, box, mask_input = check_prompts(
            point_coords, point_labels, box, mask_input, self.model.prompt_encoder.mask_input_size)
        self._check_flags(multimask_output, return_logits, hq_token_only)
        coords, labels, boxes, masks_in = None, None, None, None
        if point_coords is not None:
            coords = self._as_tensor(self.transform.apply_coords(point_coords, self.original_size),
                                     torch.float)[None]
            labels = self._as_tensor(point_labels, torch.int)[None]
        if box is not None:
            boxes = self._as_tensor(self.transform.apply_boxes(box, self.original_size),
                                    torch.float)[None]
        if mask_input is not None:
            masks_in = self._as_tensor(mask_input, torch.float)[None]
        masks, scores, low_res = self._predict_torch(
            coords, labels, boxes, masks_in, multimask_output, return_logits, hq_token_only)
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
            (B, N) 1 positive, 0 negative, -1 a padding point (ignored; lets prompts
            with fewer points share the batch).
        boxes : torch.Tensor or None
            (B, 4) XYXY boxes in the 1024 input frame (``apply_boxes_torch``),
            ``x0 <= x1`` and ``y0 <= y1``.
        mask_input : torch.Tensor or None
            (B, 1, 256, 256) (or (1, 1, 256, 256) for all) low-resolution logits.

        Tensors on another device are moved to the predictor's. The values are
        checked (finite, labels, box order) in one transfer from the device.

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
        check_torch_prompts(point_coords, point_labels, boxes, mask_input,
                            self.model.prompt_encoder.mask_input_size)
        self._check_flags(multimask_output, return_logits, hq_token_only)
        point_coords, point_labels, boxes, mask_input = (
            None if t is None else t.to(self.device)
            for t in (point_coords, point_labels, boxes, mask_input))
        if mask_input is not None:
            mask_input = mask_input.to(self.model.prompt_encoder.mask_downscaling[0].weight.dtype)
        return self._predict_torch(point_coords, point_labels, boxes, mask_input,
                                   multimask_output, return_logits, hq_token_only)

    @torch.no_grad()
    def _predict_torch(self, point_coords, point_labels, boxes, mask_input, multimask_output,
                       return_logits, hq_token_only):
        """:meth:`predict_torch` on checked prompts, on the predictor's device."""
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

    @staticmethod
    def _check_flags(multimask_output, return_logits, hq_token_only) -> None:
        check_flag(multimask_output, "multimask_output")
        check_flag(return_logits, "return_logits")
        check_flag(hq_token_only, "hq_token_only")

    def _as_tensor(self, array, dtype) -> torch.Tensor:
        return torch.as_tensor(array, dtype=dtype, device=self.device)
