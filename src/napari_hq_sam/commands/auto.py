"""``hqsam auto IMAGE --model MODEL --out OUT``: segment everything, slice by slice."""

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
)
from ._image_sets import add_image_set_options, run_image_set
from ._options import (
    add_cache_option,
    add_dask_options,
    add_device_option,
    add_layout_options,
    add_model_options,
    add_output_options,
    add_precision_option,
    add_quiet_option,
    add_tiling_options,
    non_negative_int,
    positive_float,
    positive_int,
    unit_interval,
)
from ._progress import progress_bar, runs_on_dask, where_it_ran

# Config fields exposed as options: (field, flag, type, help).
_CONFIG_OPTIONS = (
    ("points_per_side", "--points-per-side", positive_int,
     "grid of N x N point prompts per slice"),
    ("points_per_batch", "--points-per-batch", positive_int, "points decoded at once"),
    ("pred_iou_thresh", "--pred-iou-thresh", unit_interval,
     "keep masks with a predicted IoU above this"),
    ("stability_score_thresh", "--stability-thresh", unit_interval,
     "keep masks at least this stable"),
    ("box_nms_thresh", "--nms-thresh", unit_interval,
     "box IoU above which duplicates are dropped"),
    ("crop_n_layers", "--crop-layers", non_negative_int,
     "extra layers of overlapping crops (small objects)"),
    ("min_mask_region_area", "--min-area", non_negative_int,
     "fill holes and drop islands below this area"),
)


def register(subparsers) -> None:

    from ..automatic import AutoMaskConfig

    defaults = AutoMaskConfig()
    p = subparsers.add_parser(
        "auto", help="segment everything (automatic masks) into a labels TIFF",
        description="Automatic HQ-SAM masks for every 2D slice of an image: a grid of point "
        "prompts, filtered by predicted IoU and stability, duplicates removed by NMS; one id "
        "per object, no overlaps. Defaults are the official HQ-SAM ones.")
    p.add_argument("image", metavar="IMAGE", help="image file: .tif, .tiff, .zarr or .npy; "
                   "or a folder or quoted glob of them ('plates/*.tif'), then --out is a folder")
    add_model_options(p)
    add_output_options(p)
    add_dask_options(p, "run on a local Dask cluster of N workers (model loaded once each)")
    add_device_option(p)
    add_precision_option(p)
    add_cache_option(p)
    for name, flag, kind, text in _CONFIG_OPTIONS:
        p.add_argument(flag, dest=name, type=kind, default=getattr(defaults, name),
                       metavar="X" if kind is unit_interval else "N",
                       help=f"{text} (default {getattr(defaults, name):g})")
    p.add_argument("--hq-token-only", action="store_true",
                   help="HQ logits alone instead of SAM + HQ logits (official AMG: off)")
    seeded = p.add_argument_group(
        "seeded mode", "one prompt per object instead of the grid (cells, nuclei): seeds "
        "found in each slice (LoG blobs of the expected diameter) or given as points")
    seeded.add_argument("--seeds", nargs="+", metavar=("image|points", "FILE"),
                        help="'image': find seeds in each slice; 'points FILE': one seed per "
                        "positive point of a napari Points CSV (or prompt JSON) file")
    seeded.add_argument("--diameter", type=positive_float, metavar="PX",
                        help="expected object diameter in pixels (default: estimated per "
                        "slice from its bright regions)")
    seeded.add_argument("--seed-box", action="store_true",
                        help="decode each seed with a box of 1.5 diameters as well (crowded "
                        "objects; needs a diameter for points)")
    seeded.add_argument("--dark-objects", action="store_true",
                        help="objects darker than the background (--seeds image)")
    seeded.add_argument("--seed-threshold", type=positive_float, default=None, metavar="X",
                        help="minimum blob strength as a fraction of the intensity range "
                        "(default 0.05)")
    p.add_argument("--stitch", action="store_true",
                   help="one id per object through z: join overlapping objects of "
                   "neighbouring slices")
    p.add_argument("--stitch-iou", type=unit_interval, default=0.5,
                   help="minimum mask IoU to join objects of neighbouring slices (default 0.5)")
    add_layout_options(p)
    add_tiling_options(p)
    add_image_set_options(p)
    add_quiet_option(p)
    p.set_defaults(func=run)


def config_from_args(args):
    """:class:`~napari_hq_sam.automatic.AutoMaskConfig` from parsed arguments."""
    from ..automatic import AutoMaskConfig

    values = {name: getattr(args, name) for name, *_ in _CONFIG_OPTIONS}
    return AutoMaskConfig(hq_token_only=args.hq_token_only, **values)


def run(args) -> int:
    if (code := run_image_set(args, "auto")) is not None:
        return code
    result, out, seconds = segment_image(args)
    n = len(result.slices)
    print(f"segmented {n} slice{'s' * (n != 1)}, {result.objects} object"
          f"{'s' * (result.objects != 1)} in {seconds:.1f} s "
          f"({seconds / max(n, 1):.2f} s per slice, {where_it_ran(args)}){cache_report(args)}")
    print(f"wrote {out}: labels {result.labels.shape} {result.labels.dtype}")
    return 0


