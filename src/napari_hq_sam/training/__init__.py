"""Training of the HQ branch on the user's own labels (the encoder stays frozen).

``train_hq(model, [(image, labels), ...], TrainingConfig(steps=...))`` trains in
place and keeps the best step on held-out objects; save the result with
:func:`napari_hq_sam.adapters.save_adapter`.
"""

from .config import TrainingConfig
from .loop import TrainingResult, TrainingUpdate, train_hq

__all__ = ["TrainingConfig", "TrainingResult", "TrainingUpdate", "train_hq"]
