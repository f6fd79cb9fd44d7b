"""The fault matrix's harness: run ``hqsam`` on damaged input and check what a user sees.

Every case states the expected exit code, that stderr is one line without a traceback
(for a user error), what it must say, that the inputs are unchanged and that nothing
is left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from napari_hq_sam.cli import main


@dataclass
class Outcome:
    """What one ``hqsam`` call did."""

    code: int
    stdout: str
    stderr: str


def run_cli(argv: list[str]) -> Outcome:
    """``hqsam *argv`` in this process (fast), with its exit code and printed text."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse's own errors
            code = exc.code if isinstance(exc.code, int) else 1
    return Outcome(code, out.getvalue(), err.getvalue())


def assert_user_error(outcome: Outcome, *fragments: str, code: int = 2) -> str:
    """A user error: exit ``code``, one stderr line, no traceback, naming ``fragments``.

    Returns the line.
    """
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert outcome.code == code, (outcome.code, outcome.stderr)
    assert "Traceback" not in outcome.stderr, outcome.stderr
    assert len(lines) == 1, outcome.stderr
    line = lines[0]
    for fragment in fragments:
        assert fragment.lower() in line.lower(), (fragment, line)
    return line


def snapshot(folder: Path) -> dict[str, str]:
    """``relative path -> sha256`` of every file under ``folder`` (hidden ones included)."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary or partial files a run may have left in ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*")
                  if p.name.startswith(".") and (".partial" in p.name or ".tmp" in p.name))
