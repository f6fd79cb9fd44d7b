"""Where the batched encoder spends its time on a CUDA GPU (torch.profiler).

Usage::

    python benchmarks/gpu_profile.py [--out benchmarks/GPU_PROFILE.md]

Random weights are enough for timing: the work does not depend on their values.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from napari_hq_sam import build_hq_sam


def encode_rate(model, batch: torch.Tensor, repeats: int = 3) -> float:
    """Slices per second of ``model.encode`` on a preprocessed batch (B, 3, 1024, 1024)."""
    model.encode(batch)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        model.encode(batch)
    torch.cuda.synchronize()
    return repeats * len(batch) / (time.perf_counter() - start)


def top_ops(model, batch: torch.Tensor, rows: int = 12) -> str:
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        model.encode(batch)
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", default=str(Path(__file__).with_name("GPU_PROFILE.md")))
    args = parser.parse_args()
    lines = [f"# Encoder profile on {torch.cuda.get_device_name()}", "",
             f"torch {torch.__version__}; batch {args.batch} of 1024x1024 slices; "
             "random weights; written by `python benchmarks/gpu_profile.py`.", ""]
    for model_type in ("vit_tiny", "vit_b"):
        model = build_hq_sam(model_type, device="cuda")
        batch = torch.randn(args.batch, 3, 1024, 1024, device="cuda")
        for precision in ("fp32", "bf16"):
            model.precision = precision
            rate = encode_rate(model, batch)
            lines.append(f"- {model_type} {precision}: {rate:.1f} slices/s")
            print(lines[-1], flush=True)
        model.precision = "bf16"
        lines += ["", f"## {model_type}, bf16: top CUDA kernels", "", "```",
                  top_ops(model, batch), "```", ""]
        del model, batch
        torch.cuda.empty_cache()
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
