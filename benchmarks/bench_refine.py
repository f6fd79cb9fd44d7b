"""Time 'refine all objects' on the nuclei samples, from their ground-truth labels.

Usage: ``python benchmarks/bench_refine.py [--device cpu] [--model vit_tiny] [--no-stack]``.

Rows:

- nuclei2d (512 x 512, 125 nuclei): the encoder once, then every object decoded from its
  box and mask logits in batches (:func:`napari_hq_sam.engine.refine.refine_slice`), per
  slice and per object; the prompts (mask logits, boxes) and the overlap rules timed on
  their own, since they are this package's part of the work; once with the default
  thresholds and once with them off (every decoded mask is judged and painted);
- nuclei3d (31 x 61 x 57), every slice end to end through
  :func:`~napari_hq_sam.engine.refine.refine_labels` (encoder included).

Random official-format weights (no download): the time does not depend on their values,
only how many objects are kept does (random weights lose most objects, so the default
run keeps them; the thresholds-off run shows the cost when all are refined).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from napari_hq_sam import build_hq_sam
from napari_hq_sam.engine.image import default_contrast_limits, to_model_image
from napari_hq_sam.engine.refine import (
    object_prompts,
    refine_labels,
    refine_slice,
)
from napari_hq_sam.predictor import HQSamPredictor
from napari_hq_sam.testing import write_random_checkpoint

DATA = Path(__file__).resolve().parents[1] / "src" / "napari_hq_sam" / "_sample_data"


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    return (tifffile.imread(DATA / f"{name}_image.tif"),
            tifffile.imread(DATA / f"{name}_labels.tif"))


CPU = {"seconds": 0.0}  # process CPU time of the last timed call (less noisy under load)


def timed(fn, *args, **kwargs):
    start, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    CPU["seconds"] = time.process_time() - cpu
    return out, time.perf_counter() - start


def bench_2d(model, batch: int) -> None:
    image, labels = load("nuclei2d")
    n = len(np.unique(labels)) - 1
    predictor = HQSamPredictor(model)
    rgb = to_model_image(image, default_contrast_limits(image))
    _, encode = timed(predictor.set_image, rgb)
    _, prompts = timed(object_prompts, labels, predictor.input_size, use_mask=True)
    print(f"nuclei2d {labels.shape}, {n} objects: encoder {encode:.2f} s; prompts (boxes, "
          f"mask logits) {prompts * 1e3:.0f} ms ({prompts / n * 1e3:.2f} ms per object)")
    for name, options in (("default thresholds", {}),
                          ("thresholds off", dict(score_threshold=-1.0, iou_threshold=0.0))):
        out, decode = timed(refine_slice, predictor, labels, batch_size=batch, **options)
        cpu = CPU["seconds"]
        kept = {}
        for k in out.kept:
            kept[k.reason] = kept.get(k.reason, 0) + 1
        total = encode + decode
        print(f"  {name}: decode + judge + paint {decode:.2f} s ({decode / n * 1e3:.0f} ms per "
              f"object, CPU {cpu / n * 1e3:.0f} ms), slice with encoder {total:.2f} s "
              f"({total / n * 1e3:.0f} ms per "
              f"object); refined {len(out.refined)}, kept {len(out.kept)} {kept}; "
              f"ids kept: {set(np.unique(out.labels)) == set(np.unique(labels))}", flush=True)


def bench_official(checkpoint: Path, model_type: str, device: str, batch: int) -> None:
    """The official predictor decoding the same 125 box + mask prompts (the reference)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import official_predictor

    image, labels = load("nuclei2d")
    n = len(np.unique(labels)) - 1
    predictor = official_predictor(model_type, checkpoint, device)
    rgb = to_model_image(image, default_contrast_limits(image))
    _, encode = timed(predictor.set_image, rgb)
    prompts = object_prompts(labels, predictor.input_size, use_mask=True)
    size = predictor.original_size

    def decode_all():
        for first in range(0, n, batch):
            chunk = slice(first, first + batch)
            boxes = predictor.transform.apply_boxes_torch(
                torch.as_tensor(prompts.boxes[chunk], device=device), size)
            predictor.predict_torch(None, None, boxes=boxes,
                                    mask_input=torch.as_tensor(prompts.masks[chunk],
                                                               device=device),
                                    multimask_output=False, hq_token_only=True)

    _, decode = timed(decode_all)
    print(f"  official predictor, same prompts: encoder {encode:.2f} s, decode {decode:.2f} s "
          f"({decode / n * 1e3:.0f} ms per object, CPU {CPU['seconds'] / n * 1e3:.0f} ms), "
          f"slice {encode + decode:.2f} s", flush=True)


def bench_stack(model, batch: int) -> None:
    image, labels = load("nuclei3d")
    n = sum(len(np.unique(s)) - 1 for s in labels)
    result, seconds = timed(refine_labels, image, labels, model, batch_size=batch,
                            score_threshold=-1.0, iou_threshold=0.0)
    cpu = CPU["seconds"]
    z = len(result.slices)
    print(f"nuclei3d {labels.shape}: {z} slices, {n} objects (per slice) end to end "
          f"{seconds:.1f} s ({seconds / z:.2f} s per slice, {seconds / n * 1e3:.0f} ms per "
          f"object; CPU {cpu:.1f} s); refined {result.refined}, kept {len(result.kept)} "
          f"{result.kept_reasons()}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="vit_tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32, help="prompts per decoder call")
    parser.add_argument("--no-stack", action="store_true", help="skip the nuclei3d stack")
    parser.add_argument("--official", action="store_true",
                        help="also time the official predictor on the same 2D prompts")
    args = parser.parse_args()
    print(f"{args.model} on {args.device}, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = write_random_checkpoint(Path(tmp) / f"sam_hq_{args.model}.pth",
                                             args.model, seed=0)
        model = build_hq_sam(args.model, checkpoint, device=args.device)
        with torch.inference_mode():
            bench_2d(model, args.batch)
            if args.official:
                bench_official(checkpoint, args.model, args.device, args.batch)
            if not args.no_stack:
                bench_stack(model, args.batch)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
