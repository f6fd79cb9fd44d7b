"""The widget tests need napari, a Qt binding and a display: all are marked ``gui``.

Without napari or Qt none is collected (a core install runs ``pytest -m "not gui"`` with
neither). With them but without a display Qt can start on, the gui tests are skipped
with one message naming the missing piece: Qt aborts the whole Python process when its
platform plugin cannot start, so pytest-qt's ``qapp`` fixture would otherwise end the run
with ``Fatal Python error: Aborted``. Whether Qt can start is tried in a subprocess.
``NAPARI_HQ_SAM_REQUIRE_GUI=1`` (CI) turns the skip into an error.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REQUIRE_GUI = "NAPARI_HQ_SAM_REQUIRE_GUI"
SUMMARY_TITLE = "napari widget tests skipped"
_PROBLEM = pytest.StashKey[str]()  # the message, kept for the end of the run
PROBE_TIMEOUT_S = 120
# what pytest-qt's qapp fixture does first, in a process that may abort
PROBE = (
    "import sys\n"
    "from qtpy.QtWidgets import QApplication\n"
    "app = QApplication(sys.argv[:1])\n"
    "print('platform', app.platformName())\n"
)
INSTALL_FIX = (
    "On Debian/Ubuntu `bash scripts/install-system-packages.sh` installs Xvfb and the\n"
    "libraries Qt needs; then run the tests in a virtual X server:\n"
    "    xvfb-run -a python -m pytest -q\n"
)
HEADLESS_HINT = 'The tests that need no display run with: python -m pytest -m "not gui"'


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


def _uses_x11(platform: str) -> bool:
    """Whether Qt will look for an X server: xcb asked for, or Linux's default."""
    if platform:
        return platform.split(":")[0] == "xcb"
    return sys.platform.startswith("linux") and not os.environ.get("WAYLAND_DISPLAY")


def _cause(stderr: str, display: str) -> tuple[str, str]:
    """The missing piece and its fix, read from what Qt wrote while failing to start."""
    plugin = re.search(r'Could not find the Qt platform plugin "([^"]*)"', stderr)
    if plugin:
        available = re.search(r"Available platform plugins are: (.*?)\.?$", stderr, re.M)
        return (
            f'Qt has no platform plugin "{plugin.group(1)}" (QT_QPA_PLATFORM)',
            "Unset QT_QPA_PLATFORM or set it to one of: "
            f"{available.group(1) if available else 'the plugins Qt lists'}.\n",
        )
    # only the platform plugin matters: Qt gets by without an image format or GL helper
    library = re.search(r"Cannot load library (\S*/platforms/\S+): \(?(.*?)\)?\s*$", stderr,
                        re.M)
    if library:
        return (f"Qt cannot load its platform plugin {Path(library.group(1)).name}: "
                f"{library.group(2)}", INSTALL_FIX)
    if re.search(r"could not connect to display", stderr):
        return f"no X server answers on DISPLAY={display}", INSTALL_FIX
    said = [line for line in stderr.splitlines()
            if line.strip() and not line.startswith("qt.core.")]
    return "Qt could not start: " + " / ".join(said[-3:]), INSTALL_FIX


def display_problem() -> str | None:
    """Why Qt cannot start a QApplication here, with the fix; None when it can."""
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    display = os.environ.get("DISPLAY", "")
    where = f"QT_QPA_PLATFORM={platform or '(unset)'}, DISPLAY={display or '(unset)'}"
    if _uses_x11(platform) and not display:
        cause, fix = "DISPLAY is not set: there is no X server for Qt", INSTALL_FIX
    else:
        # Qt's plugin loader names the library that failed to load
        env = {**os.environ, "QT_DEBUG_PLUGINS": "1"}
        try:
            run = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                                 text=True, timeout=PROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            cause = f"starting a QApplication took more than {PROBE_TIMEOUT_S} s"
            fix = INSTALL_FIX
        else:
            if run.returncode == 0:
                return None
            cause, fix = _cause(run.stderr, display)
    return (f"Qt cannot start here ({where}).\n"
            f"Missing: {cause}.\n{fix}{HEADLESS_HINT}")


def _in_this_folder(item) -> bool:
    return HERE in Path(item.path).resolve().parents


def pytest_collection_modifyitems(config, items) -> None:
    # pytest calls this hook with every collected item, not only this folder's
    for item in items:
        if _in_this_folder(item):
            item.add_marker(pytest.mark.gui)


def pytest_collection_finish(session) -> None:
    # after `-m` deselection: a run without gui tests starts no probe
    if not any(_in_this_folder(item) for item in session.items):
        return
    problem = display_problem()
    if problem is None:
        return
    if os.environ.get(REQUIRE_GUI) == "1":
        pytest.exit(f"{REQUIRE_GUI}=1 but {problem}", returncode=pytest.ExitCode.USAGE_ERROR)
    session.config.stash[_PROBLEM] = problem
    skip = pytest.mark.skip(reason=f"{SUMMARY_TITLE}: Qt cannot start (see the summary)")
    for item in session.items:
        if _in_this_folder(item):
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter, config) -> None:
    problem = config.stash.get(_PROBLEM, None)
    if problem is not None:
        terminalreporter.section(SUMMARY_TITLE, sep="=", yellow=True, bold=True)
        terminalreporter.line(problem)


