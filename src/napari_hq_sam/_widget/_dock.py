"""The frame every HQ-SAM dock shares: its controls scroll inside the dock, so that docking
all of the plugin's widgets never makes napari's window taller than the screen."""

from __future__ import annotations

from qtpy.QtCore import QSize, Qt
from qtpy.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QScrollArea,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

# The height a dock asks for at most; more content scrolls.
PREFERRED_HEIGHT = 420
MIN_HEIGHT = 120


class _VerticalScrollArea(QScrollArea):
    """Scrolls vertically only: as wide as its content needs, as tall as the dock allows."""

    def _extra_width(self) -> int:
        return self.verticalScrollBar().sizeHint().width() + 2 * self.frameWidth()

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        content = self.widget()
        width = content.minimumSizeHint().width() if content is not None else 0
        return QSize(width + self._extra_width(), MIN_HEIGHT)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        content = self.widget()
        hint = content.sizeHint() if content is not None else QSize(0, 0)
        return QSize(hint.width() + self._extra_width(), min(hint.height(), PREFERRED_HEIGHT))


def scrolling_layout(dock: QWidget) -> QVBoxLayout:
    """Give ``dock`` a vertical scroll area and return the layout inside it.

    The dock asks for at most :data:`PREFERRED_HEIGHT` pixels (more scrolls) and for
    the width its controls need, so nothing is cut off at the right edge; long texts
    wrap.
    """
    outer = QVBoxLayout(dock)
    outer.setContentsMargins(0, 0, 0, 0)
    area = _VerticalScrollArea(dock)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
    content = QWidget()
    area.setWidget(content)
    outer.addWidget(area)
    dock.scroll_area = area
    return QVBoxLayout(content)


def row(*widgets: QWidget) -> QWidget:
    """The widgets side by side, without margins (one form row)."""
    box = QWidget()
    layout = QHBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    for widget in widgets:
        layout.addWidget(widget)
    return box


class Fold(QWidget):
    """A titled section whose content shows only when unfolded (folded at first).

    Attributes
    ----------
    toggle : QToolButton
        The title with its arrow; checked when unfolded.
    content : QWidget
    """

    def __init__(self, title: str, content: QWidget, parent: QWidget | None = None):
        super().__init__(parent)
        self.toggle = QToolButton()
        self.toggle.setText(title)
        self.toggle.setCheckable(True)
        self.toggle.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.toggle.setArrowType(Qt.RightArrow)
        self.toggle.setAutoRaise(True)
        self.content = content
        content.setVisible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.toggle)
        layout.addWidget(content)
        self.toggle.toggled.connect(self.set_open)

    def set_open(self, unfolded: bool) -> None:
        """Show or hide the content."""
        if self.toggle.isChecked() != unfolded:
            self.toggle.setChecked(unfolded)  # calls back here once
            return
        self.toggle.setArrowType(Qt.DownArrow if unfolded else Qt.RightArrow)
        self.content.setVisible(unfolded)

    def set_title(self, title: str) -> None:
        self.toggle.setText(title)
