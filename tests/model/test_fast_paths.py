"""Every fast path gives the official logits; batching equals one-by-one encoding.

Fast paths: fused SDPA attention of SAM's ViT (vit_b), folded BatchNorm + cached
attention bias + SDPA of TinyViT (vit_tiny), cast bf16/fp16 encoder copies, and
batched encoding with out-of-memory halving. Weights are random (perturbed)
official-format checkpoints; images are the real nuclei sample.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from nuclei_utils import grey_to_rgb, largest_boxes

from napari_hq_sam import HQSamPredictor, build_hq_sam
from napari_hq_sam.engine.encoder import auto_batch_size, encode_slices
from napari_hq_sam.model.checkpoint import read_state_dict
from napari_hq_sam.model.fast import PRECISIONS, best_precision
from napari_hq_sam.model.fast_vit import FastAttention, FastBlock

segment_anything_hq = pytest.importorskip("segment_anything_hq")

MAX_REL_DIFF = 1e-4
MIN_MASK_AGREEMENT = 0.9999
MIN_LOWP_IOU = 0.99


def _logits(predictor, boxes, hq_token_only=False) -> np.ndarray:
    out = [predictor.predict(box=b, multimask_output=False, return_logits=True,
                             hq_token_only=hq_token_only)[0] for b in boxes]
    return np.stack(out)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture(scope="module")
def image_and_boxes(nuclei2d, nuclei2d_labels):
    return grey_to_rgb(nuclei2d), largest_boxes(nuclei2d_labels, 4)


@pytest.fixture(scope="module")
def official_tiny_logits(tiny_checkpoint, image_and_boxes):
    image, boxes = image_and_boxes
    ref = segment_anything_hq.SamPredictor(
        segment_anything_hq.sam_model_registry["vit_tiny"](checkpoint=str(tiny_checkpoint)).eval())
    ref.set_image(image)
    return _logits(ref, boxes), _logits(ref, boxes, hq_token_only=True)


def _check_against(ours_logits: np.ndarray, ref_logits: np.ndarray) -> None:
    rel = np.abs(ours_logits - ref_logits).max() / np.abs(ref_logits).max()
    agree = ((ours_logits > 0) == (ref_logits > 0)).mean()
    assert rel <= MAX_REL_DIFF, f"relative logit difference {rel:.2e}"
    assert agree >= MIN_MASK_AGREEMENT, f"mask agreement {agree:.6f}"


def test_tiny_fused_matches_official(tiny_model, image_and_boxes, official_tiny_logits):
    image, boxes = image_and_boxes
    assert all(m.fused for m in tiny_model.image_encoder.modules() if hasattr(m, "fused"))
    ours = HQSamPredictor(tiny_model)
    ours.set_image(image)
    _check_against(_logits(ours, boxes), official_tiny_logits[0])
    _check_against(_logits(ours, boxes, hq_token_only=True), official_tiny_logits[1])


def test_fused_state_dict_is_the_file(tiny_model, tiny_checkpoint, official_tiny_logits):
    """Folding is a cache: the state dict keeps the official keys and values."""
    state, file_state = tiny_model.state_dict(), read_state_dict(tiny_checkpoint, "vit_tiny")
    assert state.keys() == file_state.keys()
    assert all(torch.equal(state[k], file_state[k]) for k in state)


def test_tiny_fold_follows_weight_changes(tiny_checkpoint):
    """Changing a BatchNorm in place (e.g. loading other weights) refreshes the fold."""
    fast = build_hq_sam("vit_tiny", tiny_checkpoint)
    plain = build_hq_sam("vit_tiny", tiny_checkpoint, fast=False)
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fast.image_encoder(x)  # fills the caches
        for model in (fast, plain):
            model.image_encoder.patch_embed.seq[0].bn.running_var.mul_(2.0)
            model.image_encoder.layers[1].blocks[0].attn.attention_biases.add_(0.5)
        a, b = fast.image_encoder(x)[0], plain.image_encoder(x)[0]
    assert (a - b).abs().max() / b.abs().max() < 1e-5


def test_tiny_training_mode_uses_batchnorm(tiny_checkpoint):
    """Outside inference the plain modules run, so gradients reach the BatchNorm."""
    model = build_hq_sam("vit_tiny", tiny_checkpoint)
    conv = model.image_encoder.patch_embed.seq[0]
    conv.bn.weight.requires_grad_(True)
    conv(torch.randn(1, 3, 32, 32)).sum().backward()
    assert conv.bn.weight.grad is not None


def test_vit_b_fast_attention_matches_official(vit_b_checkpoint, image_and_boxes):
    image, boxes = image_and_boxes
    boxes = boxes[:3]
    model = build_hq_sam("vit_b", vit_b_checkpoint)
    assert all(type(b) is FastBlock and type(b.attn) is FastAttention
               for b in model.image_encoder.blocks)
    ours = HQSamPredictor(model)
    ours.set_image(image)
    ours_logits = _logits(ours, boxes)
    del ours, model
    ref = segment_anything_hq.SamPredictor(
        segment_anything_hq.sam_model_registry["vit_b"](checkpoint=str(vit_b_checkpoint)).eval())
    ref.set_image(image)
    _check_against(ours_logits, _logits(ref, boxes))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_mask_agreement(tiny_model, image_and_boxes, official_tiny_logits,
                                          precision):
    image, boxes = image_and_boxes
    ours = HQSamPredictor(tiny_model)
    tiny_model.precision = precision
    try:
        ours.set_image(image)
    finally:
        tiny_model.precision = "fp32"
    assert ours.features.dtype == torch.float32  # the decoder stays in fp32
    masks, ref_masks = _logits(ours, boxes) > 0, official_tiny_logits[0] > 0
    ious = [_iou(a, b) for a, b in zip(masks, ref_masks)]
    assert np.mean(ious) >= MIN_LOWP_IOU and min(ious) >= MIN_LOWP_IOU - 0.02, ious
    # the fp32 weights are untouched and still give the exact result
    ours.set_image(image)
    _check_against(_logits(ours, boxes), official_tiny_logits[0])


def test_unknown_precision_is_refused(tiny_model):
    with pytest.raises(ValueError, match="bf16"):
        tiny_model.precision = "int8"
    assert tiny_model.precision == "fp32"
    assert best_precision("cpu") in ("fp32", "bf16", "fp16")


def test_auto_precision_resolves_to_the_measured_best(tiny_model):
    from napari_hq_sam.model.fast import _best_cpu_precision, _gemm_seconds

    try:
        tiny_model.precision = "auto"
        assert tiny_model.precision == best_precision("cpu")
    finally:
        tiny_model.precision = "fp32"
    choice = _best_cpu_precision()
    if choice != "fp32":  # measured >= 1.2x faster than fp32; margin for a shared CPU
        assert _gemm_seconds(torch.float32) > 0.8 * _gemm_seconds(PRECISIONS[choice])


@pytest.fixture(scope="module")
def slices(nuclei2d):
    rgb = grey_to_rgb(nuclei2d)
    return [rgb[:200, :260], rgb[100:300, 50:310], rgb[256:, 256:]]


@pytest.fixture(scope="module")
def one_by_one(tiny_model, slices):
    predictor = HQSamPredictor(tiny_model)
    out = []
    for image in slices:
        predictor.set_image(image)
        out.append(predictor.get_image_embedding())
    return out


def _same(got, expected) -> None:
    for emb, ref in zip(got, expected, strict=True):
        assert emb.original_size == ref.original_size and emb.input_size == ref.input_size
        assert emb.embeddings.shape == (1, 256, 64, 64)
        assert emb.hq_features.shape == (1, 32, 256, 256)
        for a, b in ((emb.embeddings, ref.embeddings), (emb.hq_features, ref.hq_features)):
            assert (a - b).abs().max() <= 1e-4 * b.abs().max()


def test_encode_slices_equals_one_by_one(tiny_model, slices, one_by_one):
    seen = []
    batched = encode_slices(tiny_model, slices, batch_size=2,
                            progress=lambda done, total: seen.append((done, total)))
    assert seen == [(2, 3), (3, 3)]
    _same(batched, one_by_one)


def test_encode_slices_halves_batch_on_out_of_memory(tiny_model, slices, one_by_one,
                                                     monkeypatch):
    real_encode, sizes = tiny_model.encode, []

    def small_gpu_encode(batch, **options):
        sizes.append(len(batch))
        if len(batch) > 2:
            raise torch.OutOfMemoryError("fake: CUDA out of memory")
        return real_encode(batch, **options)

    monkeypatch.setattr(tiny_model, "encode", small_gpu_encode)
    got = encode_slices(tiny_model, slices, batch_size=8)
    assert sizes == [3, 3, 2, 1]  # 3 slices at sizes 8 and 4: OOM; then 2 + 1
    _same(got, one_by_one)

    def no_memory(batch, **options):
        raise torch.OutOfMemoryError("fake: nothing fits")

    monkeypatch.setattr(tiny_model, "encode", no_memory)
    with pytest.raises(torch.OutOfMemoryError):
        encode_slices(tiny_model, slices[:1], batch_size=4)


def test_auto_batch_size(tiny_model):
    assert auto_batch_size(tiny_model) == 1  # CPU
    gib = 2**30
    cuda = torch.device("cuda")
    assert auto_batch_size(tiny_model, cuda, free_bytes=1 * gib) == 1
    big = auto_batch_size(tiny_model, cuda, free_bytes=8 * gib)
    assert 4 <= big <= 32
    tiny_model.precision = "bf16"
    try:
        assert auto_batch_size(tiny_model, cuda, free_bytes=8 * gib) >= big
    finally:
        tiny_model.precision = "fp32"
    assert auto_batch_size(tiny_model, cuda, free_bytes=80 * gib) == 32


def test_folded_decoder_matches_plain_decoder(tiny_model):
    """The folded HQ head gives the plain decoder's logits, for several prompts at once."""
    from segment_anything.modeling.transformer import Attention

    from napari_hq_sam.model.fast_decoder import FastMaskDecoderHQ
    from napari_hq_sam.model.hq_decoder import MaskDecoderHQ

    decoder = tiny_model.mask_decoder
    assert type(decoder) is FastMaskDecoderHQ
    gen = torch.Generator().manual_seed(0)
    args = (torch.randn(1, 256, 64, 64, generator=gen),
            tiny_model.prompt_encoder.get_dense_pe(),
            torch.randn(3, 2, 256, generator=gen), torch.randn(3, 256, 64, 64, generator=gen),
            torch.randn(1, 32, 256, 256, generator=gen))
    plain_decoder = copy.deepcopy(decoder)
    plain_decoder.__class__ = MaskDecoderHQ  # same weights, the plain heads
    for module in plain_decoder.transformer.modules():
        if isinstance(module, Attention):
            module.__class__ = Attention
    with torch.no_grad():
        fast = decoder.predict_all_masks(*args)
        plain = plain_decoder.predict_all_masks(*args)
        upscaled = torch.randn(3, 32, 256, 256, generator=gen)
        hyper = torch.randn(3, 32, generator=gen)
        fast_head = decoder.hq_logits(upscaled, hyper, args[-1])
        plain_head = MaskDecoderHQ.hq_logits(decoder, upscaled, hyper, args[-1])
    for a, b in zip((*fast, fast_head), (*plain, plain_head), strict=True):
        assert a.shape == b.shape
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()
    assert fast_head.shape == (3, 1, 256, 256)


