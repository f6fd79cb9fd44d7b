"""Builders of the four HQ-SAM backbones behind a plain registry."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from segment_anything.modeling import PromptEncoder, TwoWayTransformer

from ..device import pick_device
from ..errors import InputError
from ..model_types import MODEL_TYPES
from .checkpoint import load_checkpoint
from .fast import accelerate
from .hq_decoder import MaskDecoderHQ
from .hq_sam import HQSam
from .tiny_vit import TinyViT
from .vit_encoder import HQImageEncoderViT

IMAGE_SIZE = 1024
PROMPT_DIM = 256
EMBEDDING_SIZE = 64


def _vit_encoder(embed_dim: int, depth: int, num_heads: int, global_attn: tuple[int, ...]):
    return HQImageEncoderViT(
        depth=depth, embed_dim=embed_dim, img_size=IMAGE_SIZE, mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=num_heads, patch_size=16,
        qkv_bias=True, use_rel_pos=True, global_attn_indexes=global_attn, window_size=14,
        out_chans=PROMPT_DIM,
    )


# model type -> (encoder factory, channels C of the early feature)
MODEL_REGISTRY = {
    "vit_tiny": (lambda: TinyViT(img_size=IMAGE_SIZE), 160),
    "vit_b": (partial(_vit_encoder, 768, 12, 12, (2, 5, 8, 11)), 768),
    "vit_l": (partial(_vit_encoder, 1024, 24, 16, (5, 11, 17, 23)), 1024),
    "vit_h": (partial(_vit_encoder, 1280, 32, 16, (7, 15, 23, 31)), 1280),
}
if tuple(MODEL_REGISTRY) != MODEL_TYPES:  # one list of names for parsers, widgets and builders
    raise ImportError("MODEL_REGISTRY and model_types.MODEL_TYPES disagree")


def check_model_type(model_type: str) -> str:
    """Return ``model_type`` or raise an InputError naming the valid choices."""
    if model_type not in MODEL_REGISTRY:
        raise InputError(
            f"Unknown model type {model_type!r}: choose one of {', '.join(MODEL_TYPES)}.")
    return model_type


def build_hq_sam(model_type: str, checkpoint: str | Path | None = None,
                 device: str | torch.device = "cpu", fast: bool = True) -> HQSam:
    """Build an HQ-SAM model in eval mode.

    Parameters
    ----------
    model_type : str
        ``vit_tiny``, ``vit_b``, ``vit_l`` or ``vit_h``.
    checkpoint : str or Path, optional
        An official HQ-SAM file (``sam_hq_<model_type>.pth``), loaded strictly with
        ``weights_only=True``. None gives random weights (for tests).
    device : str or torch.device
        Where to put the model.
    fast : bool
        Switch encoder and decoder to their inference fast paths (fused attention;
        for TinyViT, BatchNorm folded at inference; a folded HQ mask head). Same
        weights, state-dict keys and function (see :mod:`napari_hq_sam.model.fast`);
        False keeps the plain modules.

    Returns
    -------
    HQSam
        The model, in eval mode, with gradients disabled for every parameter.
    """
    encoder_factory, vit_dim = MODEL_REGISTRY[check_model_type(model_type)]
    device = pick_device(device) if device is not None else None  # before the slow load
    model = HQSam(
        model_type=model_type,
        image_encoder=encoder_factory(),
        prompt_encoder=PromptEncoder(
            embed_dim=PROMPT_DIM,
            image_embedding_size=(EMBEDDING_SIZE, EMBEDDING_SIZE),
            input_image_size=(IMAGE_SIZE, IMAGE_SIZE),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoderHQ(
            transformer=TwoWayTransformer(depth=2, embedding_dim=PROMPT_DIM, mlp_dim=2048,
                                          num_heads=8),
            transformer_dim=PROMPT_DIM,
            vit_dim=vit_dim,
        ),
    )
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, model_type)
    if fast:
        accelerate(model)
    model.requires_grad_(False)
    return model.to(device).eval()
