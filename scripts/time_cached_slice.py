"""Time what a prompt change costs on an already embedded slice (the widget's live path).

No Qt: this runs the worker-thread part of the widget's live preview on the
``nuclei2d`` sample, i.e. the slice through the contrast limits, the cache lookup
and the HQ decoder (prompt encoder, two-way transformer, HQ mask, upsampling),
with official-format vit_tiny weights (random unless ``--checkpoint``)::

    python scripts/time_cached_slice.py --device cuda
    python scripts/time_cached_slice.py --device cpu --repeats 10

The widget adds its 150 ms debounce and the preview layer update to this.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main(argv=None) -> None:
    """Embed the sample once, then time ``--repeats`` decodes of fresh one-click prompts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--checkpoint")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)

    import tifffile
    import torch

    from napari_hq_sam.engine.cache import EmbeddingCache, model_signature
    from napari_hq_sam.engine.image import to_model_image
    from napari_hq_sam.engine.prompts import ObjectPrompt
    from napari_hq_sam.engine.segmenter import SliceSegmenter
    from napari_hq_sam.loading import load_model
    from napari_hq_sam.testing import write_random_checkpoint

    checkpoint = args.checkpoint or write_random_checkpoint(
        Path(tempfile.mkdtemp()) / "sam_hq_vit_tiny.pth", "vit_tiny", seed=1)
    model = load_model("vit_tiny", checkpoint, device=args.device, progress=False)
    device = next(model.parameters()).device
    image = tifffile.imread(ROOT / "src/napari_hq_sam/_sample_data/nuclei2d_image.tif")
    limits = (float(image.min()), float(image.max()))
    segmenter = SliceSegmenter(model, cache=EmbeddingCache(model_signature(model, checkpoint)))

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    start = time.perf_counter()
    segmenter.set_image(to_model_image(image, limits))
    sync()
    print(f"device {device}: embedding {time.perf_counter() - start:.3f} s (first, cold)")
    rng = np.random.default_rng(0)
    times = []
    for i in range(args.repeats + 3):
        x, y = rng.uniform(20, 490, size=2)
        sync()
        start = time.perf_counter()
        result = segmenter.segment(to_model_image(image, limits),
                                   [ObjectPrompt(points=[[x, y]], labels=[1])])
        sync()
        if i >= 3:  # warm-up excluded
            times.append(time.perf_counter() - start)
    assert segmenter.computed == 1, "the slice should have been embedded once"
    print(f"device {device}: cached-slice prompt -> mask median "
          f"{statistics.median(times) * 1000:.1f} ms (min {min(times) * 1000:.1f}, "
          f"max {max(times) * 1000:.1f}) over {len(times)} prompts; mask "
          f"{int(result.masks[0].sum())} px, torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