@pytest.mark.parametrize("rows", [1, 5, 16, 64])
def test_logits_in_strips_equal_whole_map(tiny_model, rows):
    """Bands of token rows give the whole map's HQ + SAM logits (band edges included)."""
    decoder = tiny_model.mask_decoder
    gen = torch.Generator().manual_seed(rows)
    src = torch.randn(1, 64 * 64, 256, generator=gen)
    hq_hyper, sam_hyper = torch.randn(1, 32, generator=gen), torch.randn(1, 1, 32, generator=gen)
    features = torch.randn(1, 32, 256, 256, generator=gen)
    with torch.no_grad():
        up = decoder.upscale(src, (64, 64))
        whole = decoder.hq_logits(up, hq_hyper, features) + decoder.sam_logits(up, sam_hyper)
        hq_whole = decoder.hq_logits(up, hq_hyper, features)
        strips = decoder.logits_in_strips(src, (64, 64), hq_hyper, sam_hyper, features, rows)
        hq_strips = decoder.logits_in_strips(src, (64, 64), hq_hyper, None, features, rows)
    assert strips.shape == (1, 1, 256, 256)
    scale = whole.abs().max()
    assert scale > 1  # not a map of zeros
    assert (strips - whole).abs().max() <= 1e-5 * scale
    assert (hq_strips - hq_whole).abs().max() <= 1e-5 * hq_whole.abs().max()
    # the rows next to each band edge are where a missing halo would show
    edges = [4 * r + d for r in range(rows, 64, rows) for d in (-2, -1, 0, 1)]
    if edges:
        assert (strips[0, 0, edges] - whole[0, 0, edges]).abs().max() <= 1e-5 * scale


