"""Inference fast paths of HQ-SAM's encoders and reduced-precision encoder copies.

Everything here keeps the model's parameters, state-dict keys and function:

- SAM's ViT (``vit_b/l/h``): fused attention, see :mod:`.fast_vit`.
- TinyViT (``vit_tiny``): BatchNorm folded into convolutions and cached attention
  biases at inference, see :meth:`.tiny_vit.TinyViT.fuse`.
- HQ decoder: the last HQ mask-feature convolution folded into the HQ token's
  hypernetwork output, see :mod:`.fast_decoder`.
- ``bf16`` / ``fp16``: the encoder runs under autocast on a copy of itself whose
  linear and convolution weights are pre-cast to that type (so autocast does not
  re-cast them on every call); normalisation layers and the residual stream stay
  in fp32, as autocast intends. The copy is built once and rebuilt when a weight
  of the encoder changes.
"""

from __future__ import annotations

import copy
import functools
import time

import torch
from torch import nn

from ..errors import InputError
from ._weights_cache import derived_cache, weights_key
from .fast_decoder import accelerate_decoder
from .fast_vit import accelerate_vit
from .tiny_vit import TinyViT

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str) -> torch.dtype:
    """dtype of a precision name, or a ValueError naming the choices."""
    if precision not in PRECISIONS:
        raise InputError(f"Unknown precision {precision!r}: choose one of "
                         f"{', '.join(PRECISIONS)}.")
    return PRECISIONS[precision]


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


# CPU flags that make a reduced precision's matrix products native, not emulated.
_NATIVE_FLAGS = {"bf16": ("amx_bf16", "avx512_bf16"), "fp16": ("amx_fp16", "avx512_fp16")}


def _gemm_seconds(dtype: torch.dtype, size: int = 384, repeats: int = 3) -> float:
    """Best wall time of a (size x 2size) @ (2size x 2size) product on the CPU."""
    a = torch.randn(size, 2 * size).to(dtype)
    b = torch.randn(2 * size, 2 * size).to(dtype)
    a @ b  # warm-up: oneDNN builds its kernel on the first call
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return best


def native_precisions() -> list[str]:
    """``fp32`` and the reduced precisions this CPU runs natively, not emulated."""
    flags = _cpu_flags()
    return ["fp32"] + [name for name, native in _NATIVE_FLAGS.items() if flags & set(native)]


@functools.lru_cache(maxsize=1)
def _best_cpu_precision() -> str:
    """The reduced precision whose timed products beat fp32 by 1.2x or more, else fp32."""
    best, best_time = "fp32", _gemm_seconds(torch.float32) / 1.2
    for name in native_precisions()[1:]:
        seconds = _gemm_seconds(PRECISIONS[name])
        if seconds < best_time:
            best, best_time = name, seconds
    return best


def best_precision(device: str | torch.device = "cpu") -> str:
    """Fastest reduced precision for the encoder on ``device``.

    ``bf16`` on CUDA GPUs that support it, else ``fp16``; ``fp16`` on Apple MPS.
    On CPUs the answer is timed once per process: matrix products of the
    precisions the CPU runs natively (flags ``avx512_bf16``/``amx_bf16``,
    ``avx512_fp16``/``amx_fp16``) are timed against fp32 and the fastest that wins
    by at least 1.2x is chosen, else ``fp32``. The flags alone do not decide it:
    a CPU may report a native precision that still runs slower than fp32.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "mps":
        return "fp16"
    return _best_cpu_precision()


def accelerate_encoder(encoder: nn.Module) -> nn.Module:
    """Switch an HQ-SAM image encoder to its inference fast path, in place."""
    if isinstance(encoder, TinyViT):
        return encoder.fuse()
    if hasattr(encoder, "blocks"):
        return accelerate_vit(encoder)
    return encoder


def accelerate(model: nn.Module) -> nn.Module:
    """Switch an :class:`~.hq_sam.HQSam`'s encoder and decoder to their fast paths, in place."""
    accelerate_encoder(model.image_encoder)
    accelerate_decoder(model.mask_decoder)
    return model


_CAST_TYPES = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)


def cast_copy(owner: nn.Module, encoder: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of ``encoder`` with linear/conv weights cast to ``dtype``, cached on ``owner``.

    Run it under ``torch.autocast(..., dtype=dtype)``.

    The copy is rebuilt when the encoder's parameters or buffers change (in
    place, by replacement or through ``.data``), move, change dtype, or when
    another ``dtype`` is asked for; copies and pickles of ``owner`` rebuild it.
    """
    def build() -> nn.Module:
        low = copy.deepcopy(encoder).eval()
        low.requires_grad_(False)
        for module in low.modules():
            if isinstance(module, _CAST_TYPES):
                module.to(dtype)
        return low

    return derived_cache(owner, "_cast_encoder").get(weights_key(encoder, dtype), build)
