"""The errors a user can fix, all under one base class.

Everything this package raises because of its input (a file, an option, a prompt,
a model choice) is a :class:`HQSamError`: the CLI prints its message as one line and
exits with status 2, the widget shows it in its status line. Any other exception is
a bug, and keeps its traceback.

The subclasses also derive from the matching built-in exception, so code that
catches ``ValueError`` or ``FileNotFoundError`` keeps working.
"""

from __future__ import annotations


class HQSamError(Exception):
    """Base class of the errors a user can fix; the message says what to do."""


class InputError(HQSamError, ValueError):
    """An image, prompt, labels array, option or argument that cannot be used."""


class MissingFileError(HQSamError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class OutputError(HQSamError, OSError):
    """An output that cannot be written (exists, unwritable, no space)."""


class HQSamWarning(UserWarning):
    """Something the user should know while the run goes on (the CLI prints it as one line)."""


class Cancelled(Exception):
    """Raised inside a run when its ``should_stop()`` callable returned True.

    Not an error: runs catch it and keep what they finished.
    """
