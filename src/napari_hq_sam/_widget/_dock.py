"""The frame every HQ-SAM dock shares: its controls scroll inside the dock, so that docking
all of the plugin's widgets never makes napari's window taller than the screen."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFrame, QScrollArea, QSizePolicy, QVBoxLayout, QWidget


def scrolling_layout(dock: QWidget) -> QVBoxLayout:
    """Give ``dock`` a vertical scroll area and return the layout inside it.

    The dock asks for little height (the scroll area's minimum), and its content keeps
    the dock's width: long texts wrap instead of widening the dock.
    """
    outer = QVBoxLayout(dock)
    outer.setContentsMargins(0, 0, 0, 0)
    area = QScrollArea(dock)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
    content = QWidget()
    content.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Minimum)
    area.setWidget(content)
    outer.addWidget(area)
    dock.setMinimumHeight(120)
    dock.scroll_area = area
    return QVBoxLayout(content)