@pytest.mark.parametrize("tokens", [8, 15, 16, 40])
def test_cross_attention_without_image_projections(tokens):
    """Token->image and image->token attention give Meta's values, for few and many
    tokens (from 16 tokens on, 8 heads x T reach the internal width: Meta's path)."""
    from segment_anything.modeling.transformer import Attention

    from napari_hq_sam.model.fast_two_way import (
        ImageToTokenAttention,
        TokenToImageAttention,
        _pays,
    )

    torch.manual_seed(tokens)
    plain = Attention(256, 8, downsample_rate=2).eval()
    with torch.no_grad():
        for p in plain.parameters():  # non-zero biases: they must be handled exactly
            p.add_(0.1 * torch.randn_like(p))
    token_side = copy.deepcopy(plain)
    token_side.__class__ = TokenToImageAttention
    image_side = copy.deepcopy(plain)
    image_side.__class__ = ImageToTokenAttention
    with torch.no_grad():
        assert _pays(token_side, tokens) == _pays(image_side, tokens) == (tokens < 16)
    tok, tok_pe = torch.randn(2, tokens, 256), torch.randn(2, tokens, 256)
    img, img_pe = torch.randn(2, 4096, 256), torch.randn(2, 4096, 256)
    with torch.no_grad():
        keys, queries = img + img_pe, tok + tok_pe
        pairs = [(token_side(tok, keys, img), plain(tok, keys, img)),
                 (image_side(keys, queries, tok), plain(keys, queries, tok))]
    for fast, ref in pairs:
        assert fast.shape == ref.shape
        assert (fast - ref).abs().max() <= 1e-5 * ref.abs().max()
        assert ref.abs().max() > 0.1


