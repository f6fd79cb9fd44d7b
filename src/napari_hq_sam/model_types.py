"""The backbone names and their official checkpoint files, importable without torch.

CLI parsers and widgets read these before torch is imported; the model package
(error hints) and :mod:`napari_hq_sam.weights` (downloads) share the same table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CheckpointFile:
    """One official file: name, pinned revision, and what is known of its content."""

    filename: str
    revision: str
    size: int | None  # bytes, when known
    sha256_prefix: str | None  # leading hex digits of the sha256, when known


# The official files of lkeab/hq-sam on the Hugging Face hub, one per backbone.
REGISTRY = {
    "vit_tiny": CheckpointFile("sam_hq_vit_tiny.pth", "a3a77cd0a2e5e50eaa76faccf61b964732d9b35f",
                               42_526_881, "0f32c075"),
    "vit_b": CheckpointFile("sam_hq_vit_b.pth", "67ab82412bc794d5ce2e9799b8b6a3c0a8cfe1d2",
                            379_335_069, "14a9d662"),
    "vit_l": CheckpointFile("sam_hq_vit_l.pth", "67ab82412bc794d5ce2e9799b8b6a3c0a8cfe1d2",
                            None, None),
    "vit_h": CheckpointFile("sam_hq_vit_h.pth", "67ab82412bc794d5ce2e9799b8b6a3c0a8cfe1d2",
                            2_570_940_653, "a7ac14a0"),
}

MODEL_TYPES = tuple(REGISTRY)  # ("vit_tiny", "vit_b", "vit_l", "vit_h"), smallest first
