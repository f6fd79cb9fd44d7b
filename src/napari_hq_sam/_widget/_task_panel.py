"""What every HQ-SAM dock shows of its running task: a bar with counts and time left,
Cancel beside it, and a status line whose errors are one plain sentence (details on
demand, and a napari notification).
"""

from __future__ import annotations

import time

from napari.utils.notifications import show_error
from qtpy.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ._errors import describe_error


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class TaskPanel(QWidget):
    """Progress bar, counts, time left and Cancel of a widget's task; its status line.

    Attributes
    ----------
    bar : QProgressBar
    counts : QLabel
        ``12 / 31 slices · 0 min 42 s left``.
    cancel_button : QPushButton
    status : QLabel
        Word-wrapped; the last message or error.
    details_button : QPushButton
        Shown after an error: opens its full text.
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setTextVisible(False)
        self.counts = QLabel("")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.setToolTip("Stop the running task; finished slices are kept.")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        # a long message wraps inside the dock instead of widening it
        self.status.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.details_button = QPushButton("Details…")
        self.details_button.setVisible(False)
        self.details_button.clicked.connect(self._show_details)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.bar, 1)
        row.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.counts)
        layout.addWidget(self.status)
        layout.addWidget(self.details_button)
        self._details = ""
        self._unit = ""
        self._started = 0.0
        self.set_idle()

    # -- task lifecycle (GUI thread) ------------------------------------------------------------
    def start(self, desc: str, unit: str = "") -> None:
        """A task begins: busy bar, Cancel enabled, ``desc…`` in the status line."""
        self._unit, self._started = unit, time.perf_counter()
        self._first = None
        self.bar.setRange(0, 0)  # busy until the first count arrives
        self.counts.setText("")
        self.cancel_button.setEnabled(True)
        self.set_status(f"{desc}…")

    def progress(self, done: int, total: int) -> None:
        """Show ``done`` of ``total`` and the time left, from the rate since the first count."""
        if total <= 0:
            return
        now = time.perf_counter()
        if self._first is None or done < self._first[0]:
            self._first = (done, now)
        self.bar.setRange(0, total)
        self.bar.setValue(min(done, total))
        text = f"{done} / {total}{' ' + self._unit if self._unit else ''}"
        first_done, first_time = self._first
        if done > first_done and done < total:
            rate = (now - first_time) / (done - first_done)
            text += f" · {format_seconds(rate * (total - done))} left"
        elif done >= total:
            text += f" · {format_seconds(now - self._started)}"
        self.counts.setText(text)

    def set_idle(self) -> None:
        """No task: Cancel disabled; the bar keeps the last task's final count."""
        if self.bar.maximum() == 0:  # still busy-looking: no count ever came
            self.bar.setRange(0, 1)
            self.bar.setValue(0)
        self.cancel_button.setEnabled(False)

    # -- messages ---------------------------------------------------------------------------------
    def set_status(self, text: str) -> None:
        """Show ``text`` (and forget the details of an earlier error)."""
        self.status.setText(text)
        self._details = ""
        self.details_button.setVisible(False)

    def show_error(self, exc: BaseException) -> None:
        """One plain sentence here and in a napari notification; the full text on demand."""
        short, details = describe_error(exc)
        self.status.setText(f"Error: {short}")
        self._details = details
        self.details_button.setVisible(bool(details))
        show_error(f"HQ-SAM: {short}")

    def _show_details(self) -> None:
        box = QMessageBox(QMessageBox.Warning, "HQ-SAM error", self.status.text(),
                          parent=self)
        box.setDetailedText(self._details)
        box.open()
