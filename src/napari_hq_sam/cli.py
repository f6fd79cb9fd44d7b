"""The ``hqsam`` console script: argument parsing only; each subcommand calls the library.

Subcommands live in :mod:`napari_hq_sam.commands`, one module each, exposing
``register(subparsers)`` which adds a parser whose ``func`` runs the command.

Exit status: 0 done, 2 an error the user can fix (one line on stderr), 1 a bug
(traceback and where to report it), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM,
handled like Ctrl-C: temporary outputs are removed, embeddings already stored in a
cache folder stay there for a rerun).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import shlex
import signal
import sys
import threading
import traceback
import warnings

from . import __version__
from .errors import HQSamError, HQSamWarning

SUBCOMMAND_MODULES = (
    "download",
    "info",
    "embed",
    "segment",
    "auto",
    "refine",
    "train",
    "evaluate",
)

# The project's "Bug Tracker" URL (pyproject.toml).
BUG_TRACKER = "https://github.com/napari-hq-sam/napari-hq-sam/issues"

# OS errors about the user's own files and disks: the user can fix them, so one line.
# Any other exception is a bug in this package and keeps its traceback.
_FILE_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
                NotADirectoryError)
_DISK_ERRNOS = frozenset(getattr(errno, name) for name in ("ENOSPC", "EROFS", "EDQUOT")
                         if hasattr(errno, name))


def is_user_error(exc: BaseException) -> bool:
    """True for an error the user can fix: an :class:`HQSamError`, or a file or disk error."""
    if isinstance(exc, (HQSamError, *_FILE_ERRORS)):
        return True
    return isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS


class _OneLineParser(argparse.ArgumentParser):
    """An option error is one line, like every other user error (no usage block)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="hqsam", description="HQ-SAM for microscopy and medical image stacks.")
    parser.add_argument("--version", action="version", version=f"napari-hq-sam {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"napari_hq_sam.commands.{name}").register(subparsers)
    return parser


def bug_report(argv: list[str]) -> str:
    """The line printed under the traceback of an unexpected error."""
    return (f"hqsam: this is a bug in napari-hq-sam {__version__}; please report it at "
            f"{BUG_TRACKER} with the command line (hqsam {shlex.join(argv)}) and the "
            "traceback above.")


def _warning_line(command: str, show_other):
    """``warnings.showwarning`` printing this package's warnings as one line each."""
    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, HQSamWarning):
            print(f"hqsam {command}: warning: {message}", file=sys.stderr)
        else:
            show_other(message, category, filename, lineno, file, line)
    return show


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that a run unwinds as on Ctrl-C."""


@contextlib.contextmanager
def _sigterm_interrupts():
    """While inside, SIGTERM raises :class:`Terminated` (once: a second one is ignored,
    so the cleanup it started can finish)."""
    if (not hasattr(signal, "SIGTERM")
            or threading.current_thread() is not threading.main_thread()):
        yield
        return

    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stopped_line(args, word: str) -> str:
    """What an interrupted run says: that it stopped, and what it kept for a rerun."""
    cache = getattr(args, "cache", None)
    kept = (f"; embeddings stored so far stay in {cache}: the same command resumes from them"
            if cache else "")
    # a run over a folder of images says where its finished outputs are
    return f"hqsam: {word}{kept}{getattr(args, 'stopped_note', '')}"


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; returns the exit status (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = build_parser().parse_args(argv)
    try:
        with _sigterm_interrupts(), warnings.catch_warnings():
            warnings.showwarning = _warning_line(args.command, warnings.showwarning)
            return int(args.func(args) or 0)
    except Terminated:
        print(_stopped_line(args, "terminated (SIGTERM)"), file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(_stopped_line(args, "interrupted"), file=sys.stderr)
        return 130
    except Exception as exc:
        if is_user_error(exc):
            message = str(exc) or type(exc).__name__
            print(f"hqsam {args.command}: error: {message}", file=sys.stderr)
            return 2
        traceback.print_exc()
        print(bug_report(argv), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
