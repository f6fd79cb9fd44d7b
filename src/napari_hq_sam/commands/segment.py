"""``hqsam segment IMAGE --prompts FILE --model MODEL --out OUT``: headless stack segmentation."""

from __future__ import annotations

from ._common import (
    cache_report,
    check_cache_not_input,
    check_memory,
    check_model_inputs,
    converted_tile,
    model_spec,
    run_inputs,
    run_into_output,
    tiling_from_args,
    tiling_note,
)
from ._image_sets import add_image_set_options, run_image_set
from ._options import (
    add_adapter_option,
    add_cache_option,
    add_dask_options,
    add_device_option,
    add_layout_options,
    add_model_options,
    add_output_options,
    add_precision_option,
    add_quiet_option,
    add_tiling_options,
    positive_int,
    unit_interval,
)
from ._progress import progress_bar, runs_on_dask, where_it_ran


def register(subparsers) -> None:

    p = subparsers.add_parser(
        "segment", help="segment the prompted slices of an image stack into labels",
        description="Segment every prompted 2D slice of an image (TIFF, zarr, npy) from "
        "prompt files (napari CSV exports of Points/Shapes layers, or JSON) into a labels "
        "image of the image's shape, one id per object.")
    p.add_argument("image", help="image file: .tif, .tiff, .zarr or .npy; or a folder or "
                   "quoted glob of them ('plates/*.tif'), then --out and --prompts are folders")
    p.add_argument("--prompts", action="append", required=True, metavar="FILE",
                   help="prompt file (.csv saved from a napari Points/Shapes layer, or .json); "
                   "repeat for several files. For a folder of images: the folder of their "
                   "prompt files, NAME.csv|json or NAME_*.csv|json for image NAME")
    add_model_options(p)
    add_output_options(p)
    add_device_option(p)
    add_precision_option(p)
    add_adapter_option(p)
    add_cache_option(p)
    add_dask_options(p)
    p.add_argument("--propagate", action="store_true",
                   help="propagate each object through z from its prompted slices")
    p.add_argument("--score-threshold", type=unit_interval, default=0.5,
                   help="propagation stops below this predicted IoU (default 0.5)")
    p.add_argument("--hq-token-only", action="store_true",
                   help="HQ mask alone (advised for single objects) instead of SAM + HQ")
    add_layout_options(p)
    p.add_argument("--contrast", choices=("minmax", "percentile"), default="minmax",
                   help="default contrast limits: min/max or 0.5/99.5 percentiles")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="slices encoded at once (default: from free GPU memory; 1 on CPUs)")
    add_tiling_options(p)
    add_image_set_options(p)
    add_quiet_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if (code := run_image_set(args, "segment")) is not None:
        return code
    result, out, layout, labels = segment_image(args)
    _summary(args, result, out, layout, labels)
    return 0


def segment_image(args, model_checked: bool = False):
    """Segment ``args.image`` into ``args.out``; returns ``(result, out, layout, labels)``.

    ``model_checked``: :func:`check_model_inputs` already ran (a run over a folder
    checks the model's files once, for all its images).
    """
    from ..engine import io
    from ..engine.image import default_contrast_limits, describe_layout, selected_channel
    from ..engine.prompt_files import read_prompt_files
    from ..engine.stack import new_labels, plan_stack, prompts_dtype

    # Everything the user can get wrong is checked before the model loads.
    out = io.check_output(args.out, args.overwrite, inputs=run_inputs(args))
    check_cache_not_input(args)
    image = io.read_image(args.image, args.level)
    prompts = read_prompt_files(args.prompts)
    layout = describe_layout(image.shape, rgb=args.rgb, channel_axis=args.channel_axis,
                             channel=args.channel, axes=args.axes)
    limits = (tuple(args.contrast_limits) if args.contrast_limits  # else a pyramid's smallest level
              else io.pyramid_contrast_limits(args.image, layout, args.contrast))
    dtype, to_zarr = prompts_dtype(prompts), out.suffix.lower() == ".zarr"
    in_memory = None if to_zarr else (out, layout.labels_shape, dtype, (
        "write them to a .zarr output instead (--out NAME.zarr), filled slice by slice."))
    tiling = tiling_from_args(args)
    check_memory(image, layout, limits, labels=in_memory, contrast_method=args.contrast,
                 remote=bool(args.scheduler),
                 tile=converted_tile(tiling, layout))
    io.check_output_space(out, layout.labels_shape, dtype)
    if limits is None and args.contrast == "percentile":
        limits = default_contrast_limits(selected_channel(image, layout), "percentile")
    plan = plan_stack(image, prompts, layout=layout, contrast_limits=limits)
    layout, limits = plan.layout, plan.contrast_limits
    if not model_checked:
        check_model_inputs(args)
    result = run_into_output(
        args, out, layout, dtype, to_zarr=to_zarr,
        run=lambda labels: _segment(args, image, prompts, layout, limits, labels if
                                    labels is not None else new_labels(layout.labels_shape,
                                                                       prompts)))
    return result, out, layout, result.labels


def _segment(args, image, prompts, layout, limits, labels):
    from ..engine.distributed import segment_stack_distributed, worker_segmenter
    from ..engine.stack import segment_stack

    spec = model_spec(args)
    slices = len({p.slice_index for p in prompts})
    with progress_bar(args, "hqsam segment", slices, unit="slice") as progress:
        common = dict(layout=layout, contrast_limits=limits, labels=labels,
                      propagate=args.propagate, score_threshold=args.score_threshold,
                      tiling=tiling_from_args(args), progress=progress)
        if runs_on_dask(args):
            return segment_stack_distributed(image, prompts, spec, scheduler=args.scheduler,
                                             n_workers=args.workers, **common)
        return segment_stack(image, prompts, segmenter=worker_segmenter(spec),
                             batch_size=args.batch_size, **common)


def _summary(args, result, out, layout, labels) -> None:
    n = len(result.slices)
    per_slice = result.seconds / n if n else 0.0
    where = where_it_ran(args)
    cache = f" (cache {args.cache})" if args.cache else ""
    print(f"segmented {n} slice{'s' * (n != 1)}, {result.objects} object"
          f"{'s' * (result.objects != 1)} in {result.seconds:.1f} s "
          f"({per_slice:.2f} s per slice, {where}){tiling_note(tiling_from_args(args), layout)}"
          f"; embeddings: {result.computed} computed, "
          f"{result.reused} reused{cache}{cache_report(args)}")
    print(f"wrote {out}: labels {layout.labels_shape} {labels.dtype}")
