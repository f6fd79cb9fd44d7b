"""``hqsam train``: train the HQ branch on labelled images and write an adapter file."""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import InputError, OutputError
from ._common import parse_crop, read_pair, require_files
from ._options import (
    add_data_options,
    add_device_option,
    add_model_options,
    add_output_options,
    add_quiet_option,
    fraction,
    non_negative_int,
    positive_float,
    positive_int,
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train the HQ branch on your labels; writes an adapter file",
        description="Freeze SAM and train only the HQ token, its MLP and the fusion layers "
        "(the HQ-SAM recipe) on instance labels. Objects are split into training and held-out "
        "sets; the step with the best held-out mIoU is kept and saved as a small adapter "
        "file for --adapter.")
    add_data_options(p, multiple=True)
    add_model_options(p, base=True)
    add_output_options(p, adapter=True)
    p.add_argument("--steps", type=positive_int, default=300, help="optimiser steps (default 300)")
    p.add_argument("--batch-size", type=positive_int, default=4,
                   help="objects per step (default 4)")
    p.add_argument("--lr", type=positive_float, default=1e-3,
                   help="Adam learning rate (default 1e-3)")
    p.add_argument("--val-fraction", type=fraction, default=0.2,
                   help="share of objects held out for validation (default 0.2)")
    p.add_argument("--eval-every", type=positive_int, default=25, help="validate every N steps")
    p.add_argument("--no-flip", action="store_true", help="no horizontal-flip augmentation")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed")
    add_device_option(p)
    add_quiet_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from tqdm import tqdm

    from ..adapters import check_adapter_output, save_adapter
    from ..loading import load_model
    from ..training import TrainingConfig, train_hq

    # everything the user gave is checked before the model loads and before training
    if len(args.image) != len(args.labels):
        raise InputError(f"give one --labels per --image ({len(args.image)} images, "
                         f"{len(args.labels)} label files).")
    out = check_adapter_output(args.out, args.overwrite)
    _refuse_input_as_output(out, args)
    require_files(args.checkpoint)
    crop = parse_crop(args.crop)
    data = [read_pair(i, lab, crop) for i, lab in zip(args.image, args.labels)]
    config = TrainingConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                            val_fraction=args.val_fraction, eval_every=args.eval_every,
                            flip=not args.no_flip, seed=args.seed)
    model = load_model(args.model, args.checkpoint, device=args.device, progress=not args.quiet)
    bars = {}

    def progress(update):
        bar = bars.get(update.phase)
        if bar is None:
            bar = bars[update.phase] = tqdm(total=update.total, disable=args.quiet,
                                            desc=update.phase, unit="step")
        bar.n = update.step
        if update.loss is not None:
            bar.set_postfix(loss=f"{update.loss:.3f}", refresh=False)
        bar.refresh()
        if update.val is not None and not math.isnan(update.val["mIoU"]):
            bar.write(f"step {update.step}: held-out mIoU {update.val['mIoU']:.4f} "
                      f"mBIoU {update.val['mBIoU']:.4f}")

    result = train_hq(model, data, config, progress=progress)
    for bar in bars.values():
        bar.close()
    metrics = {"best_step": result.best_step, "steps_done": result.steps_done,
               "val": result.best_metrics, "val_initial": result.initial_metrics,
               "n_train_objects": result.n_train_objects, "n_val_objects": result.n_val_objects,
               "seconds_per_step": result.seconds_per_step}
    training = {**config.to_dict(), "images": list(args.image), "labels": list(args.labels),
                "crop": args.crop}
    save_adapter(model, out, base_checkpoint=args.checkpoint, training=training, metrics=metrics,
                 overwrite=args.overwrite)
    init, best = result.initial_metrics, result.best_metrics
    counts = (f"{result.n_train_objects} training, {result.n_val_objects} held-out objects; "
              f"{result.seconds_per_step:.2f} s/step")
    if result.n_val_objects:
        print(f"held-out mIoU {init['mIoU']:.4f} -> {best['mIoU']:.4f}, mBIoU "
              f"{init['mBIoU']:.4f} -> {best['mBIoU']:.4f} (best step {result.best_step} of "
              f"{result.steps_done}; {counts})")
    else:
        print(f"held-out mIoU not measured (no held-out objects): kept the last step, "
              f"step {result.steps_done} ({counts})")
    print(f"adapter written: {out}")
    return 0


def _refuse_input_as_output(out: Path, args) -> None:
    """An --out that names an input file would replace it (with --overwrite): refuse."""
    if not out.exists():
        return
    for flag, paths in (("--image", args.image), ("--labels", args.labels),
                        ("--checkpoint", [args.checkpoint] if args.checkpoint else [])):
        for path in paths:
            if Path(path).exists() and out.samefile(path):
                raise OutputError(f"--out {out} is the {flag} file: choose another file name "
                                  "for the adapter.")
