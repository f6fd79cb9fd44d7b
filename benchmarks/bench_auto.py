"""Segment everything on one slice: the official generator, ours exact, ours seeded.

Usage: ``python benchmarks/bench_auto.py [--points-per-side 32] [--rounds 1]
[--all-masks-side 16] [--pass-side 16] [--pass-fractions 0.25 0.5]``.

One process, one random official-format vit_tiny checkpoint loaded by both
packages, the 512 x 512 nuclei sample as RGB (1-99.8 percentile contrast):

- official: ``segment_anything_hq.SamAutomaticMaskGenerator`` (official defaults);
- ours exact: :class:`napari_hq_sam.automatic.AutomaticMaskGenerator`, same
  parameters, timed up to every mask decoded to a binary array (the official
  output); its masks are compared with the official ones;
- ours seeded: :func:`napari_hq_sam.engine.everything.segment_everything` with
  ``seeds=ImageSeeds()`` (diameter estimated, seeds found, same filters).

Every time includes the encoder, as a user waits for it. The three run in turn in
each round (official, exact, seeded), so that load from other processes on a
shared machine hits them alike; times are medians over rounds. With random
weights no grid point passes the official predicted-IoU threshold (0.88), so at
the defaults the decoders' mask heads never run for either mode of ours; the
``--all-masks-side`` rows switch the IoU and stability filters off so that every
candidate's mask is computed (the official code computes every mask in both
cases). Between the two, the ``--pass-side`` rows set the predicted-IoU threshold
at a quantile of this checkpoint's scores over the grid, so that a known fraction
of the points passes (as trained weights pass some): stability filter off, box
NMS at 1.0 so that every passing mask is kept and compared with the official one.
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
import torch

from napari_hq_sam import build_hq_sam
from napari_hq_sam.automatic import AutoMaskConfig, AutomaticMaskGenerator
from napari_hq_sam.automatic_decoder import StagedDecoder
from napari_hq_sam.engine.everything import segment_everything
from napari_hq_sam.engine.seeds import ImageSeeds
from napari_hq_sam.predictor import HQSamPredictor
from napari_hq_sam.testing import write_random_checkpoint

IMAGE = Path(__file__).resolve().parents[1] / "src/napari_hq_sam/_sample_data/nuclei2d_image.tif"


def to_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) from a grey image, 1-99.8 percentile contrast."""
    lo, hi = np.percentile(image, [1, 99.8])
    u8 = (np.clip((image.astype(float) - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    return np.repeat(u8[..., None], 3, axis=-1)


def official_model(checkpoint: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from segment_anything_hq import sam_model_registry
        return sam_model_registry["vit_tiny"](checkpoint=str(checkpoint)).eval()


def timed(fn):
    """(result, wall seconds)."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def with_masks(result):
    """``result`` after decoding all its masks to (N, H, W) bool, as the official output."""
    result.masks()
    return result


def agreement(official: list[dict], ours) -> str:
    """How the exact masks compare with the official ones (matched by prompt point)."""
    if official is None:
        return "official not run"
    official = [r for r in official if r["area"] > 0]
    if len(official) != len(ours):
        return f"{len(ours)} masks vs {len(official)} official: NOT the same set"
    if not len(ours):
        return "no mask kept by either (the same empty set)"
    by_point = {tuple(np.round(r["point_coords"][0], 3)): r for r in official}
    agree = [(ours.mask(i) == by_point[tuple(np.round(ours.points[i], 3))][
        "segmentation"]).mean() for i in range(len(ours))]
    return f"{len(ours)} masks, the same points, pixels agreeing >= {min(agree):.5f}"


def run_modes(label, rounds, image, rgb, ckpt, config, official_params, official=True):
    """Time the three modes in turn; returns medians and what each found."""
    from segment_anything_hq import SamAutomaticMaskGenerator

    ref_model = official_model(ckpt)
    model = build_hq_sam("vit_tiny", ckpt)
    times = {"official": [], "exact": [], "seeded": []}
    official_masks = []
    for r in range(rounds):
        if official:
            official_masks, t = timed(lambda: SamAutomaticMaskGenerator(
                ref_model, **official_params).generate(rgb))
        else:
            t = float("nan")
        times["official"].append(t)
        # the official generator returns every mask as a binary array: so do we
        ours, t = timed(lambda: with_masks(AutomaticMaskGenerator(model, config).generate(rgb)))
        times["exact"].append(t)
        seeded, t = timed(lambda: segment_everything(model, image, config,
                                                     seeds=ImageSeeds()))
        times["seeded"].append(t)
        print(f"{label} round {r + 1}: " + ", ".join(
            f"{k} {v[-1]:.1f} s" for k, v in times.items())
            + f" (load {os.getloadavg()[0]:.1f})", flush=True)
    return ({k: statistics.median(v) for k, v in times.items()},
            official_masks, ours, seeded)


def grid_scores(rgb, ckpt, side: int) -> np.ndarray:
    """Predicted IoU of every point of a side x side grid (ours; equal to the official)."""
    predictor = HQSamPredictor(build_hq_sam("vit_tiny", ckpt))
    predictor.set_image(rgb)
    points = AutoMaskConfig(points_per_side=side).layer_point_grids[0] * np.array(
        rgb.shape[1::-1])
    coords = torch.as_tensor(predictor.transform.apply_coords(points, rgb.shape[:2]),
                             dtype=torch.float)[:, None]
    decoder = StagedDecoder(predictor.model, predictor.features, predictor.hq_features)
    return decoder.tokens(coords, torch.ones(len(coords), 1, dtype=torch.int)).scores.numpy()


def encoder_times(rgb, ckpt, rounds: int) -> tuple[float, float]:
    """Median wall time of each implementation's encoder (alternating)."""
    from segment_anything_hq import SamPredictor

    ref, ours = SamPredictor(official_model(ckpt)), HQSamPredictor(build_hq_sam("vit_tiny",
                                                                                 ckpt))
    a, b = [], []
    for _ in range(max(rounds, 2)):
        a.append(timed(lambda: ref.set_image(rgb))[1])
        b.append(timed(lambda: ours.set_image(rgb))[1])
    return statistics.median(a), statistics.median(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--all-masks-side", type=int, default=16,
                        help="grid side of the rows with the filters off (0: skip them)")
    parser.add_argument("--pass-side", type=int, default=16,
                        help="grid side of the rows with a fraction of points passing "
                             "the IoU filter (0: skip them)")
    parser.add_argument("--pass-fractions", type=float, nargs="*", default=[0.25, 0.5])
    parser.add_argument("--no-official", action="store_true",
                        help="time ours only (exact and seeded), e.g. for more rounds")
    args = parser.parse_args()
    image = tifffile.imread(IMAGE)
    rgb = to_rgb(image)
    start = time.perf_counter()
    print(f"image {rgb.shape}, torch {torch.__version__} threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    gray_seeds, seed_seconds = timed(lambda: ImageSeeds().seeds(rgb))
    seeds, diameter = gray_seeds
    print(f"seeds: {len(seeds)}, estimated diameter {diameter:.1f} px, found in "
          f"{seed_seconds:.2f} s", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = write_random_checkpoint(Path(tmp) / "sam_hq_vit_tiny.pth", "vit_tiny")
        enc_official, enc_ours = encoder_times(rgb, ckpt, args.rounds)
        print(f"encoder: official {enc_official:.2f} s, ours {enc_ours:.2f} s", flush=True)
        cases = [("defaults", args.points_per_side, {})]
        if args.pass_side:
            scores = grid_scores(rgb, ckpt, args.pass_side)
            for fraction in args.pass_fractions:
                threshold = float(np.quantile(scores, 1 - fraction))
                passing = float((scores > threshold).mean())
                cases.append((f"IoU > {threshold:.4f} ({100 * passing:.0f} % pass)",
                              args.pass_side, dict(pred_iou_thresh=threshold,
                                                   stability_score_thresh=0.0,
                                                   box_nms_thresh=1.0)))
        if args.all_masks_side:
            cases.append(("filters off", args.all_masks_side,
                          dict(pred_iou_thresh=0.0, stability_score_thresh=0.0)))
        for label, side, filters in cases:
            config = AutoMaskConfig(points_per_side=side, **filters)
            params = dict(points_per_side=side, **filters)
            med, official_masks, ours, seeded = run_modes(label, args.rounds, image, rgb,
                                                          ckpt, config, params,
                                                          not args.no_official)
            n = side * side
            per = {"official": (med["official"] - enc_official) / n,
                   "exact": (med["exact"] - enc_ours) / n,
                   "seeded": (med["seeded"] - enc_ours) / max(len(seeds), 1)}
            rows.append((label, side, med, per, len(official_masks), len(ours),
                         seeded.objects, agreement(None if args.no_official else
                                                   official_masks, ours)))
    print()
    print("| filters | grid | mode | per slice (encoder included) | per point / seed "
          "(decoder + filters) | vs official | vs exact | objects |")
    print("|---|---|---|---|---|---|---|---|")
    for label, side, med, per, n_off, n_ours, n_seeded, _ in rows:
        o, e, s = med["official"], med["exact"], med["seeded"]
        print(f"| {label} | {side}x{side} | official | {o:.1f} s | {1e3 * per['official']:.0f} ms"
              f" | 1x | | {n_off} |")
        print(f"| {label} | {side}x{side} | ours exact | {e:.1f} s | {1e3 * per['exact']:.0f} ms"
              f" | {o / e:.1f}x | 1x | {n_ours} |")
        print(f"| {label} | {len(seeds)} seeds | ours seeded | {s:.1f} s | "
              f"{1e3 * per['seeded']:.0f} ms | {o / s:.1f}x | {e / s:.1f}x | {n_seeded} |")
    print()
    for label, side, *_, agree in rows:
        print(f"- exact vs official, {label} ({side}x{side}): {agree}")
    print(f"- encoder alone: official {enc_official:.2f} s, ours {enc_ours:.2f} s; seeds "
          f"({len(seeds)}, estimated diameter {diameter:.1f} px) found in {seed_seconds:.2f} s")
    print(f"- {args.rounds} round(s), modes in turn; load average at the end "
          f"{os.getloadavg()[0]:.1f}; {time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    main()
