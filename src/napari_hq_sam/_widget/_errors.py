"""Errors as a person at the viewer reads them: one sentence on what happened and what to
do in this window; the full text (and traceback of a bug) kept for "Details…"."""

from __future__ import annotations

import traceback

from ..errors import HQSamError

_NETWORK = ("No internet connection, or the download site cannot be reached: in the model "
            "bar choose 'local checkpoint file…' and pick a downloaded {file} (on a machine "
            "with internet: hqsam download {model}).")


def describe_error(exc: BaseException) -> tuple[str, str]:
    """``(short, details)`` of an exception raised by a widget task.

    Parameters
    ----------
    exc : BaseException

    Returns
    -------
    short : str
        One plain sentence for the status line and the notification.
    details : str
        The full message and, for anything that is not a user error, the traceback
        (empty when the short text says it all).
    """
    full = str(exc) or type(exc).__name__
    network = _network_problem(exc)
    if network is not None:
        return network, full
    if isinstance(exc, (HQSamError, OSError)):
        first = full.split("\n", 1)[0]
        return first, (full if first != full else "")
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return (f"Unexpected error ({type(exc).__name__}: {full.splitlines()[0]}). This is a "
            "bug in napari-hq-sam; Details… has the text to report."), trace


def _network_problem(exc: BaseException) -> str | None:
    """The plain network sentence when a download failed for lack of a connection."""
    from ..weights import DownloadError

    if not isinstance(exc, DownloadError):
        return None
    cause = exc.__cause__
    try:
        import requests
    except ImportError:  # pragma: no cover - requests is a dependency
        return None
    if isinstance(cause, (requests.ConnectionError, requests.Timeout)):
        model = getattr(exc, "model_type", None) or "vit_tiny"
        from ..model_types import REGISTRY

        entry = REGISTRY.get(model)
        return _NETWORK.format(file=entry.filename if entry else "sam_hq_*.pth", model=model)
    return None
