"""The ``hqsam`` console script: argument parsing only; each subcommand calls the library.

Subcommands live in :mod:`napari_hq_sam.commands`, one module each, exposing
``register(subparsers)`` which adds a parser whose ``func`` runs the command.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__

SUBCOMMAND_MODULES = (
    "download",
    "info",
    "segment",
    "auto",
    "train",
    "evaluate",
)

# Errors a user can fix: printed as one clear line, exit status 2, no traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, RuntimeError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hqsam", description="HQ-SAM for microscopy and medical image stacks.")
    parser.add_argument("--version", action="version", version=f"napari-hq-sam {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"napari_hq_sam.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("hqsam: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        print(f"hqsam {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
