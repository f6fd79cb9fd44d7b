"""What the inference fast paths share: when they may run, in-place GELU, true fp32."""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def inference_only(module: nn.Module) -> bool:
    """True in eval mode without autograd: the fast paths run only then.

    Training and any call with gradients take the plain modules, so gradients,
    BatchNorm statistics and autograd's saved tensors behave as usual; in
    inference a module may also overwrite tensors it has just made.
    """
    return not (module.training or torch.is_grad_enabled())


def gelu_(act: nn.GELU, x: torch.Tensor) -> torch.Tensor:
    """``act(x)`` written into ``x`` (a tensor the caller has just made).

    On CPUs a new 4-67 MB output costs more in page faults than the GELU itself.
    """
    return torch.ops.aten.gelu_(x, approximate=act.approximate)


def true_fp32(device: torch.device) -> contextlib.AbstractContextManager:
    """Run fp32 convolutions on CUDA in full fp32, not TF32.

    PyTorch lets cuDNN run fp32 convolutions in TF32 (10-bit mantissa) by
    default, which moves HQ-SAM's GPU logits about 1e-3 (relative) away from the
    CPU's; in full fp32 they agree with the official CPU logits within a few
    1e-6. The other cuDNN settings are kept, and all are restored on exit.
    """
    if torch.device(device).type != "cuda":
        return contextlib.nullcontext()
    cudnn = torch.backends.cudnn
    return cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark,
                       benchmark_limit=cudnn.benchmark_limit,
                       deterministic=cudnn.deterministic, allow_tf32=False)
