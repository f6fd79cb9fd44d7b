"""``hqsam refine IMAGE --labels LABELS --model MODEL --out OUT``: sharpen an existing segmentation.

Every object of every slice of LABELS is refined by HQ-SAM from its box and mask and
keeps its id (:func:`~napari_hq_sam.engine.refine.refine_labels`); objects HQ-SAM
loses keep their source mask and are listed.
"""

from __future__ import annotations

import argparse

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
from ._options import (
    add_adapter_option,
    add_cache_option,
    add_contrast_option,
    add_dask_options,
    add_device_option,
    add_layout_options,
    add_model_options,
    add_output_options,
    add_precision_option,
    add_quiet_option,
    add_tiling_options,
    finite_float,
    positive_int,
    unit_interval,
)
from ._progress import progress_bar, runs_on_dask, where_it_ran

LISTED = 20  # kept objects listed one by one; more are counted


def score_value(text: str) -> float:
    """A predicted-IoU threshold from -1 to 1 (an untrained model predicts IoUs below 0)."""
    value = finite_float(text)
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be from -1 to 1, got {text!r}")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "refine", help="refine every object of a labels image with HQ-SAM, keeping ids",
        description="Refine an existing segmentation (Cellpose, StarDist, a threshold, ...): "
        "each object of each 2D slice is prompted by its box and its mask and comes back as "
        "an HQ mask with the same id; objects HQ-SAM loses (empty mask, low predicted IoU, "
        "or little overlap with the source) keep their source mask and are listed. No "
        "overlaps: a pixel claimed twice goes to the object that held it, else to the "
        "higher predicted IoU.")
    p.add_argument("image", help="image file: .tif, .tiff, .zarr or .npy")
    p.add_argument("--labels", required=True, metavar="LABELS",
                   help="labels to refine (same Z/Y/X shape as the image), 0 = background")
    add_model_options(p)
    add_output_options(p)
    add_device_option(p)
    add_precision_option(p)
    add_adapter_option(p)
    add_cache_option(p)
    add_dask_options(p, "run on a local Dask cluster of N workers (model loaded once each)")
    p.add_argument("--score-threshold", type=score_value, default=0.5, metavar="X",
                   help="keep the source mask when HQ-SAM's predicted IoU is below this "
                   "(default 0.5; -1 to 1, -1: never for its score)")
    p.add_argument("--iou-threshold", type=unit_interval, default=0.5, metavar="X",
                   help="keep the source mask when the refined mask overlaps it by an IoU "
                   "below this (default 0.5)")
    p.add_argument("--point", action="store_true",
                   help="also prompt each object's most interior point (helps objects whose "
                   "box holds much of a neighbour)")
    p.add_argument("--no-mask", dest="use_mask", action="store_false",
                   help="prompt with the box only, not the source mask")
    p.add_argument("--sam-and-hq", dest="hq_token_only", action="store_false",
                   help="SAM + HQ logits instead of the HQ mask alone (default: HQ alone, "
                   "advised for single objects)")
    p.add_argument("--prompt-batch", type=positive_int, default=32, metavar="N",
                   help="objects decoded at once (default 32; fewer on large slices)")
    add_layout_options(p)
    add_contrast_option(p)
    add_tiling_options(p)
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="slices encoded at once (default: from free GPU memory; 1 on CPUs)")
    add_quiet_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..engine import io
    from ..engine.image import default_contrast_limits, describe_layout, selected_channel
    from ..engine.refine import check_settings, check_source

    # Everything the user can get wrong is checked before the model loads.
    inputs = [*run_inputs(args), ("labels", args.labels)]
    out = io.check_output(args.out, args.overwrite, inputs=inputs)
    check_cache_not_input(args)
    image = io.read_image(args.image, args.level)
    layout = describe_layout(image.shape, rgb=args.rgb, channel_axis=args.channel_axis,
                             channel=args.channel, axes=args.axes)
    source = check_source(io.read_image(args.labels), layout, name=f"labels {args.labels}")
    check_settings(args.score_threshold, args.iou_threshold, args.prompt_batch)
    limits = (tuple(args.contrast_limits) if args.contrast_limits  # else a pyramid's smallest level
              else io.pyramid_contrast_limits(args.image, layout, args.contrast))
    to_zarr = out.suffix.lower() == ".zarr"
    # the source labels stay in memory, and so do the refined ones unless written to zarr
    in_memory = (out, layout.labels_shape, source.dtype, "hqsam refine holds the labels in "
                 "memory: crop the image and labels, or use a machine with more memory.")
    tiling = tiling_from_args(args)
    check_memory(image, layout, limits, labels=in_memory, labels_copies=1 if to_zarr else 2,
                 contrast_method=args.contrast, remote=bool(args.scheduler),
                 tile=converted_tile(tiling, layout))
    io.check_output_space(out, layout.labels_shape, source.dtype)
    if limits is None and args.contrast == "percentile":
        limits = default_contrast_limits(selected_channel(image, layout), "percentile")
    check_model_inputs(args)
    result = run_into_output(
        args, out, layout, source.dtype, to_zarr=to_zarr,
        run=lambda target: _refine(args, image, source, layout, limits, target, tiling))
    _summary(args, result, out, layout, source.dtype)
    return 0


def _refine(args, image, source, layout, limits, target, tiling):
    from ..engine.distributed import worker_segmenter
    from ..engine.refine import refine_labels, refine_labels_distributed

    spec = model_spec(args)
    with progress_bar(args, "hqsam refine", unit="step") as progress:
        common = dict(layout=layout, contrast_limits=limits, out=target,
                      score_threshold=args.score_threshold, iou_threshold=args.iou_threshold,
                      use_mask=args.use_mask, use_point=args.point,
                      hq_token_only=args.hq_token_only, batch_size=args.prompt_batch,
                      tiling=tiling, progress=progress)
        if runs_on_dask(args):
            return refine_labels_distributed(image, source, spec, scheduler=args.scheduler,
                                             n_workers=args.workers, **common)
        return refine_labels(image, source, segmenter=worker_segmenter(spec),
                             encoder_batch_size=args.batch_size, **common)


def _summary(args, result, out, layout, dtype) -> None:
    n = len(result.slices)
    kept = len(result.kept)
    per_object = result.seconds / result.objects if result.objects else 0.0
    where = where_it_ran(args)
    reasons = ", ".join(f"{count} {reason}" for reason, count in result.kept_reasons().items())
    print(f"refined {result.refined} of {result.objects} object"
          f"{'s' * (result.objects != 1)} on {n} slice{'s' * (n != 1)}, kept {kept}"
          f"{f' ({reasons})' if reasons else ''} in {result.seconds:.1f} s "
          f"({per_object:.2f} s per object, {where}); embeddings: {result.computed} computed, "
          f"{result.reused} reused{cache_report(args)}")
    for item in result.kept[:LISTED]:
        print(f"  kept {item.describe()}")
    if kept > LISTED:
        print(f"  ... and {kept - LISTED} more kept objects")
    print(f"wrote {out}: labels {layout.labels_shape} {dtype}")
