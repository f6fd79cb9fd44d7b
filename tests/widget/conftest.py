"""The widget tests need napari and a Qt binding: all are marked ``gui``, none is collected
without them (a core install runs ``pytest -m "not gui"`` with neither)."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _gui_missing() -> str | None:
    """Why the widget tests cannot run here, or None when napari and Qt import."""
    try:
        import napari  # noqa: F401
        import qtpy  # noqa: F401  (raises when no Qt binding is installed)
    except (ImportError, RuntimeError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


GUI_MISSING = _gui_missing()
if GUI_MISSING is not None:
    collect_ignore_glob = ["*.py"]


def pytest_collection_modifyitems(config, items) -> None:
    # pytest calls this hook with every collected item, not only this folder's
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.gui)
