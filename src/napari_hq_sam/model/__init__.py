"""HQ-SAM model: encoders, HQ mask decoder, builders and checkpoint loading."""

from .build import MODEL_REGISTRY, MODEL_TYPES, build_hq_sam, check_model_type
from .checkpoint import CheckpointError, detect_model_type
from .hq_decoder import HQ_KEY_PREFIXES, HQ_MODULE_NAMES, MaskDecoderHQ
from .hq_sam import HQSam

__all__ = [
    "HQ_KEY_PREFIXES",
    "HQ_MODULE_NAMES",
    "MODEL_REGISTRY",
    "MODEL_TYPES",
    "CheckpointError",
    "HQSam",
    "MaskDecoderHQ",
    "build_hq_sam",
    "check_model_type",
    "detect_model_type",
]
