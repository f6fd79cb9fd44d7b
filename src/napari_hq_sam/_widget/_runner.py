"""One slow task at a time in a napari ``thread_worker``, shown in the widget's TaskPanel.

The task is a plain function ``fn(progress, should_stop) -> result`` that receives
the two plain callables the engine expects (``progress(done, total)`` and
``should_stop() -> bool``); no Qt object reaches the engine. Progress crosses to the
GUI thread through a queued Qt signal and drives the dock's own
:class:`~._task_panel.TaskPanel` (bar, counts, time left), whose Cancel button sets
the stop flag.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from napari.qt.threading import thread_worker
from qtpy.QtCore import QObject, Signal

from ._task_panel import TaskPanel


class _Relay(QObject):
    """Carries ``(done, total)`` from the worker thread to the GUI thread."""

    progressed = Signal(int, int)


class TaskRunner:
    """Run a widget's slow work off the GUI thread, one task at a time.

    Parameters
    ----------
    panel : TaskPanel
        Where progress, Cancel and errors show.
    on_busy : callable, optional
        ``on_busy(description or None)``: called with a description when a task
        starts and with None when it ends (to enable/disable buttons).
    """

    def __init__(self, panel: TaskPanel, on_busy: Callable[[str | None], None] | None = None):
        self.panel = panel
        self._on_busy = on_busy or (lambda desc: None)
        self._stop = threading.Event()
        self._relay = _Relay()
        self._relay.progressed.connect(panel.progress)
        #: Qt signal ``(done, total)``, emitted as the running task reports progress.
        self.progressed = self._relay.progressed
        panel.cancel_button.clicked.connect(self._cancel_clicked)
        self.worker = None
        self.last_duration: float | None = None
        self._closed = False

    @property
    def busy(self) -> bool:
        """A task is running."""
        return self.worker is not None

    def start(self, fn: Callable[[Callable[[int, int], None], Callable[[], bool]], Any], *,
              desc: str, on_done: Callable[[Any], None], unit: str = "",
              on_cancelled: Callable[[Any], None] | None = None) -> bool:
        """Start ``fn`` in a worker thread; False (and nothing started) if one is running.

        ``on_done(result)`` runs in the GUI thread when ``fn`` returns. If the user
        cancelled meanwhile, ``on_cancelled(result)`` runs instead when given (a
        stack run returns what it finished), else ``on_done``. ``unit`` names what
        ``progress`` counts (``slices``, ``steps``) in the panel.
        """
        if self.busy:
            return False
        self._stop = threading.Event()
        stop, relay = self._stop, self._relay

        def work():
            return fn(lambda done, total: relay.progressed.emit(int(done), int(total)),
                      stop.is_set)

        worker = thread_worker(work, start_thread=False, ignore_errors=True)()
        started = time.perf_counter()
        outcome: list = []

        def _returned(result):
            self.last_duration = time.perf_counter() - started
            outcome.append(result)

        def _finished():
            self._finished()  # the runner is free again before the callback runs
            if outcome and not self._closed:
                done = on_cancelled if stop.is_set() and on_cancelled is not None else on_done
                done(outcome[0])

        worker.returned.connect(_returned)
        worker.errored.connect(lambda exc: None if self._closed else self.panel.show_error(exc))
        worker.finished.connect(_finished)
        self.worker = worker
        self.panel.start(desc, unit)
        self._on_busy(desc)
        worker.start()
        return True

    def close(self) -> None:
        """Cancel the running task and drop its callbacks (the widget is going away)."""
        self._closed = True
        self._stop.set()

    def cancel(self) -> None:
        """Ask the running task to stop at its next check (safe from any thread)."""
        self._stop.set()

    def _cancel_clicked(self) -> None:
        self.cancel()
        if self.busy:
            self.panel.set_status("Cancelling…")

    def _finished(self) -> None:
        self.worker = None
        if not self._closed:
            self.panel.set_idle()
            self._on_busy(None)
