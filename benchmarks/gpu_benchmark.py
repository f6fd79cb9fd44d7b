"""GPU benchmark: official segment_anything_hq vs napari-hq-sam on one CUDA card, unattended.

Usage (about 2-4 min on an H100; needs only this repository and its venv, no
network, napari or Qt)::

    python benchmarks/gpu_benchmark.py                       # writes benchmarks/BENCHMARKS_GPU.md
    python benchmarks/gpu_benchmark.py --device cpu --quick  # smoke test of every code path

It writes its own random official-format checkpoints (vit_tiny, vit_b) to a
temporary folder, then times per model type, fp32 and bf16: the encoder per
slice (official; official under ``torch.autocast`` for bf16; ours), the decoder
per prompt on a cached slice, and a stack of real slices end to end (encode +
one box per slice): official one by one vs ours batched with
:func:`napari_hq_sam.engine.encoder.encode_slices` (batch size from free memory,
halved on out-of-memory). Reports slices/s, peak GPU memory and the mask IoU of
bf16 against fp32.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    box_logits,
    fmt_s,
    interleaved,
    markdown_table,
    mask_ious,
    nuclei2d,
    nuclei_stack,
    official_predictor,
    our_predictor,
    timed,
    write_checkpoints,
)

from napari_hq_sam.engine.encoder import auto_batch_size, encode_slices  # noqa: E402
from napari_hq_sam.model._inference import true_fp32  # noqa: E402

HERE = Path(__file__).resolve().parent


def autocast(device, precision):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def official_set_image(predictor, image, device, precision) -> None:
    """The official ``set_image``, under autocast for bf16; its decoder then gets fp32 features."""
    with autocast(device, precision):
        predictor.set_image(image)
    if precision != "fp32":
        predictor.features = predictor.features.float()
        predictor.interm_features = [f.float() for f in predictor.interm_features]


def bench_model(mt, ckpt, device, rounds, n_slices, batch_size):
    image, boxes = nuclei2d(8)
    official = official_predictor(mt, ckpt, device)
    ours = our_predictor(mt, ckpt, device)
    rows, notes = [], []

    def set_ours(precision):
        def run():
            ours.model.precision = precision
            ours.set_image(image)
        return run

    def set_official(precision):
        return lambda: official_set_image(official, image, device, precision)

    enc = interleaved({"official fp32": set_official("fp32"), "ours fp32": set_ours("fp32"),
                       "official bf16": set_official("bf16"), "ours bf16": set_ours("bf16")},
                      rounds, device, warmup=2 if rounds > 1 else 0)
    for p in ("fp32", "bf16"):
        o, u = enc[f"official {p}"], enc[f"ours {p}"]
        rows.append([f"{mt} encoder per slice, {p}", fmt_s(o), fmt_s(u), f"{o / u:.1f}x",
                     f"{1 / o:.1f} / {1 / u:.1f}"])

    set_ours("fp32")()
    official.set_image(image)
    ref_default = box_logits(official, boxes)
    with true_fp32(device):  # the official code with fp32 convolutions, like ours
        official.set_image(image)
        ref = box_logits(official, boxes)
    ours32 = box_logits(ours, boxes)
    set_ours("bf16")()
    ours16 = box_logits(ours, boxes)
    rel = np.abs(ours32 - ref).max() / np.abs(ref).max()
    ious = mask_ious(ours16, ours32)
    tf32 = np.abs(ref_default - ref).max() / np.abs(ref).max()
    notes.append(f"{mt}: fp32 vs official worst relative logit difference {rel:.1e} (official "
                 f"with TF32 convolutions off; PyTorch's default TF32 moves the official logits "
                 f"by {tf32:.1e}); "
                 f"bf16 vs fp32 mask IoU mean {ious.mean():.4f}, min {ious.min():.4f} "
                 f"({len(boxes)} nuclei boxes, random weights).")

    set_ours("fp32")()

    def decode(pred):
        return lambda: [pred.predict(box=b, multimask_output=False) for b in boxes]

    dec = interleaved({"official": decode(official), "ours": decode(ours)}, rounds, device)
    o, u = dec["official"] / len(boxes), dec["ours"] / len(boxes)
    rows.append([f"{mt} decoder per prompt (cached slice)", fmt_s(o), fmt_s(u),
                 f"{o / u:.1f}x", f"{1 / o:.0f} / {1 / u:.0f} prompts/s"])

    slices, stack_boxes = nuclei_stack(n_slices)
    for p in ("fp32", "bf16"):
        def run_official(p=p):
            for s, b in zip(slices, stack_boxes):
                official_set_image(official, s, device, p)
                official.predict(box=b, multimask_output=False)

        def run_ours(p=p):
            ours.model.precision = p
            for emb, b in zip(encode_slices(ours.model, slices, batch_size, to_cpu=False),
                              stack_boxes):
                ours.set_image_embedding(emb)
                ours.predict(box=b, multimask_output=False)

        # warm-up runs first (cuDNN plans and allocator pools for each batch
        # shape, CUDA graph capture), the peak memory read on ours
        run_official()
        if torch.device(device).type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        run_ours()
        peak = (f", peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
                if torch.device(device).type == "cuda" else "")
        stack = interleaved({"official": run_official, "ours": run_ours},
                            max(1, rounds // 2), device, warmup=0)
        t_off, t_ours = stack["official"], stack["ours"]
        ours.model.precision = p
        size = batch_size or auto_batch_size(ours.model)
        rows.append([f"{mt} {n_slices}-slice stack end to end, {p} (ours: batch {size}{peak})",
                     fmt_s(t_off), fmt_s(t_ours), f"{t_off / t_ours:.1f}x",
                     f"{n_slices / t_off:.1f} / {n_slices / t_ours:.1f} slices/s"])

    # Encoder throughput alone, batched, on full-size (1024 x 1024) slices.
    big = [np.ascontiguousarray(np.tile(image, (2, 2, 1)))] * n_slices
    for p in ("fp32", "bf16"):
        ours.model.precision = p
        encode_slices(ours.model, big[:2], batch_size)  # warm up
        t = timed(lambda: encode_slices(ours.model, big, batch_size, to_cpu=False), device)
        rows.append([f"{mt} batched encoder alone, {p}, 1024x1024 slices", "",
                     fmt_s(t / n_slices), "", f"{n_slices / t:.1f} slices/s (ours)"])
    ours.model.precision = "fp32"
    return rows, notes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", default="vit_tiny,vit_b")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--slices", type=int, default=64, help="stack length")
    parser.add_argument("--batch-size", type=int, default=None, help="default: from free memory")
    parser.add_argument("--quick", action="store_true", help="vit_tiny, 1 round, 2 slices")
    parser.add_argument("--out", default=str(HERE / "BENCHMARKS_GPU.md"))
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.rounds, args.slices = "vit_tiny", 1, 2
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("No CUDA GPU visible to PyTorch; use --device cpu --quick for a smoke test.")
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    started = time.time()
    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        ckpts = write_checkpoints(Path(tmp), args.models.split(","))
        for mt, ckpt in ckpts.items():
            print(f"[{mt}] ...", flush=True)
            r, n = bench_model(mt, ckpt, args.device, args.rounds, args.slices, args.batch_size)
            rows += r
            notes += n
            if device.type == "cuda":
                torch.cuda.empty_cache()
    table = markdown_table(["measure", "official", "ours", "ratio", "official / ours rate"], rows)
    text = "\n".join([
        f"# GPU benchmark on {card}", "",
        "Written by `python benchmarks/gpu_benchmark.py`: same random official-format "
        "checkpoint for both implementations; medians of interleaved calls; ratio = official / "
        "ours (higher is better); official bf16 = the official code under torch.autocast; "
        "official fp32 timed with PyTorch's defaults (TF32 convolutions), ours in true fp32.", "",
        table, "", *[f"- {n}" for n in notes], "",
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, device {card}; "
        f"run took {(time.time() - started) / 60:.1f} min.", ""])
    print(text)
    if not args.quick:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