def segment_image(args, model_checked: bool = False):
    """Segment everything in ``args.image`` into ``args.out``; returns
    ``(result, out, seconds)``.

    ``model_checked``: :func:`check_model_inputs` already ran (a run over a folder
    checks the model's files once, for all its images).
    """
    import time

    from ..engine import io
    from ..engine.image import describe_layout
    from ..engine.labels import LABELS_DTYPE

    # Everything the user can get wrong is checked before the model loads.
    out = io.check_output(args.out, args.overwrite, inputs=run_inputs(args))
    check_cache_not_input(args)
    image = io.read_image(args.image, args.level)
    layout = describe_layout(image.shape, rgb=args.rgb, channel_axis=args.channel_axis,
                             channel=args.channel, axes=args.axes)
    # a .zarr output is written slice by slice; otherwise the labels of every slice stay
    # in memory (twice while stitching through z)
    to_zarr = out.suffix.lower() == ".zarr" and not args.stitch
    in_memory = None if to_zarr else (
        out, layout.labels_shape, LABELS_DTYPE, "hqsam auto holds the labels of every slice "
        "in memory for a TIFF output or --stitch: write to a .zarr output (--out NAME.zarr, "
        "without --stitch), crop or downsample the image, or use a machine with more memory.")
    limits = args.contrast_limits or io.pyramid_contrast_limits(args.image, layout)
    tiling = tiling_from_args(args)
    check_memory(image, layout, limits, labels=in_memory,
                 labels_copies=2 if args.stitch else 1, remote=bool(args.scheduler),
                 tile=converted_tile(tiling, layout))
    io.check_output_space(out, layout.labels_shape, LABELS_DTYPE)
    seeds = seeds_from_args(args, layout)
    if not model_checked:
        check_model_inputs(args)
    config = config_from_args(args)
    start = time.perf_counter()
    result = run_into_output(
        args, out, layout, LABELS_DTYPE, to_zarr=to_zarr,
        run=lambda labels: _segment(args, image, layout, config, limits, seeds, labels))
    return result, out, time.perf_counter() - start


def seeds_from_args(args, layout):
    """The seed source of ``--seeds`` (None: the grid), its file read and checked."""
    from ..engine.seeds import DEFAULT_THRESHOLD, GivenSeeds, ImageSeeds, seeds_from_table
    from ..errors import InputError

    mode = getattr(args, "seeds", None)
    seeded_flags = [flag for flag, on in (("--diameter", args.diameter is not None),
                                          ("--seed-box", args.seed_box),
                                          ("--dark-objects", args.dark_objects),
                                          ("--seed-threshold", args.seed_threshold is not None))
                    if on]
    if not mode:
        if seeded_flags:
            raise InputError(f"{seeded_flags[0]} is an option of the seeded mode: add --seeds "
                             f"image or --seeds points FILE.")
        return None
    if args.workers or args.scheduler:
        raise InputError("--seeds runs in this process: leave out --workers and --scheduler.")
    if mode == ["image"]:
        threshold = DEFAULT_THRESHOLD if args.seed_threshold is None else args.seed_threshold
        return ImageSeeds(args.diameter, dark=args.dark_objects, threshold=threshold)
    if mode[0] == "points" and len(mode) == 2:
        from ..engine.prompt_files import read_prompt_table

        table = read_prompt_table(mode[1])
        if args.seed_box and args.diameter is None:
            raise InputError("--seed-box with --seeds points needs --diameter PX.")
        n_leading = len(layout.labels_shape) - 2
        points = seeds_from_table(table.points, table.point_labels, n_leading)
        if not points:
            raise InputError(f"seed file {mode[1]} has no positive points.")
        _check_seed_points(mode[1], points, layout.labels_shape)
        return GivenSeeds(points, args.diameter)
    raise InputError(f"--seeds takes 'image' or 'points FILE', got {' '.join(mode)!r}.")


def _check_seed_points(path, points: dict, shape) -> None:
    """Every seed on a slice of the image and inside it, or one InputError naming one."""
    from ..errors import InputError

    leading, (h, w) = shape[:-2], shape[-2:]
    for index, xy in points.items():
        if any(not 0 <= i < n for i, n in zip(index, leading)):
            raise InputError(f"seed file {path} has points on slice {list(index)}, outside "
                             f"the image's slices {list(leading)}.")
        outside = (xy[:, 0] < 0) | (xy[:, 0] > w) | (xy[:, 1] < 0) | (xy[:, 1] > h)
        if outside.any():
            x, y = xy[outside][0]
            raise InputError(f"seed file {path} has a point at (Y {y:g}, X {x:g}), outside "
                             f"the {h} x {w} image.")


def _segment(args, image, layout, config, limits=None, seeds=None, labels=None):
    from ..engine.distributed import segment_everything_distributed, worker_segmenter
    from ..engine.everything import segment_everything

    spec = model_spec(args)
    on_dask = runs_on_dask(args)
    unit = "slice" if on_dask else "batch" if seeds is None else "step"
    with progress_bar(args, "hqsam auto", unit=unit) as progress:
        common = dict(layout=layout, contrast_limits=limits, stitch=args.stitch,
                      stitch_iou=args.stitch_iou, tiling=tiling_from_args(args), labels=labels,
                      progress=progress)
        if on_dask:
            return segment_everything_distributed(image, spec, config, n_workers=args.workers,
                                                  scheduler=args.scheduler, **common)
        return segment_everything(None, image, config, segmenter=worker_segmenter(spec),
                                  seeds=seeds, seed_box=args.seed_box, **common)
