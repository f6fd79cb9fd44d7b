"""``hqsam embed IMAGE --model MODEL --cache DIR``: precompute the embeddings of a stack.

The folder is a signed embedding cache (:class:`~napari_hq_sam.engine.cache.EmbeddingCache`)
that ``hqsam segment --cache``, ``hqsam auto --cache`` and the widgets' embedding
folder reuse for the same model, precision and contrast limits.
"""

from __future__ import annotations

import itertools

from ..errors import InputError, OutputError
from ._common import (
    cache_report,
    check_cache_not_input,
    check_memory,
    check_model_inputs,
    converted_tile,
    model_spec,
    run_cache,
    tiling_from_args,
    tiling_note,
)
from ._image_sets import run_image_set
from ._options import (
    add_adapter_option,
    add_batch_size_option,
    add_cache_option,
    add_contrast_option,
    add_dask_options,
    add_device_option,
    add_layout_options,
    add_model_options,
    add_precision_option,
    add_quiet_option,
    add_tiling_options,
)
from ._progress import progress_bar, runs_on_dask, where_it_ran


def register(subparsers) -> None:

    p = subparsers.add_parser(
        "embed", help="precompute slice embeddings into a cache folder",
        description="Embed every 2D slice of an image (TIFF, zarr, npy), or the --slices "
        "chosen, into a zarr cache folder, batched on GPUs. hqsam segment --cache, hqsam "
        "auto --cache and the napari widgets' embedding folder then reuse them with the same "
        "model, precision and contrast limits (the default: the whole image's). Slices "
        "already in the folder are skipped, so a killed run resumes.")
    p.add_argument("image", help="image file: .tif, .tiff, .zarr or .npy; or a folder or "
                   "quoted glob of them ('plates/*.tif'), all embedded into one --cache folder")
    add_model_options(p)
    add_cache_option(p, required=True)
    add_device_option(p)
    add_precision_option(p)
    add_adapter_option(p)
    add_batch_size_option(p)
    add_dask_options(p, "run on a local Dask cluster of N workers (model loaded once each)")
    add_layout_options(p)
    add_contrast_option(p)
    p.add_argument("--slices", nargs="+", metavar="SEL",
                   help="slices to embed (default all): per selection one index or "
                   "START:STOP[:STEP] range per slice axis, commas between axes, e.g. '0:4', "
                   "'10 20', or '0,5:9' for T=0, Z=5..8 of a TZYX image")
    add_tiling_options(p)
    add_quiet_option(p)
    # decoding options do not change an embedding; the worker's spec wants one
    p.set_defaults(func=run, hq_token_only=False)


def run(args) -> int:
    if (code := run_image_set(args, "embed")) is not None:
        return code
    _check_options(args)
    result, plan = embed_image(args)
    n = len(result.slices)
    where = where_it_ran(args)
    lo, hi = plan.contrast_limits  # what a viewer must show for its slices to hit the cache
    print(f"embedded {n} slice{'s' * (n != 1)} in {result.seconds:.1f} s "
          f"({result.seconds / max(n, 1):.2f} s per slice, {where})"
          f"{tiling_note(tiling_from_args(args), plan.layout)}; embeddings: "
          f"{result.computed} computed, {result.reused} reused; contrast limits {_number(lo)} "
          f"{_number(hi)}; cache {args.cache}{cache_report(args)}")
    return 0


def embed_image(args, model_checked: bool = False):
    """Embed ``args.image`` into the ``args.cache`` folder; returns ``(result, plan)``.

    ``model_checked``: :func:`check_model_inputs` already ran (a run over a folder
    checks the model's files once, for all its images).
    """
    from ..engine import io
    from ..engine.image import describe_layout
    from ..engine.runner import plan_slices

    # Everything the user can get wrong is checked before the model loads.
    check_cache_not_input(args)
    image = io.read_image(args.image, args.level)
    layout = describe_layout(image.shape, rgb=args.rgb, channel_axis=args.channel_axis,
                             channel=args.channel, axes=args.axes)
    slices = None if args.slices is None else parse_slices(args.slices, layout.leading_shape)
    limits = (tuple(args.contrast_limits) if args.contrast_limits  # else a pyramid's smallest level
              else io.pyramid_contrast_limits(args.image, layout, args.contrast))
    tiling = tiling_from_args(args)
    check_memory(image, layout, limits, contrast_method=args.contrast,
                 remote=bool(args.scheduler),
                 tile=converted_tile(tiling, layout))
    plan = plan_slices(image, layout=layout,
                       contrast_limits=limits or contrast_limits(args, image, layout),
                       slices=slices)
    if not model_checked:
        check_model_inputs(args)
    result = _embed(args, image, plan)
    cache = run_cache(args)
    if cache is not None and cache.write_error is not None:
        raise OutputError(f"cache folder {args.cache}: embeddings cannot be stored there "
                          f"({cache.write_error}); free some space or choose a folder you can "
                          "write to, and run again (stored slices are skipped).")
    return result, plan


