"""Shared parts of the CPU and GPU benchmarks: weights, images, models, timing, tables.

Needs only this repository, torch and the reference package ``segment_anything_hq``
(with ``timm``); no network, napari or Qt. Weights are random official-format
checkpoints written by :func:`napari_hq_sam.testing.write_random_checkpoint`:
speed does not depend on the weights' values, and both implementations load the
very same file.
"""

from __future__ import annotations

import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import tifffile
import torch

from napari_hq_sam import HQSamPredictor, build_hq_sam
from napari_hq_sam.testing import write_random_checkpoint

DATA = Path(__file__).resolve().parents[1] / "src" / "napari_hq_sam" / "_sample_data"


def to_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) from a grey image, 1-99.8 percentile contrast."""
    lo, hi = np.percentile(image, [1, 99.8])
    u8 = (np.clip((image.astype(float) - lo) / max(hi - lo, 1e-9), 0, 1) * 255).astype(np.uint8)
    return np.repeat(u8[..., None], 3, axis=-1)


def box_of(labels: np.ndarray, label: int) -> np.ndarray:
    """XYXY box of one label."""
    ys, xs = np.nonzero(labels == label)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=float)


def nuclei2d(count: int = 16) -> tuple[np.ndarray, list[np.ndarray]]:
    """The 512 x 512 nuclei image and the boxes of its ``count`` largest nuclei."""
    image = tifffile.imread(DATA / "nuclei2d_image.tif")
    labels = tifffile.imread(DATA / "nuclei2d_labels.tif")
    ids, sizes = np.unique(labels[labels > 0], return_counts=True)
    return to_rgb(image), [box_of(labels, i) for i in ids[np.argsort(sizes)[::-1][:count]]]


def nuclei_stack(n_slices: int = 32, zoom: int = 4) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n_slices`` real slices of the nuclei3d stack (31 x 61 x 57, repeated to length),
    upsampled ``zoom`` times (244 x 228), with one box prompt per slice (largest nucleus)."""
    image = tifffile.imread(DATA / "nuclei3d_image.tif")
    labels = tifffile.imread(DATA / "nuclei3d_labels.tif")
    rgb = to_rgb(image)
    slices, boxes = [], []
    for i in range(n_slices):
        z = i % len(image)
        big = rgb[z].repeat(zoom, 0).repeat(zoom, 1)
        lab = labels[z].repeat(zoom, 0).repeat(zoom, 1)
        ids, sizes = np.unique(lab[lab > 0], return_counts=True)
        h, w = lab.shape
        box = box_of(lab, ids[np.argmax(sizes)]) if len(ids) else np.array(
            [w / 4, h / 4, 3 * w / 4, 3 * h / 4])
        slices.append(np.ascontiguousarray(big))
        boxes.append(box)
    return slices, boxes


def write_checkpoints(folder: Path, model_types) -> dict[str, Path]:
    """One random official-format checkpoint per model type."""
    return {mt: write_random_checkpoint(Path(folder) / f"sam_hq_{mt}.pth", mt, seed=0)
            for mt in model_types}


def official_predictor(model_type: str, checkpoint: Path, device="cpu"):
    """``segment_anything_hq.SamPredictor`` with the given file (its own loader)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from segment_anything_hq import SamPredictor, sam_model_registry
        model = sam_model_registry[model_type](checkpoint=str(checkpoint))
    return SamPredictor(model.to(device).eval())


def our_predictor(model_type: str, checkpoint: Path, device="cpu", precision="fp32"):
    """:class:`HQSamPredictor` on ``build_hq_sam`` (fast path on)."""
    model = build_hq_sam(model_type, checkpoint, device=device)
    model.precision = precision
    return HQSamPredictor(model)


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device="cpu") -> float:
    """Wall seconds of one call of ``fn`` (synchronised on CUDA)."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def interleaved(fns: dict, rounds: int, device="cpu", warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved round by round."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            samples[name].append(timed(fn, device))
    return {name: statistics.median(s) for name, s in samples.items()}


def box_logits(predictor, boxes, hq_token_only=False) -> np.ndarray:
    """(K, H, W) low-threshold logits of one box prompt each (multimask off)."""
    return np.stack([predictor.predict(box=b, multimask_output=False, return_logits=True,
                                       hq_token_only=hq_token_only)[0][0] for b in boxes])


def mask_ious(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of the thresholded masks of two (K, H, W) logit stacks."""
    ma, mb = a > 0, b > 0
    inter = (ma & mb).sum(axis=(1, 2))
    union = np.maximum((ma | mb).sum(axis=(1, 2)), 1)
    return inter / union


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1e3:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"
