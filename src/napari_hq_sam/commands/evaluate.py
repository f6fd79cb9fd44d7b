"""``hqsam evaluate``: mIoU and boundary IoU of box-prompted HQ masks against labels."""

from __future__ import annotations

from ..model_types import MODEL_TYPES as MODEL_CHOICES


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="score HQ-SAM (optionally with an adapter) against ground-truth labels",
        description="For every ground-truth object of every slice: its tight box as prompt, "
        "single-mask output, the HQ mask thresholded at 0, scored by mask IoU and boundary "
        "IoU (d = 2%% of the image diagonal). Prints a table, or JSON with --json.")
    add_data_arguments(p, multiple=False)
    p.add_argument("--model", required=True, choices=MODEL_CHOICES, help="HQ-SAM model type")
    p.add_argument("--checkpoint", metavar="FILE",
                   help="base checkpoint (default: the official file, downloaded once)")
    p.add_argument("--adapter", metavar="FILE", help="adapter file from `hqsam train`")
    p.add_argument("--device", help="cuda, mps or cpu (default: best available)")
    p.add_argument("--batch-size", type=int, default=16, help="box prompts per decoder call")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--per-object", action="store_true", help="with --json: per-object scores")
    p.set_defaults(func=run)


def add_data_arguments(p, multiple: bool) -> None:
    """--image/--labels (repeatable when ``multiple``) and --crop."""
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


def parse_crop(text: str | None) -> tuple[slice, slice] | None:
    """``"Y0:Y1,X0:X1"`` (bounds optional, numpy style) → two slices; None passes through."""
    if text is None:
        return None
    parts = text.split(",")
    if len(parts) != 2:
        raise ValueError(f"--crop {text!r}: give Y0:Y1,X0:X1, e.g. ':,:256'.")
    out = []
    for part in parts:
        bounds = part.split(":")
        if len(bounds) != 2:
            raise ValueError(f"--crop {text!r}: each axis needs START:STOP, e.g. '0:256' or ':'.")
        try:
            out.append(slice(*(int(b) if b.strip() else None for b in bounds)))
        except ValueError as exc:
            raise ValueError(f"--crop {text!r}: bounds must be integers.") from exc
    return out[0], out[1]


def read_pair(image_path: str, labels_path: str, crop: tuple[slice, slice] | None):
    """Read an image and its labels into memory, cropped to the Y/X window."""
    import numpy as np

    from ..engine.io import read_image

    image, labels = np.asarray(read_image(image_path)), np.asarray(read_image(labels_path))
    if crop is not None:
        labels = labels[(..., *crop)]
        spatial_last = image.ndim == labels.ndim
        image = image[(..., *crop)] if spatial_last else image[(..., *crop, slice(None))]
    if labels.size == 0:
        raise ValueError(f"the crop leaves nothing of {labels_path}.")
    return image, labels


def run(args) -> int:
    from ..adapters import load_adapter
    from ..evaluation import evaluate
    from ..loading import load_model

    image, labels = read_pair(args.image, args.labels, parse_crop(args.crop))
    model = load_model(args.model, args.checkpoint, device=args.device, progress=not args.json)
    if args.adapter:
        load_adapter(model, args.adapter, base_checkpoint=args.checkpoint)
    result = evaluate(model, image, labels, batch_size=args.batch_size)
    if args.json:
        print(result.to_json(per_object=args.per_object))
    else:
        print(f"{args.model}{' + ' + args.adapter if args.adapter else ''} on {args.image}")
        print(result.table())
    return 0
