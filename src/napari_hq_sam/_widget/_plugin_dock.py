"""The frame of the "Segment everything" and training docks: the shared model bar on top,
their own controls, then the task panel (progress, Cancel, status), all scrolling."""

from __future__ import annotations

from qtpy.QtWidgets import QPushButton, QWidget

from ._dock import scrolling_layout
from ._model_bar import ModelBar
from ._runner import TaskRunner
from ._task_panel import TaskPanel


class PluginDock(QWidget):
    """Base of a dock whose work runs in one :class:`~._runner.TaskRunner`.

    Subclasses add their sections with :meth:`add_section`, then call :meth:`finish`,
    and list the buttons to disable while a task runs in :meth:`busy_buttons`.

    Attributes
    ----------
    viewer : napari.Viewer
    task_panel : TaskPanel
    status, cancel_button
        The task panel's status line and Cancel button.
    runner : TaskRunner
    model_bar : ModelBar
    session : ViewerSession
        The viewer's model, shared with every HQ-SAM widget.
    """

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.task_panel = TaskPanel()
        self.status = self.task_panel.status
        self.cancel_button = self.task_panel.cancel_button
        self.runner = TaskRunner(self.task_panel, self._on_busy)
        self.model_bar = ModelBar(napari_viewer, self.runner)
        self.session = self.model_bar.session
        self._content = scrolling_layout(self)
        self._content.addWidget(self.model_bar)

    def add_section(self, widget: QWidget) -> None:
        """Add a group of controls below the model bar."""
        self._content.addWidget(widget)

    def finish(self) -> None:
        """Put the task panel last."""
        self._content.addWidget(self.task_panel)
        self._content.addStretch()

    def busy_buttons(self) -> list[QPushButton]:
        """Buttons that start work (disabled while a task runs)."""
        return []

    def _on_busy(self, desc: str | None) -> None:
        for button in self.busy_buttons():
            button.setEnabled(desc is None)
        self.model_bar.set_enabled(desc is None)

    def close_dock(self) -> None:
        """Stop the task and stop following the session (the dock is going away)."""
        self.runner.close()
        self.model_bar.close()
