"""Qt dock widgets (the only package that imports Qt, magicgui or napari.qt)."""

from ._segment_widget import HQSamWidget

__all__ = ["HQSamWidget"]
