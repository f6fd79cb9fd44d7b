"""CPU benchmark: the official segment_anything_hq package vs napari-hq-sam, one run.

Usage (about 5 min on a quiet 2-core machine, longer when it is shared)::

    python benchmarks/cpu_benchmark.py                 # writes benchmarks/BENCHMARKS.md
    python benchmarks/cpu_benchmark.py --quick         # vit_tiny only, a smoke test

Both implementations load the same random official-format checkpoint. Timed:
the encoder per slice (``set_image`` on the 512 x 512 nuclei image; ours also
computes the HQ feature there), the decoder per box prompt on a cached slice,
and a 32-slice stack end to end (vit_tiny; nuclei3d slices upsampled 4x, one box
per slice). Calls of the implementations are interleaved and medians taken, as
other jobs may share the CPU. Peak resident memory is measured per configuration
in a fresh subprocess (build, encode one slice, decode one prompt).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
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

from napari_hq_sam.engine.encoder import encode_slices  # noqa: E402
from napari_hq_sam.model.fast import native_precisions  # noqa: E402

HERE = Path(__file__).resolve().parent


def bench_model(model_type, checkpoint, precisions, rounds):
    """Encoder and decoder timings, fidelity and reduced-precision mask IoU of one backbone."""
    image, boxes = nuclei2d(8)
    official = official_predictor(model_type, checkpoint)
    ours = {p: our_predictor(model_type, checkpoint, precision=p) for p in precisions}
    fns = {"official": lambda: official.set_image(image)}
    fns.update({p: (lambda pred=pred: pred.set_image(image)) for p, pred in ours.items()})
    encoder = interleaved(fns, rounds)
    ref = box_logits(official, boxes)
    logits = {p: box_logits(pred, boxes) for p, pred in ours.items()}
    result = {"encoder": encoder, "iou": {}}
    result["rel_diff"] = float(np.abs(logits["fp32"] - ref).max() / np.abs(ref).max())
    result["agreement"] = float(((logits["fp32"] > 0) == (ref > 0)).mean())
    for p in precisions[1:]:
        ious = mask_ious(logits[p], logits["fp32"])
        result["iou"][p] = (float(ious.mean()), float(ious.min()))

    def decode(pred):
        return lambda: [pred.predict(box=b, multimask_output=False) for b in boxes[:4]]

    per_call = interleaved({"official": decode(official), "fp32": decode(ours["fp32"])},
                           max(rounds, 3))
    result["decoder"] = {k: v / 4 for k, v in per_call.items()}
    return result


def bench_stack(model_type, checkpoint, n_slices, chunk=8):
    """End-to-end seconds for a stack: encode every slice, decode one box per slice.

    The implementations alternate every ``chunk`` slices (official, ours, official,
    ...) and their times are summed, so a slow spell of a shared machine hits both.
    """
    slices, boxes = nuclei_stack(n_slices)
    official = official_predictor(model_type, checkpoint)
    ours = our_predictor(model_type, checkpoint)

    def run_official(part):
        for image, box in zip(slices[part], boxes[part]):
            official.set_image(image)
            official.predict(box=box, multimask_output=False)

    def run_ours(part):
        for emb, box in zip(encode_slices(ours.model, slices[part]), boxes[part]):
            ours.set_image_embedding(emb)
            ours.predict(box=box, multimask_output=False)

    official.set_image(slices[0])  # warm both up on one slice
    ours.set_image(slices[0])
    total = {"official": 0.0, "fp32": 0.0}
    for start in range(0, n_slices, chunk):
        part = slice(start, start + chunk)
        total["official"] += timed(lambda part=part: run_official(part))
        total["fp32"] += timed(lambda part=part: run_ours(part))
    return total


def peak_rss_child(model_type, impl, precision, checkpoint):
    """(In a subprocess) build, encode one slice, decode one prompt; print peak RSS in MB."""
    image, boxes = nuclei2d(1)
    if impl == "official":
        pred = official_predictor(model_type, checkpoint)
    else:
        pred = our_predictor(model_type, checkpoint, precision=precision)
    pred.set_image(image)
    pred.predict(box=boxes[0], multimask_output=False)
    # VmHWM, not ru_maxrss: the latter keeps the parent's peak across fork + exec.
    status = Path("/proc/self/status").read_text()
    hwm_kb = int(next(ln for ln in status.splitlines() if ln.startswith("VmHWM")).split()[1])
    print(json.dumps({"peak_mb": hwm_kb / 1024}))


def peak_rss(model_type, impl, precision, checkpoint) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--child-mem", model_type, impl, precision, str(checkpoint)],
        check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


def profile_vit_b(checkpoint, precision, rows=8) -> tuple[str, str]:
    """Top operators of our vit_b encoder (one slice) and decoder (4 box prompts)."""
    image, boxes = nuclei2d(4)
    pred = our_predictor("vit_b", checkpoint, precision=precision)
    pred.set_image(image)
    pred.predict(box=boxes[0], multimask_output=False)

    def top(fn) -> str:
        with torch.profiler.profile() as prof:
            fn()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
        return "\n".join(line[:54] + line[54:120] for line in table.splitlines())

    return (top(lambda: pred.set_image(image)),
            top(lambda: [pred.predict(box=b, multimask_output=False) for b in boxes]))


def ratio(official, ours) -> str:
    return f"{official / ours:.1f}x"


def report(results, stack, memory, args, started, load_before) -> str:
    precisions = args.precisions
    header = ["measure", "official"]
    for p in precisions:
        header += [f"ours {p}", "ratio"]
    rows = []
    for mt, r in results.items():
        enc = r["encoder"]
        row = [f"{mt} encoder per slice", fmt_s(enc["official"])]
        for p in precisions:
            row += [fmt_s(enc[p]), ratio(enc["official"], enc[p])]
        rows.append(row)
    for mt, r in results.items():
        dec = r["decoder"]
        rows.append([f"{mt} decoder per prompt (cached slice)", fmt_s(dec["official"]),
                     fmt_s(dec["fp32"]), ratio(dec["official"], dec["fp32"])]
                    + [""] * (2 * len(precisions) - 2))
    for mt, s in stack.items():
        rows.append([f"{mt} {args.stack_slices}-slice stack end to end", fmt_s(s["official"]),
                     fmt_s(s["fp32"]), ratio(s["official"], s["fp32"])]
                    + [""] * (2 * len(precisions) - 2))
    for mt, m in memory.items():
        row = [f"{mt} peak RSS", f"{m['official']:.0f} MB"]
        for p in precisions:
            row += [f"{m[p]:.0f} MB", f"{m[p] / m['official']:.2f}x"] if p in m else ["", ""]
        rows.append(row)
    lines = [markdown_table(header, rows), ""]
    for mt, r in results.items():
        lines.append(f"- {mt} fp32 vs official: worst relative logit difference "
                     f"{r['rel_diff']:.1e}, thresholded masks agree on "
                     f"{100 * r['agreement']:.4f} % of pixels (8 nuclei box prompts).")
        for p, (mean, low) in r["iou"].items():
            lines.append(f"- {mt} {p} vs fp32: mask IoU mean {mean:.4f}, min {low:.4f} "
                         "(8 nuclei boxes on the real nuclei2d image, random weights).")
    caps = " ".join(f for f in ("avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")
                    if f in Path("/proc/cpuinfo").read_text())
    lines += [
        "",
        f"Machine: {platform.processor() or platform.machine()}, {_cpu_name()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"CPU features: {caps or 'none of avx512_bf16/avx512_fp16/amx'}.",
        f"Load average before/after: {load_before} / {os.getloadavg()[0]:.1f}; run took "
        f"{(time.time() - started) / 60:.1f} min. Measured on a shared 2-core machine while "
        "other jobs ran: absolute times are noisy, ratios come from interleaved calls "
        "(medians).",
    ]
    return "\n".join(lines)


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vit_tiny,vit_b")
    parser.add_argument("--precisions", default="auto",
                        help="comma-separated, fp32 first; 'auto': fp32 and the reduced "
                             "precisions this CPU runs natively (emulated fp16 can be 40x "
                             "slower than fp32)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stack-slices", type=int, default=32)
    parser.add_argument("--stack-models", default="vit_tiny")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--quick", action="store_true", help="vit_tiny, 1 round, 4 slices")
    parser.add_argument("--out", default=str(HERE / "BENCHMARKS.md"))
    parser.add_argument("--child-mem", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_mem:
        return peak_rss_child(*args.child_mem)
    if args.quick:
        args.models, args.rounds, args.stack_slices = "vit_tiny", 1, 4
        args.no_profile = True
    args.precisions = (native_precisions() if args.precisions == "auto"
                       else args.precisions.split(","))
    assert args.precisions[0] == "fp32", "fp32 comes first (the reference of the others)"
    models = args.models.split(",")
    started, load_before = time.time(), f"{os.getloadavg()[0]:.1f}"
    with tempfile.TemporaryDirectory() as tmp:
        ckpts = write_checkpoints(Path(tmp), models)
        results, stack, memory = {}, {}, {}
        for mt in models:
            print(f"[{mt}] encoder and decoder ...", flush=True)
            results[mt] = bench_model(mt, ckpts[mt], args.precisions, args.rounds)
        for mt in [m for m in args.stack_models.split(",") if m in models]:
            print(f"[{mt}] {args.stack_slices}-slice stack ...", flush=True)
            stack[mt] = bench_stack(mt, ckpts[mt], args.stack_slices)
        if not args.no_memory:
            for mt in models:
                print(f"[{mt}] peak memory ...", flush=True)
                memory[mt] = {"official": peak_rss(mt, "official", "fp32", ckpts[mt])}
                for p in args.precisions:
                    memory[mt][p] = peak_rss(mt, "ours", p, ckpts[mt])
        profiles = []
        if not args.no_profile and "vit_b" in models:
            print("[vit_b] profile ...", flush=True)
            for p in args.precisions[:2]:
                encoder, decoder = profile_vit_b(ckpts["vit_b"], p)
                profiles.append((f"vit_b {p} encoder, one slice", encoder))
            profiles.append(("vit_b decoder (fp32), 4 box prompts", decoder))
    text = report(results, stack, memory, args, started, load_before)
    print(text)
    for title, table in profiles:
        text += f"\n\nTop operators, {title} (torch.profiler):\n\n```\n{table}\n```"
    if not args.quick:
        Path(args.out).write_text(HEADER + text + "\n")
        print(f"wrote {args.out}")


HEADER = """# CPU benchmark: napari-hq-sam vs the official HQ-SAM package

Written by `python benchmarks/cpu_benchmark.py` (same random official-format
checkpoint for both; times are medians of interleaved calls; ratio = official /
ours, higher is better; for memory, ours / official, lower is better).

"""

if __name__ == "__main__":
    main()