def _number(value: float) -> str:
    """Short text of ``value`` that reads back as the same float (to type into a viewer)."""
    text = f"{value:g}"
    return text if float(text) == value else repr(value)


def _check_options(args) -> None:
    # counts below 1 are refused by the option parser (commands._options.positive_int)
    if args.batch_size is not None and (args.workers or args.scheduler):
        raise InputError("--batch-size applies to a run in this process: Dask workers embed "
                         "one slice per task. Drop one of the two.")


def contrast_limits(args, image, layout) -> tuple[float, float] | None:
    """The run's contrast limits as ``hqsam segment`` chooses them; None: the whole image's.

    The embedding cache is keyed by the uint8 model input, so these must be the same
    as in the runs that will read the folder.
    """
    from ..engine.image import default_contrast_limits, selected_channel

    if args.contrast_limits:
        return tuple(args.contrast_limits)
    if args.contrast == "percentile":
        return default_contrast_limits(selected_channel(image, layout), "percentile")
    return None


def parse_slices(selections: list[str], leading_shape: tuple[int, ...]
                 ) -> list[tuple[int, ...]]:
    """``--slices`` texts → leading index tuples, in C order, each once.

    Parameters
    ----------
    selections : list of str
        Each names one index or a numpy-style ``START:STOP[:STEP]`` range per leading
        axis, separated by commas: ``"3"``, ``"0:4"``, ``"0:31:5"``, ``"0,5:9"``
        (negative values count from the end, as in numpy).
    leading_shape : tuple of int
        The image's slice axes, e.g. ``(Z,)`` or ``(T, Z)``.
    """
    if not leading_shape:
        raise InputError("--slices: a 2D image has a single slice; leave --slices out.")
    chosen: set[tuple[int, ...]] = set()
    for text in selections:
        parts = text.split(",")
        if len(parts) != len(leading_shape):
            raise InputError(f"--slices {text!r}: give one index or range per slice axis "
                             f"({len(leading_shape)} for slice axes of shape {leading_shape}), "
                             "separated by commas.")
        ranges = [_axis_range(text, part, n) for part, n in zip(parts, leading_shape)]
        chosen.update(itertools.product(*ranges))
    if not chosen:
        raise InputError(f"--slices {' '.join(selections)} selects no slice of an image whose "
                         f"slice axes have shape {leading_shape}.")
    return sorted(chosen)


def _axis_range(text: str, part: str, n: int) -> range:
    bounds = part.split(":")
    try:
        values = [int(b) if b.strip() else None for b in bounds]
    except ValueError:
        raise InputError(f"--slices {text!r}: indices must be integers, e.g. '3' or "
                         "'0:4'.") from None
    if len(values) == 1:
        index = values[0]
        if index is None or not -n <= index < n:
            raise InputError(f"--slices {text!r}: index {part!r} does not exist on an axis "
                             f"of {n} slices.")
        return range(index % n, index % n + 1)
    if len(values) > 3 or values[2:] == [0]:
        raise InputError(f"--slices {text!r}: a range is START:STOP or START:STOP:STEP with "
                         "a step other than 0, e.g. '0:4' or '0:31:5'.")
    return range(*slice(*values).indices(n))


def _embed(args, image, plan):
    from ..engine.distributed import worker_segmenter
    from ..engine.embed import embed_stack, embed_stack_distributed

    spec = model_spec(args)
    with progress_bar(args, "hqsam embed", len(plan.indices), unit="slice") as progress:
        common = dict(layout=plan.layout, contrast_limits=plan.contrast_limits,
                      slices=plan.indices, tiling=tiling_from_args(args), progress=progress)
        if runs_on_dask(args):
            return embed_stack_distributed(image, spec, scheduler=args.scheduler,
                                           n_workers=args.workers, **common)
        segmenter = worker_segmenter(spec)
        # the folder is this command's output: once it cannot be written, embedding is futile
        return embed_stack(image, segmenter=segmenter, batch_size=args.batch_size,
                           should_stop=lambda: segmenter.cache.write_error is not None, **common)
