"""``hqsam evaluate``: score HQ-SAM's box-prompted masks, or an instance output, against labels.

Without ``--predicted``: mIoU and boundary IoU of box-prompted HQ masks (HQ-SAM's own
evaluation). With ``--predicted LABELS`` (the output of ``hqsam auto``, ``hqsam refine``
or any other tool): mSA, F1 at IoU 0.5, mIoU and mBIoU of those labels; no model.
"""

from __future__ import annotations

from ._common import parse_crop, read_pair, require_files
from ._options import (
    add_adapter_option,
    add_data_options,
    add_device_option,
    add_model_options,
    positive_int,
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="score HQ-SAM (optionally with an adapter), or a labels output, "
        "against ground-truth labels",
        description="For every ground-truth object of every slice: its tight box as prompt, "
        "single-mask output, the HQ mask thresholded at 0, scored by mask IoU and boundary "
        "IoU (d = 2% of the image diagonal). With --predicted, an instance segmentation is "
        "scored instead (no model): mean segmentation accuracy (mSA, IoU 0.50:0.05:0.95, "
        "one-to-one matching), F1 at IoU 0.5, and mIoU/mBIoU of each ground-truth object "
        "against the predicted object it overlaps most. Prints a table, or JSON with --json.")
    add_data_options(p, multiple=False)
    p.add_argument("--predicted", metavar="LABELS",
                   help="instance labels to score (e.g. from hqsam auto or hqsam refine), "
                   "same shape as --labels; --model is then not needed")
    add_model_options(p, base=True, required=False)
    add_adapter_option(p, "adapter file from `hqsam train`")
    add_device_option(p)
    p.add_argument("--batch-size", type=positive_int, default=16,
                   help="box prompts per decoder call")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--per-object", action="store_true", help="with --json: per-object scores")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import InputError

    if args.predicted is not None:
        if args.adapter:
            raise InputError("--adapter scores a model: it has no use with --predicted "
                             "(labels already segmented).")
        return _run_predicted(args)
    if args.model is None:
        raise InputError("give --model to score HQ-SAM's box-prompted masks, or --predicted "
                         "LABELS to score a segmentation.")
    from ..adapters import check_adapter, load_adapter
    from ..evaluation import evaluate
    from ..loading import load_model

    # every input is checked before the model loads: labels, checkpoint, adapter
    image, labels = read_pair(args.image, args.labels, parse_crop(args.crop))
    require_files(args.checkpoint)
    if args.adapter:
        check_adapter(args.adapter, args.model, args.checkpoint)
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


def _run_predicted(args) -> int:
    import numpy as np

    from ..engine.io import read_image
    from ..evaluation import evaluate_labels

    crop = parse_crop(args.crop)
    _, labels = read_pair(args.image, args.labels, crop)
    predicted = np.asarray(read_image(args.predicted))
    if crop is not None:
        predicted = predicted[(..., *crop)]
    result = evaluate_labels(labels, predicted)
    if args.json:
        print(result.to_json(per_object=args.per_object))
    else:
        print(f"{args.predicted} against {args.labels}")
        print(result.table())
    return 0
