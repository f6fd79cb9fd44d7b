"""``hqsam evaluate``: mIoU and boundary IoU of box-prompted HQ masks against labels."""

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
        "evaluate", help="score HQ-SAM (optionally with an adapter) against ground-truth labels",
        description="For every ground-truth object of every slice: its tight box as prompt, "
        "single-mask output, the HQ mask thresholded at 0, scored by mask IoU and boundary "
        "IoU (d = 2% of the image diagonal). Prints a table, or JSON with --json.")
    add_data_options(p, multiple=False)
    add_model_options(p, base=True)
    add_adapter_option(p, "adapter file from `hqsam train`")
    add_device_option(p)
    p.add_argument("--batch-size", type=positive_int, default=16,
                   help="box prompts per decoder call")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--per-object", action="store_true", help="with --json: per-object scores")
    p.set_defaults(func=run)


def run(args) -> int:
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
