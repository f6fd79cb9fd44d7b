"""``hqsam info``: versions, devices, cache folder and which checkpoints are present."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("info", help="show devices, cache folder and checkpoints")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from .. import __version__
    from ..device import available_devices, pick_device
    from ..weights import REGISTRY, cache_dir, cached_checkpoint, checkpoint_url

    print(f"napari-hq-sam {__version__}, torch {torch.__version__}")
    print(f"devices: {', '.join(available_devices())} (default: {pick_device(None)})")
    print(f"cache folder: {cache_dir()}")
    for model_type, entry in REGISTRY.items():
        path = cached_checkpoint(model_type)
        state = f"present  {path}" if path else f"missing  (hqsam download {model_type})"
        print(f"  {model_type:9s} {entry.filename:22s} {state}")
    print(f"download from: {checkpoint_url('vit_tiny').rsplit('/resolve/', 1)[0]}")
    return 0
