"""The backbone names, importable without torch (CLI parsers, widgets)."""

MODEL_TYPES = ("vit_tiny", "vit_b", "vit_l", "vit_h")
