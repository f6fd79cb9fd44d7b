"""Large images: tiled HQ-SAM on an 8192 x 8192 mosaic of the bundled nuclei image.

Builds the mosaic (the 512 x 512 sample repeated 16 x 16, as a zarr array, with its
ground truth repeated alike), then runs the CLI as a user would, each in its own
process so that its peak resident memory is its own:

- interactive: ``hqsam segment`` with a few box prompts (some across tile borders),
  labels to a .zarr; checks one id per box, labels only near the prompts;
- batch: ``hqsam embed`` of every tile;
- automatic: ``hqsam auto --seeds image`` on a 2048 x 2048 crop (a tiled grid run
  on 8192 x 8192 takes hours on a CPU);
- the official ``segment_anything_hq.SamPredictor`` on the same 8192 x 8192 slice and
  prompts, in this process: it can only resize the slice to 1024.

Prints time per megapixel, tiles computed, peak resident memory (``ru_maxrss`` of
each child) and the boundary resolution of both paths. Random official-format
vit_tiny weights (speed and memory do not depend on their values).

    python benchmarks/bench_large.py [--size 8192] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, official_predictor, write_checkpoints  # noqa: E402


def build_mosaic(folder: Path, size: int) -> tuple[Path, np.ndarray, np.ndarray]:
    """``(zarr path, image, labels)``: the sample repeated to ``size`` x ``size``."""
    image = tifffile.imread(DATA / "nuclei2d_image.tif")
    labels = tifffile.imread(DATA / "nuclei2d_labels.tif").astype(np.int64)
    reps = size // image.shape[0]
    mosaic = np.zeros((reps * 512, reps * 512), image.dtype)
    # every copy turned or flipped, and offset by its own small intensity, so that no two
    # tiles hold the same pixels (the embedding cache would otherwise find repeats);
    # ground truth: each copy's ids offset so that every nucleus keeps its own id
    truth = np.zeros(mosaic.shape, np.int64)
    step = int(labels.max())
    for r in range(reps):
        for c in range(reps):
            k = r * reps + c
            mosaic[r * 512:(r + 1) * 512, c * 512:(c + 1) * 512] = _turn(image, k) + k % 5
            copy = _turn(labels, k) + k * step
            copy[_turn(labels, k) == 0] = 0
            truth[r * 512:(r + 1) * 512, c * 512:(c + 1) * 512] = copy
    path = folder / "mosaic.zarr"
    z = zarr.open_array(path, mode="w", shape=mosaic.shape, chunks=(1024, 1024),
                        dtype=mosaic.dtype)
    z[:] = mosaic
    return path, mosaic, truth


def _turn(a: np.ndarray, k: int) -> np.ndarray:
    """Copy ``k`` of the sample: one of its 8 rotations and flips."""
    return np.rot90(a[:, ::-1] if k % 2 else a, (k // 2) % 4)


def pick_boxes(truth: np.ndarray, n: int = 8) -> list[tuple[int, list[int]]]:
    """``n`` nuclei spread over the slice, half of them across a tile core border."""
    from napari_hq_sam.engine.tiles import Tiling

    core = Tiling().core
    ids = np.unique(truth[truth > 0])
    rng = np.random.default_rng(0)
    across, inside = [], []
    for obj in rng.permutation(ids):
        rows, cols = np.nonzero(truth[_region(truth, obj)] == obj)
        r0, c0 = _region(truth, obj)[0].start, _region(truth, obj)[1].start
        box = [int(c0 + cols.min()), int(r0 + rows.min()), int(c0 + cols.max()),
               int(r0 + rows.max())]
        crosses = box[0] // core != box[2] // core or box[1] // core != box[3] // core
        (across if crosses else inside).append((int(obj), box))
        if len(across) >= n // 2 and len(inside) >= n - n // 2:
            break
    return across[:n // 2] + inside[:n - n // 2]


_REGIONS: dict = {}


def _region(truth, obj):
    if not _REGIONS:
        from scipy import ndimage

        for k, sl in enumerate(ndimage.find_objects(truth), start=1):
            if sl is not None:
                _REGIONS[k] = sl
    return _REGIONS[obj]


def run_cli(args: list[str]) -> tuple[float, float, str]:
    """``(seconds, peak resident MiB, stdout)`` of one ``hqsam`` run in a child process."""
    script = ("import resource, sys; from napari_hq_sam.cli import main; code = main(sys.argv[1:]);"
              " print('PEAK_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss);"
              " sys.exit(code)")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"hqsam {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    peak = int(re.search(r"PEAK_KIB (\d+)", done.stdout).group(1)) / 1024
    return seconds, peak, done.stdout


def computed(stdout: str) -> int | str:
    """Embeddings the run computed, from its summary line ("" when it does not say)."""
    found = re.search(r"(\d+) computed", stdout)
    return int(found.group(1)) if found else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = write_checkpoints(tmp, ["vit_tiny"])["vit_tiny"]
        image_path, mosaic, truth = build_mosaic(tmp, args.size)
        megapixels = mosaic.size / 1e6
        boxes = pick_boxes(truth)
        prompts = tmp / "boxes.json"
        prompts.write_text(json.dumps({"prompts": [
            {"object": k + 1, "box": box} for k, (_, box) in enumerate(boxes)]}))
        model = ["--model", "vit_tiny", "--checkpoint", str(checkpoint), "--device",
                 args.device, "--quiet"]

        # interactive: a few boxes, only their tiles
        out = tmp / "labels.zarr"
        seconds, peak, stdout = run_cli(["segment", str(image_path), "--prompts", str(prompts),
                                         "--out", str(out), *model])
        labels = zarr.open_array(out, mode="r") if (out / "zarr.json").exists() or \
            (out / ".zarray").exists() else zarr.open_group(out, mode="r")["0"]
        found = _check_labels(labels, boxes)
        rows.append(("segment, 8 boxes (4 across tile borders)", seconds, megapixels,
                     computed(stdout), peak, found))
        print(rows[-1], flush=True)

        # batch: every tile embedded
        seconds, peak, stdout = run_cli(["embed", str(image_path), "--cache",
                                         str(tmp / "cache"), *model])
        rows.append(("embed, every tile", seconds, megapixels, computed(stdout), peak, ""))
        print(rows[-1], flush=True)

        # automatic, seeded, on a 2048 x 2048 crop
        crop = tmp / "crop.tif"
        tifffile.imwrite(crop, mosaic[:2048, :2048])
        seconds, peak, stdout = run_cli(["auto", str(crop), "--seeds", "image", "--diameter",
                                         "20", "--out", str(tmp / "auto.tif"), *model])
        n_auto = int(tifffile.imread(tmp / "auto.tif").max())
        rows.append(("auto --seeds image, 2048 x 2048 crop", seconds, 2048 * 2048 / 1e6,
                     computed(stdout), peak, f"{n_auto} objects"))

        # the official predictor: the whole slice resized to 1024
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        start = time.perf_counter()
        predictor = official_predictor("vit_tiny", checkpoint, args.device)
        lo, hi = float(mosaic.min()), float(mosaic.max())
        rgb = np.repeat(((mosaic - lo) / (hi - lo) * 255).astype(np.uint8)[..., None], 3, -1)
        predictor.set_image(rgb)
        for _, box in boxes:
            predictor.predict(box=np.array(box, float), multimask_output=False)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rows.append(("official SamPredictor, slice resized", seconds, megapixels, 1,
                     max(peak, before), "same 8 boxes"))

    print(f"\n{args.size} x {args.size} nuclei mosaic, vit_tiny (random weights), "
          f"device {args.device}\n")
    print("| run | wall s | s per megapixel | tiles computed | peak resident MiB | check |")
    print("|---|---|---|---|---|---|")
    for name, seconds, mp, tiles, peak, check in rows:
        print(f"| {name} | {seconds:.1f} | {seconds / mp:.2f} | {tiles} | {peak:.0f} | {check} |")
    scale = args.size / 1024
    print(f"\nBoundary resolution: HQ-SAM's masks come from 256 x 256 logits of its 1024 px "
          f"input. Tiled, one logit covers 4 x 4 image pixels; the slice resized whole, "
          f"{4 * scale:g} x {4 * scale:g} ({scale:g}x coarser: a 15 px nucleus spans "
          f"{15 / (4 * scale):.1f} logits instead of {15 / 4:.1f}).")


def _check_labels(labels, boxes) -> str:
    """One id per box, each near its box, nothing elsewhere (checked chunk by chunk)."""
    ids_seen = set()
    far = 0
    for r in range(0, labels.shape[0], 1024):
        for c in range(0, labels.shape[1], 1024):
            block = np.asarray(labels[r:r + 1024, c:c + 1024])
            for obj in np.unique(block[block > 0]):
                ids_seen.add(int(obj))
                x0, y0, x1, y1 = boxes[int(obj) - 1][1]
                rows, cols = np.nonzero(block == obj)
                if (rows.min() + r < y0 - 2048 or rows.max() + r > y1 + 2048
                        or cols.min() + c < x0 - 2048 or cols.max() + c > x1 + 2048):
                    far += 1
    ok = ids_seen == set(range(1, len(boxes) + 1)) and far == 0
    return (f"{len(ids_seen)} ids for {len(boxes)} boxes, none far from its box" if ok
            else f"FAILED: ids {sorted(ids_seen)}, {far} far")


if __name__ == "__main__":
    main()
