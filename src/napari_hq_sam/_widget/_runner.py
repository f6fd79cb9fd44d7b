"""One slow task at a time in a napari ``thread_worker``, with progress bar and cancel.

The task is a plain function ``fn(progress, should_stop) -> result`` that receives
the two plain callables the engine expects (``progress(done, total)`` and
``should_stop() -> bool``); no Qt object reaches the engine. Progress crosses to
the GUI thread through a queued Qt signal and drives a napari
``cancelable_progress`` bar (activity dock), whose Cancel button, like the
widget's own, sets the stop flag.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from napari.qt.threading import thread_worker
from napari.utils import cancelable_progress
from qtpy.QtCore import QObject, Signal


class _Relay(QObject):
    """Carries ``(done, total)`` from the worker thread to the GUI thread."""

    progressed = Signal(int, int)


class TaskRunner:
    """Run the widget's slow work off the GUI thread, one task at a time.

    Parameters
    ----------
    on_busy : callable
        ``on_busy(description or None)``: called with a description when a task
        starts and with None when it ends (to enable/disable buttons).
    on_error : callable
        ``on_error(exception)``, in the GUI thread, when a task raises.
    """

    def __init__(self, on_busy: Callable[[str | None], None],
                 on_error: Callable[[BaseException], None]):
        self._on_busy = on_busy
        self._on_error = on_error
        self._stop = threading.Event()
        self._relay = _Relay()
        self._relay.progressed.connect(self._show_progress)
        #: Qt signal ``(done, total)``, emitted in the GUI thread as a task reports progress.
        self.progressed = self._relay.progressed
        self._pbar = None
        self.worker = None
        self.last_duration: float | None = None
        self._closed = False

    @property
    def busy(self) -> bool:
        """A task is running."""
        return self.worker is not None

    def start(self, fn: Callable[[Callable[[int, int], None], Callable[[], bool]], Any], *,
              desc: str, on_done: Callable[[Any], None],
              on_cancelled: Callable[[Any], None] | None = None) -> bool:
        """Start ``fn`` in a worker thread; False (and nothing started) if one is running.

        ``on_done(result)`` runs in the GUI thread when ``fn`` returns. If the user
        cancelled meanwhile, ``on_cancelled(result)`` runs instead when given (a
        stack run returns what it finished), else ``on_done``.
        """
        if self.busy:
            return False
        self._stop = threading.Event()
        stop, relay = self._stop, self._relay
        self._pbar = cancelable_progress(total=0, desc=desc, cancel_callback=stop.set)

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
        worker.errored.connect(lambda exc: None if self._closed else self._on_error(exc))
        worker.finished.connect(_finished)
        self.worker = worker
        self._on_busy(desc)
        worker.start()
        return True

    def close(self) -> None:
        """Cancel the running task and drop its callbacks (the widget is going away)."""
        self._closed = True
        self._stop.set()

    def cancel(self) -> None:
        """Ask the running task to stop at its next check."""
        self._stop.set()

    def _show_progress(self, done: int, total: int) -> None:
        if self._pbar is None:
            return
        if total and self._pbar.total != total:
            self._pbar.total = total
        self._pbar.n = done
        self._pbar.refresh()

    def _finished(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.worker = None
        if not self._closed:
            self._on_busy(None)
