"""Command-line option groups shared by the subcommands.

Each ``add_*`` function adds one group of options to a subcommand's parser with the
same flags, help and defaults wherever it is used. The groups are separate (not one
"model" block) because argparse lists options in the order they were added, and
each subcommand keeps its own order in ``--help``.
"""

from __future__ import annotations

import argparse

from ..model_types import MODEL_TYPES as MODEL_CHOICES

PRECISIONS = ("fp32", "bf16", "fp16", "auto")


def add_model_options(p: argparse.ArgumentParser, base: bool = False) -> None:
    """``--model`` (required) and ``--checkpoint``.

    ``base``: the checkpoint is the base model under a trained adapter (train, evaluate).
    """
    p.add_argument("--model", required=True, choices=MODEL_CHOICES, help="HQ-SAM model type")
    p.add_argument("--checkpoint", metavar="FILE",
                   help="base checkpoint (default: the official file, downloaded once)" if base
                   else "checkpoint file (default: the official one, downloaded once)")


def add_output_options(p: argparse.ArgumentParser, adapter: bool = False) -> None:
    """``--out`` (required) and ``--overwrite``: a labels output, or an adapter file."""
    if adapter:
        p.add_argument("--out", required=True, metavar="ADAPTER",
                       help="adapter file to write (.pt)")
        p.add_argument("--overwrite", action="store_true",
                       help="replace an existing adapter file")
    else:
        p.add_argument("--out", required=True, metavar="OUT",
                       help="labels output: .tif or .zarr")
        p.add_argument("--overwrite", action="store_true", help="replace an existing output")


def add_device_option(p: argparse.ArgumentParser) -> None:
    """``--device``: cuda, mps or cpu; None picks the best available."""
    p.add_argument("--device", help="cuda, mps or cpu (default: best available)")


def add_precision_option(p: argparse.ArgumentParser) -> None:
    """``--precision`` of the image encoder (default fp32)."""
    p.add_argument("--precision", choices=PRECISIONS,
                   default="fp32", help="encoder precision (default fp32, exact); auto: the "
                   "fastest reduced precision on this device, measured on CPUs")


def add_adapter_option(p: argparse.ArgumentParser,
                       text: str = "HQ adapter file to load into the model") -> None:
    """``--adapter FILE``: an adapter written by ``hqsam train``; ``text`` is its help."""
    p.add_argument("--adapter", metavar="FILE", help=text)


def add_cache_option(p: argparse.ArgumentParser, required: bool = False) -> None:
    """``--cache DIR``: the on-disk embedding cache (``required`` where it is the output)."""
    p.add_argument("--cache", metavar="DIR", required=required,
                   help="zarr folder caching embeddings: reruns reuse them, killed runs resume")


def add_batch_size_option(p: argparse.ArgumentParser) -> None:
    """``--batch-size N``: slices through the encoder at once; None lets the engine decide."""
    p.add_argument("--batch-size", type=int, default=None,
                   help="slices encoded at once (default: from free GPU memory; 1 on CPUs)")


def add_dask_options(p: argparse.ArgumentParser,
                     workers_help: str = "run on a local Dask cluster") -> None:
    """``--workers N`` or ``--scheduler ADDRESS`` (not both); neither runs in this process."""
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, metavar="N", help=workers_help)
    where.add_argument("--scheduler", metavar="ADDRESS", help="join a Dask scheduler")


def add_data_options(p: argparse.ArgumentParser, multiple: bool) -> None:
    """``--image``/``--labels`` (repeatable when ``multiple``) and ``--crop``."""
    action = "append" if multiple else "store"
    p.add_argument("--image", required=True, action=action, metavar="IMG",
                   help="image file (.tif, .zarr, .npy)" + ("; repeat for more" if multiple
                                                             else ""))
    p.add_argument("--labels", required=True, action=action, metavar="LABELS",
                   help="instance labels of the image, 0 = background" +
                   (", one per --image" if multiple else ""))
    p.add_argument("--crop", metavar="Y0:Y1,X0:X1",
                   help="use only this window of the Y and X axes, numpy style, e.g. "
                   "':,:256' for the left 256 columns or ':,256:' for the rest")


def add_layout_options(p: argparse.ArgumentParser) -> None:
    """Options telling how an N-D image maps to 2D slices and to the model's intensities."""
    p.add_argument("--axes", help="axis hint such as TCZYX (needed for 5-D images)")
    p.add_argument("--channel-axis", type=int, help="axis holding channels")
    p.add_argument("--channel", type=int, help="channel to segment along --channel-axis")
    p.add_argument("--rgb", action=argparse.BooleanOptionalAction, default=None,
                   help="the last axis is RGB (default: guessed from its length 3 or 4)")
    p.add_argument("--contrast-limits", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="values mapped to black and white (default: the image's min and max)")


def add_contrast_option(p: argparse.ArgumentParser) -> None:
    """``--contrast``: how the default contrast limits come from the whole image."""
    p.add_argument("--contrast", choices=("minmax", "percentile"), default="minmax",
                   help="default contrast limits: min/max or 0.5/99.5 percentiles")


def add_quiet_option(p: argparse.ArgumentParser) -> None:
    """``--quiet``: no progress bar."""
    p.add_argument("--quiet", action="store_true", help="no progress bar")
