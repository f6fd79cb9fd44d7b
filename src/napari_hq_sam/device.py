"""Choosing the torch device: CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import torch

from .errors import InputError


def pick_device(requested: str | torch.device | None = None) -> torch.device:
    """Return the device to run on.

    Parameters
    ----------
    requested : str or torch.device, optional
        ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"cpu"`` or ``"auto"``/None for the
        best available one (CUDA, then MPS, then CPU).

    Raises
    ------
    ValueError
        The requested device does not exist on this machine; the message says
        which devices do.
    """
    if requested is None or str(requested) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise InputError(f"Unknown device {requested!r}: use auto, cpu, cuda or mps.") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"Device {requested!r} was asked for but PyTorch sees no CUDA GPU here. "
                         f"Available: {', '.join(available_devices())}.")
    if device.type == "cuda" and device.index is not None \
            and device.index >= torch.cuda.device_count():
        raise InputError(f"Device {requested!r} does not exist: this machine has "
                         f"{torch.cuda.device_count()} CUDA GPU(s).")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"Device 'mps' was asked for but Apple MPS is not available here. "
                         f"Available: {', '.join(available_devices())}.")
    return device


def available_devices() -> list[str]:
    """Names of the devices usable here, best first, e.g. ``["cuda:0", "cpu"]``."""
    names = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        names.append("mps")
    return [*names, "cpu"]