@pytest.mark.parametrize("folded", [False, True], ids=["cpu-path", "folded-bias-path"])
@pytest.mark.parametrize(("window", "grid"), [(14, 20), (0, 40), (0, 20)])
def test_fast_vit_block_matches_meta_block(window, grid, folded, monkeypatch):
    """Windowed blocks with padding (14 on a 20 x 20 grid, augmented q/k), a global grid
    of 40 (row chunks of uneven size) and a small global grid (augmented q/k), batch 2.

    ``folded`` runs the path GPUs take in bf16/fp16 (bias folded into q and k, one
    ``scaled_dot_product_attention`` call) here in fp32.
    """
    from segment_anything.modeling.image_encoder import Block

    from napari_hq_sam.model import fast_vit

    if folded:
        monkeypatch.setattr(fast_vit, "FOLDED_BIAS_DEVICES", ("cpu",))
        monkeypatch.setattr(fast_vit, "FOLDED_BIAS_DTYPES", (torch.float32,))
    torch.manual_seed(window + grid)
    size = window or grid
    plain = Block(dim=256, num_heads=4, use_rel_pos=True, window_size=window,
                  input_size=(size, size)).eval()
    with torch.no_grad():
        plain.attn.rel_pos_h.normal_(std=0.5)  # zero at init: make the bias matter
        plain.attn.rel_pos_w.normal_(std=0.5)
    fast = copy.deepcopy(plain)
    fast.__class__, fast.attn.__class__ = FastBlock, FastAttention
    x = torch.randn(2, grid, grid, 256)
    with torch.no_grad():
        ref, out = plain(x), fast(x)
        # the bias changes the result: the fast path must not just skip it
        plain.attn.use_rel_pos = False
        assert (plain(x) - ref).abs().max() > 1e-2
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_mbconv_strips_match_plain_block(monkeypatch):
    """MBConv's CPU strip path (halo rows, uneven last strip, batch 2) equals the plain
    convolution + BatchNorm modules."""
    from napari_hq_sam.model import tiny_vit

    torch.manual_seed(0)
    block = tiny_vit.MBConv(16, 4.0).eval()
    with torch.no_grad():
        for module in block.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(std=0.3)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.normal_(1.0, 0.2)
                module.bias.normal_(std=0.2)
    x = torch.randn(2, 16, 37, 29).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = block(x)  # not fused: plain modules
        for module in block.modules():
            if isinstance(module, tiny_vit.Conv2dBN):
                module.fused = True
        strips = []
        original = tiny_vit.MBConv._forward_in_strips
        monkeypatch.setattr(tiny_vit, "STRIP_ELEMENTS", 2 * 64 * 29 * 7)  # 5 rows per strip
        monkeypatch.setattr(tiny_vit.MBConv, "_forward_in_strips",
                            lambda self, x, w: strips.append(1) or original(self, x, w))
        out = block(x)
    assert strips, "the strip path did not run"
    assert ref.abs().max() > 0.5
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()
