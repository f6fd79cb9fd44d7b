"""GPU-only fast paths: CUDA-graph replay of single-slice encoding, folded-bias attention.

Marked ``gpu`` and skipped without a CUDA GPU (CI has none); run on a GPU machine with
``pytest -m gpu``. The CPU half of the folded-bias path is
checked against Meta's blocks in ``test_fast_paths.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nuclei_utils import grey_to_rgb, largest_boxes

from napari_hq_sam import HQSamPredictor, build_hq_sam
from napari_hq_sam.engine.encoder import prepare_batch
from napari_hq_sam.model.cuda_graph import MAX_GRAPHS

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def gpu_tiny(tiny_checkpoint):
    return build_hq_sam("vit_tiny", tiny_checkpoint, device="cuda")


@pytest.fixture(scope="module")
def inputs(gpu_tiny, nuclei2d):
    """Two different preprocessed real slices, (1, 3, 1024, 1024) each, on the GPU."""
    from segment_anything.utils.transforms import ResizeLongestSide

    rgb = grey_to_rgb(nuclei2d)
    resize = ResizeLongestSide(1024)
    halves = [np.ascontiguousarray(rgb[:, :256]), np.ascontiguousarray(rgb[:, 256:])]
    return [prepare_batch(gpu_tiny, [resize.apply_image(h)], "cuda")[0] for h in halves]


def _eager(model, x):
    model.cuda_graphs = False
    try:
        return model.encode(x)
    finally:
        model.cuda_graphs = True


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_graph_replay_equals_eager(gpu_tiny, inputs, precision):
    gpu_tiny.precision = precision
    try:
        for x in inputs:  # the second input proves the replay reads the new input
            eager = _eager(gpu_tiny, x)
            graphed = gpu_tiny.encode(x)
            assert all(torch.equal(a, b) for a, b in zip(graphed, eager))
        assert not torch.equal(gpu_tiny.encode(inputs[0])[0], gpu_tiny.encode(inputs[1])[0])
        assert 1 <= len(gpu_tiny._cuda_graph_cache) <= MAX_GRAPHS
    finally:
        gpu_tiny.precision = "fp32"


def test_graph_follows_weight_changes(gpu_tiny, inputs):
    before = gpu_tiny.encode(inputs[0])
    conv = gpu_tiny.mask_decoder.compress_vit_feat[0]
    saved = conv.weight.detach().clone()
    try:
        with torch.no_grad():
            conv.weight.mul_(1.5)  # in place: same tensor, new version
        after = gpu_tiny.encode(inputs[0])
        assert not torch.equal(after[1], before[1])
        assert torch.equal(after[1], _eager(gpu_tiny, inputs[0])[1])
    finally:
        with torch.no_grad():
            conv.weight.copy_(saved)
    assert torch.equal(gpu_tiny.encode(inputs[0])[1], before[1])


def test_batches_and_training_run_eagerly(gpu_tiny, inputs):
    gpu_tiny.__dict__.pop("_cuda_graph_cache", None)
    gpu_tiny.encode(torch.cat(inputs))
    assert not gpu_tiny.__dict__.get("_cuda_graph_cache")
    gpu_tiny.mask_decoder.train()
    try:
        gpu_tiny.encode(inputs[0])
        assert not gpu_tiny.__dict__.get("_cuda_graph_cache")
    finally:
        gpu_tiny.mask_decoder.eval()


def test_gpu_fp32_logits_match_cpu(tiny_checkpoint, nuclei2d, nuclei2d_labels):
    """fp32 on CUDA runs convolutions without TF32: the same logits as on the CPU."""
    image, boxes = grey_to_rgb(nuclei2d), largest_boxes(nuclei2d_labels, 6)
    logits = []
    for device in ("cpu", "cuda"):
        predictor = HQSamPredictor(build_hq_sam("vit_tiny", tiny_checkpoint, device=device))
        predictor.set_image(image)
        logits.append(np.stack([predictor.predict(box=b, multimask_output=False,
                                                  return_logits=True)[0][0] for b in boxes]))
    cpu, gpu = logits
    assert np.abs(cpu).max() > 1.0
    assert np.abs(gpu - cpu).max() <= 1e-4 * np.abs(cpu).max()
    assert torch.backends.cudnn.allow_tf32  # the global setting is restored


def test_vit_b_bf16_folded_bias_masks_agree_with_fp32(vit_b_checkpoint, nuclei2d,
                                                      nuclei2d_labels):
    """bf16 runs the folded-bias flash path on GPUs; its masks match fp32's."""
    predictor = HQSamPredictor(build_hq_sam("vit_b", vit_b_checkpoint, device="cuda"))
    image, boxes = grey_to_rgb(nuclei2d), largest_boxes(nuclei2d_labels, 6)
    masks = {}
    for precision in ("fp32", "bf16"):
        predictor.model.precision = precision
        predictor.set_image(image)
        masks[precision] = np.stack([predictor.predict(box=b, multimask_output=False)[0][0]
                                     for b in boxes])
    inter = (masks["fp32"] & masks["bf16"]).sum(axis=(1, 2))
    union = (masks["fp32"] | masks["bf16"]).sum(axis=(1, 2))
    assert union.min() > 0
    ious = inter / union
    assert ious.mean() >= 0.99 and ious.min() >= 0.97, ious
