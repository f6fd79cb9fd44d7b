"""``hqsam download MODEL``: fetch and verify an official checkpoint."""

from __future__ import annotations

from ._options import MODEL_CHOICES, add_quiet_option


def register(subparsers) -> None:
    p = subparsers.add_parser("download", help="download an official HQ-SAM checkpoint",
                              description="Download an official HQ-SAM checkpoint into the "
                              "cache folder (NAPARI_HQ_SAM_CACHE overrides; HF_ENDPOINT picks "
                              "a mirror) and verify its size and sha256.")
    p.add_argument("models", nargs="+", choices=MODEL_CHOICES, metavar="MODEL",
                   help=f"one or more of {', '.join(MODEL_CHOICES)}")
    add_quiet_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..weights import download_checkpoint

    for model_type in args.models:
        print(download_checkpoint(model_type, progress=not args.quiet))
    return 0
