"""Command-line options shared by the subcommands that read an image stack."""

from __future__ import annotations

import argparse


def add_layout_options(p: argparse.ArgumentParser) -> None:
    """Options telling how an N-D image maps to 2D slices and to the model's intensities."""
    p.add_argument("--axes", help="axis hint such as TCZYX (needed for 5-D images)")
    p.add_argument("--channel-axis", type=int, help="axis holding channels")
    p.add_argument("--channel", type=int, help="channel to segment along --channel-axis")
    p.add_argument("--rgb", action=argparse.BooleanOptionalAction, default=None,
                   help="the last axis is RGB (default: guessed from its length 3 or 4)")
    p.add_argument("--contrast-limits", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="values mapped to black and white (default: the image's min and max)")
