"""Command-line option groups shared by the subcommands.

Each ``add_*`` function adds one group of options to a subcommand's parser with the
same flags, help and defaults wherever it is used. The groups are separate (not one
"model" block) because argparse lists options in the order they were added, and
each subcommand keeps its own order in ``--help``.
"""

from __future__ import annotations

import argparse
import math

from ..model_types import MODEL_TYPES as MODEL_CHOICES

PRECISIONS = ("fp32", "bf16", "fp16", "auto")


# -- value checks: argparse ``type=`` functions ---------------------------------------------
# argparse prints their ArgumentTypeError as "argument --flag: <message>" and exits 2,
# so nonsense (a batch of 0, a threshold of nan) stops before any file is read.

def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_int(text: str) -> int:
    """A whole number of at least 1 (counts, sizes, steps)."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """A whole number of at least 0 (extra layers, areas, seeds)."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value


def finite_float(text: str) -> float:
    """Any finite number (not nan, not inf)."""
    return _number(text)


def positive_float(text: str) -> float:
    """A finite number above 0 (learning rates)."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text!r}")
    return value


def unit_interval(text: str) -> float:
    """A number from 0 to 1, both included (IoU and score thresholds)."""
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {text!r}")
    return value


def fraction(text: str) -> float:
    """A number from 0 (included) to 1 (excluded): a share held out."""
    value = _number(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text!r}")
    return value


class ContrastLimitsAction(argparse.Action):
    """``--contrast-limits LOW HIGH``: two finite numbers with LOW below HIGH."""

    def __call__(self, parser, namespace, values, option_string=None):
        low, high = values
        if not low < high:
            raise argparse.ArgumentError(self, f"LOW must be below HIGH, got {low:g} {high:g}")
        setattr(namespace, self.dest, [low, high])


def add_model_options(p: argparse.ArgumentParser, base: bool = False,
                      required: bool = True) -> None:
    """``--model`` (``required`` unless the command can run without a model) and ``--checkpoint``.

    ``base``: the checkpoint is the base model under a trained adapter (train, evaluate).
    """
    p.add_argument("--model", required=required, choices=MODEL_CHOICES,
                   help="HQ-SAM model type")
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
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="slices encoded at once (default: from free GPU memory; 1 on CPUs)")


def add_dask_options(p: argparse.ArgumentParser,
                     workers_help: str = "run on a local Dask cluster") -> None:
    """``--workers N`` or ``--scheduler ADDRESS`` (not both); neither runs in this process."""
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=positive_int, metavar="N", help=workers_help)
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
    p.add_argument("--contrast-limits", type=finite_float, nargs=2, metavar=("LOW", "HIGH"),
                   action=ContrastLimitsAction,
                   help="values mapped to black and white (default: the image's min and max; "
                   "an OME-Zarr pyramid's from its smallest level)")
    p.add_argument("--level", type=non_negative_int, metavar="N",
                   help="resolution level of an OME-Zarr image to segment (default 0, the full "
                   "resolution); the output keeps that level's pixel size")


def add_tiling_options(p: argparse.ArgumentParser) -> None:
    """``--tile``, ``--halo``, ``--no-tiling``: how slices larger than the model input are cut."""
    p.add_argument("--tile", type=positive_int, default=1024, metavar="PX",
                   help="slices longer than this on a side are segmented in overlapping "
                   "square tiles of this size at native resolution (default 1024, the "
                   "model's input: no resizing)")
    p.add_argument("--halo", type=non_negative_int, default=128, metavar="PX",
                   help="overlap on each side of a tile's core; above the radius of your "
                   "largest objects is safest (default 128)")
    p.add_argument("--no-tiling", action="store_true",
                   help="resize every slice whole to the model input instead (fine "
                   "boundaries of slices larger than 1024 px are lost)")


def add_contrast_option(p: argparse.ArgumentParser) -> None:
    """``--contrast``: how the default contrast limits come from the whole image."""
    p.add_argument("--contrast", choices=("minmax", "percentile"), default="minmax",
                   help="default contrast limits: min/max or 0.5/99.5 percentiles")


def add_quiet_option(p: argparse.ArgumentParser) -> None:
    """``--quiet``: no progress bar."""
    p.add_argument("--quiet", action="store_true", help="no progress bar")
