"""Segment everything on the 31-slice nuclei3d stack, end to end: exact and seeded.

Usage: ``python benchmarks/bench_auto_stack.py [--official-slices 2] [--points-per-side 32]``.

One process, one random official-format vit_tiny checkpoint, CPU:

- ours exact and ours seeded: :func:`napari_hq_sam.engine.everything.segment_everything`
  on the whole (31, 61, 57) stack, as ``hqsam auto`` runs it (each slice encoded,
  decoded, filtered, written to the labels), official default filters;
- the official ``SamAutomaticMaskGenerator`` on ``--official-slices`` slices only
  (each costs minutes at the default grid), as uint8 RGB with the contrast the
  stack run uses; its stack figure is that per-slice time times 31, marked as such.

With random weights no grid point passes the official predicted-IoU threshold, so
neither mode builds masks at the defaults; ``bench_auto.py`` has the rows where
masks are built and compared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import tifffile

from napari_hq_sam import build_hq_sam
from napari_hq_sam.automatic import AutoMaskConfig
from napari_hq_sam.engine.everything import segment_everything
from napari_hq_sam.engine.image import default_contrast_limits
from napari_hq_sam.engine.seeds import ImageSeeds
from napari_hq_sam.testing import write_random_checkpoint

STACK = (Path(__file__).resolve().parents[1]
         / "src/napari_hq_sam/_sample_data/nuclei3d_image.tif")


def timed(fn):
    """(result, wall seconds)."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def rgb_slice(plane: np.ndarray, limits: tuple[float, float]) -> np.ndarray:
    """(H, W, 3) uint8 of one slice with the stack's contrast limits."""
    lo, hi = limits
    u8 = (np.clip((plane.astype(float) - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    return np.repeat(u8[..., None], 3, axis=-1)


def official_per_slice(stack, ckpt, limits, count: int, side: int) -> list[float]:
    """Wall seconds of the official generator on ``count`` evenly spaced slices."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from segment_anything_hq import SamAutomaticMaskGenerator, sam_model_registry
        model = sam_model_registry["vit_tiny"](checkpoint=str(ckpt)).eval()
    generator = SamAutomaticMaskGenerator(model, points_per_side=side)
    picks = np.linspace(0, len(stack) - 1, count).round().astype(int)
    times = []
    for z in picks:
        _, seconds = timed(lambda z=z: generator.generate(rgb_slice(stack[z], limits)))
        times.append(seconds)
        print(f"official slice {z}: {seconds:.1f} s", flush=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--official-slices", type=int, default=2,
                        help="slices timed with the official generator (0: none)")
    parser.add_argument("--points-per-side", type=int, default=32)
    args = parser.parse_args()
    stack = tifffile.imread(STACK)
    limits = tuple(float(v) for v in default_contrast_limits(stack))
    print(f"stack {stack.shape} {stack.dtype}, contrast {limits}, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    config = AutoMaskConfig(points_per_side=args.points_per_side)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = write_random_checkpoint(Path(tmp) / "sam_hq_vit_tiny.pth", "vit_tiny")
        model = build_hq_sam("vit_tiny", ckpt)
        exact, t_exact = timed(lambda: segment_everything(model, stack, config,
                                                          contrast_limits=limits))
        print(f"ours exact: {t_exact:.1f} s", flush=True)
        seeded, t_seeded = timed(lambda: segment_everything(
            model, stack, config, contrast_limits=limits, seeds=ImageSeeds()))
        print(f"ours seeded: {t_seeded:.1f} s", flush=True)
        official = (official_per_slice(stack, ckpt, limits, args.official_slices,
                                       args.points_per_side)
                    if args.official_slices else [])
    n = len(stack)
    print()
    print("| mode | stack (31 slices) | per slice | vs official | vs exact | objects |")
    print("|---|---|---|---|---|---|")
    if official:
        per = statistics.median(official)
        print(f"| official generator | ≈{per * n:.0f} s ({len(official)} slices timed × {n}) "
              f"| {per:.1f} s | 1× | | |")
    else:
        per = float("nan")
    for name, result, seconds in (("ours exact", exact, t_exact),
                                  ("ours seeded", seeded, t_seeded)):
        ratio = f"{per * n / seconds:.1f}×" if official else ""
        print(f"| {name} | {seconds:.1f} s | {seconds / n:.2f} s | {ratio} | "
              f"{t_exact / seconds:.1f}× | {result.objects} |")
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
