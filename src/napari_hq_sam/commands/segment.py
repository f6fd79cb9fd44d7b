"""``hqsam segment IMAGE --prompts FILE --model MODEL --out OUT``: headless stack segmentation."""

from __future__ import annotations

from ..model_types import MODEL_TYPES as MODEL_CHOICES
from ._options import add_layout_options


def register(subparsers) -> None:

    p = subparsers.add_parser(
        "segment", help="segment the prompted slices of an image stack into labels",
        description="Segment every prompted 2D slice of an image (TIFF, zarr, npy) from "
        "prompt files (napari CSV exports of Points/Shapes layers, or JSON) into a labels "
        "image of the image's shape, one id per object.")
    p.add_argument("image", help="image file: .tif, .tiff, .zarr or .npy")
    p.add_argument("--prompts", action="append", required=True, metavar="FILE",
                   help="prompt file (.csv saved from a napari Points/Shapes layer, or .json); "
                   "repeat for several files")
    p.add_argument("--model", required=True, choices=MODEL_CHOICES, help="HQ-SAM model type")
    p.add_argument("--checkpoint", metavar="FILE",
                   help="checkpoint file (default: the official one, downloaded once)")
    p.add_argument("--out", required=True, metavar="OUT", help="labels output: .tif or .zarr")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--device", help="cuda, mps or cpu (default: best available)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16", "auto"),
                   default="fp32", help="encoder precision (default fp32, exact); auto: the "
                   "fastest reduced precision on this device, measured on CPUs")
    p.add_argument("--adapter", metavar="FILE", help="HQ adapter file to load into the model")
    p.add_argument("--cache", metavar="DIR",
                   help="zarr folder caching embeddings: reruns reuse them, killed runs resume")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, metavar="N", help="run on a local Dask cluster")
    where.add_argument("--scheduler", metavar="ADDRESS", help="join a Dask scheduler")
    p.add_argument("--propagate", action="store_true",
                   help="propagate each object through z from its prompted slices")
    p.add_argument("--score-threshold", type=float, default=0.5,
                   help="propagation stops below this predicted IoU (default 0.5)")
    p.add_argument("--hq-token-only", action="store_true",
                   help="HQ mask alone (advised for single objects) instead of SAM + HQ")
    add_layout_options(p)
    p.add_argument("--contrast", choices=("minmax", "percentile"), default="minmax",
                   help="default contrast limits: min/max or 0.5/99.5 percentiles")
    p.add_argument("--batch-size", type=int, default=None,
                   help="slices encoded at once (default: from free GPU memory; 1 on CPUs)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..engine import io
    from ..engine.image import default_contrast_limits, describe_layout
    from ..engine.prompt_files import read_prompt_files
    from ..engine.stack import prepare_run

    # Everything the user can get wrong is checked before the model loads.
    out = io.check_output(args.out, args.overwrite)
    image = io.read_image(args.image)
    prompts = read_prompt_files(args.prompts)
    layout = describe_layout(image.shape, rgb=args.rgb, channel_axis=args.channel_axis,
                             channel=args.channel, axes=args.axes)
    limits = tuple(args.contrast_limits) if args.contrast_limits else None
    if limits is None and args.contrast == "percentile":
        from ..engine.stack import selected_channel

        limits = default_contrast_limits(selected_channel(image, layout), "percentile")
    layout, limits, _ = prepare_run(image, prompts, layout=layout, contrast_limits=limits,
                                    labels=_Shape(layout.labels_shape))
    for path in (args.checkpoint, args.adapter):
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"{path} does not exist.")
    if args.adapter is not None:
        import importlib.util

        if importlib.util.find_spec("napari_hq_sam.adapters") is None:
            raise RuntimeError("--adapter needs napari_hq_sam.adapters, missing from this "
                               "install: upgrade napari-hq-sam.")
    tmp = io.partial_path(out)
    try:
        labels = _empty_labels(out, tmp, layout, prompts)
        result = _segment(args, image, prompts, layout, limits, labels)
        if result.cancelled:
            raise RuntimeError("the run was cancelled; nothing was written.")
        if out.suffix.lower() == ".zarr":
            io.commit_output(tmp, out, args.overwrite)
        else:
            io.write_labels(out, labels, args.overwrite)
    finally:
        io.remove_partial(tmp)
    _summary(args, result, out, layout, labels)
    return 0


class _Shape:
    """Stands in for the labels array when only its shape is checked."""

    def __init__(self, shape):
        self.shape = shape


def _empty_labels(out, tmp, layout, prompts):
    import numpy as np

    from ..engine import io
    from ..engine.stack import labels_dtype

    if out.suffix.lower() == ".zarr":
        return io.create_zarr_labels(tmp, layout.labels_shape, labels_dtype(prompts))
    return np.zeros(layout.labels_shape, labels_dtype(prompts))


def _spec(args):
    from pathlib import Path

    from ..engine.distributed import ModelSpec

    def absolute(p):
        return None if p is None else str(Path(p).resolve())

    return ModelSpec(args.model, absolute(args.checkpoint), args.device, args.precision,
                     absolute(args.adapter), absolute(args.cache), args.hq_token_only)


def _segment(args, image, prompts, layout, limits, labels):
    from tqdm import tqdm

    from ..batching import auto_batch_size
    from ..engine.distributed import segment_stack_distributed, worker_segmenter
    from ..engine.stack import segment_stack

    spec = _spec(args)
    bar = tqdm(total=len({p.slice_index for p in prompts}), unit="slice", disable=args.quiet,
               desc="hqsam segment")

    def progress(done, total):
        bar.total = total
        bar.update(done - bar.n)

    common = dict(layout=layout, contrast_limits=limits, labels=labels,
                  propagate=args.propagate, score_threshold=args.score_threshold,
                  progress=progress)
    try:
        if args.workers or args.scheduler:
            import logging

            # the nanny warns when it kills workers at shutdown: not news for a user
            logging.getLogger("distributed").setLevel(logging.ERROR)
            return segment_stack_distributed(image, prompts, spec, scheduler=args.scheduler,
                                             n_workers=args.workers, **common)
        segmenter = worker_segmenter(spec)
        batch_size = args.batch_size or auto_batch_size(segmenter.model)
        return segment_stack(image, prompts, segmenter=segmenter, batch_size=batch_size,
                             **common)
    finally:
        bar.close()


def _summary(args, result, out, layout, labels) -> None:
    n = len(result.slices)
    per_slice = result.seconds / n if n else 0.0
    where = (f"{args.workers} local workers" if args.workers else
             f"scheduler {args.scheduler}" if args.scheduler else "1 process")
    cache = f" (cache {args.cache})" if args.cache else ""
    print(f"segmented {n} slice{'s' * (n != 1)}, {result.objects} object"
          f"{'s' * (result.objects != 1)} in {result.seconds:.1f} s "
          f"({per_slice:.2f} s per slice, {where}); embeddings: {result.computed} computed, "
          f"{result.reused} reused{cache}")
    print(f"wrote {out}: labels {layout.labels_shape} {labels.dtype}")
