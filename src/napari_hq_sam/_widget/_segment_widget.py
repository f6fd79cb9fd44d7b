"""The HQ-SAM segmentation dock widget contributed through the npe2 manifest."""

from __future__ import annotations

from ._controller import SegmentController
from ._view import SegmentView


class HQSamWidget(SegmentView):
    """Interactive HQ-SAM segmentation of 2D images and slices of stacks.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        Injected by napari when the widget is docked.
    """

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.controller = SegmentController(napari_viewer, self)

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        """Unbind the viewer events this widget connected."""
        self.controller.close()
        super().closeEvent(event)
