"""Time automatic mask generation per 2D slice (default parameters, 32x32 grid).

Usage: ``python benchmarks/bench_auto.py vit_tiny [vit_b ...] [--device cpu]``.
Random official-format weights (no download); the time does not depend on the
weights except through how many masks survive the filters (the default
thresholds keep few with random weights, so the clean-up steps cost little).
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
from napari_hq_sam.automatic import AutoMaskConfig, AutomaticMaskGenerator
from napari_hq_sam.testing import write_random_checkpoint

IMAGE = Path(__file__).resolve().parents[1] / "src/napari_hq_sam/_sample_data/nuclei2d_image.tif"


def to_rgb(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [1, 99.8])
    u8 = (np.clip((image.astype(float) - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    return np.repeat(u8[..., None], 3, axis=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--points-per-side", type=int, default=32)
    args = parser.parse_args()
    rgb = to_rgb(tifffile.imread(IMAGE))
    print(f"image {rgb.shape}, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        for model_type in args.models:
            ckpt = write_random_checkpoint(Path(tmp) / f"{model_type}.pth", model_type)
            model = build_hq_sam(model_type, ckpt, device=args.device)
            gen = AutomaticMaskGenerator(model, AutoMaskConfig(
                points_per_side=args.points_per_side))
            t0, c0 = time.perf_counter(), time.process_time()
            gen.predictor.set_image(rgb)
            embedding = gen.predictor.get_image_embedding()
            t1, c1 = time.perf_counter(), time.process_time()
            masks = gen.generate(rgb, embedding=embedding)
            t2, c2 = time.perf_counter(), time.process_time()
            print(f"{model_type}: encoder {t1 - t0:.1f} s (CPU {c1 - c0:.1f} s), decoding + "
                  f"filtering {args.points_per_side ** 2} points {t2 - t1:.1f} s (CPU "
                  f"{c2 - c1:.1f} s), total {t2 - t0:.1f} s per slice, {len(masks)} masks "
                  f"kept, load average {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
