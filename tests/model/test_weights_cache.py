"""Keys of weight-derived caches, and the fast paths' caches following weight changes."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from segment_anything.modeling.image_encoder import Attention, get_rel_pos
from torch import nn

from napari_hq_sam.model._weights_cache import DerivedCache, derived_cache, weights_key
from napari_hq_sam.model.fast import cast_copy
from napari_hq_sam.model.fast_vit import FastAttention
from napari_hq_sam.model.tiny_vit import Conv2dBN


@pytest.fixture
def linear():
    torch.manual_seed(0)
    return nn.Linear(4, 3).eval()


def test_key_is_stable_under_reads(linear):
    key = weights_key(linear)
    with torch.no_grad():
        linear(torch.randn(2, 4))
        linear.weight.sum(), linear.weight.clone(), linear.weight.to(torch.float32)
    linear.state_dict()
    assert weights_key(linear) == key
    assert weights_key(linear, torch.float16) == weights_key(linear, torch.float16)


def test_key_follows_in_place_edits(linear):
    key = weights_key(linear)
    with torch.no_grad():
        linear.bias.add_(1.0)
    assert weights_key(linear) != key
    key = weights_key(linear)
    linear.load_state_dict({"weight": torch.zeros(3, 4), "bias": torch.zeros(3)})
    assert weights_key(linear) != key


def test_key_follows_data_replacement(linear):
    key = weights_key(linear)
    version = linear.weight._version
    linear.weight.data = linear.weight.data.clone()  # keeps the Parameter and its version
    assert linear.weight._version == version
    assert weights_key(linear) != key


def test_key_follows_dtype_changes_and_new_parameters(linear):
    weight, key = linear.weight, weights_key(linear)
    linear.to(torch.float64)  # Module.to replaces .data of the same Parameter objects
    assert linear.weight is weight
    assert weights_key(linear) != key
    key = weights_key(linear)
    linear.weight = nn.Parameter(linear.weight.detach().clone())
    assert weights_key(linear) != key


def test_key_includes_extra_and_module_means_parameters_and_buffers():
    bn = nn.BatchNorm1d(3)
    tensors = [*bn.parameters(), *bn.buffers()]
    assert weights_key(bn, 7) == weights_key(tensors, 7)
    assert weights_key(bn, 7) != weights_key(bn, 8)
    key = weights_key(bn, 7)
    with torch.no_grad():
        bn.running_mean.fill_(2.0)  # a buffer counts as much as a parameter
    assert weights_key(bn, 7) != key


def test_derived_cache_recomputes_only_on_a_new_key(linear):
    calls = []

    def compute():
        calls.append(1)
        return linear.weight.detach() * 2

    cache = derived_cache(linear, "_doubled")
    assert derived_cache(linear, "_doubled") is cache
    first = cache.get(weights_key(linear), compute)
    assert cache.get(weights_key(linear), compute) is first and len(calls) == 1
    with torch.no_grad():
        linear.weight.mul_(3.0)
    second = cache.get(weights_key(linear), compute)
    assert len(calls) == 2 and torch.equal(second, linear.weight.detach() * 2)
    assert "_doubled" not in linear.state_dict()


def test_derived_cache_copies_and_pickles_start_empty(linear):
    derived_cache(linear, "_doubled").get(weights_key(linear), lambda: 5)
    for other in (copy.deepcopy(linear), pickle.loads(pickle.dumps(linear))):
        assert other._doubled.key is None and other._doubled.value is None
    assert linear._doubled.value == 5


def test_failed_compute_leaves_the_cache_empty():
    cache = DerivedCache()

    def fail():
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        cache.get(("k",), fail)
    assert cache.get(("k",), lambda: 1) == 1


# The fast paths' caches: each follows a ``.data`` replacement, which keeps the
# tensor's version (their keys before did not all see it).

@torch.no_grad()
def test_cast_copy_follows_data_replacement(linear):
    owner = nn.Module()
    low = cast_copy(owner, linear, torch.bfloat16)
    assert low.weight.dtype == torch.bfloat16 and cast_copy(owner, linear, torch.bfloat16) is low
    linear.weight.data = torch.ones(3, 4)
    low = cast_copy(owner, linear, torch.bfloat16)
    assert torch.equal(low.weight, torch.ones(3, 4, dtype=torch.bfloat16))
    assert cast_copy(owner, linear, torch.float16).weight.dtype == torch.float16


@torch.no_grad()
def test_folded_conv_follows_data_replacement():
    torch.manual_seed(0)
    conv = Conv2dBN(2, 3, kernel=3, pad=1).eval()
    conv.fused = True
    x = torch.randn(1, 2, 5, 5)
    conv(x)  # fills the cache
    conv.bn.running_var.data = torch.full((3,), 4.0)
    plain = conv.bn(conv.c(x))
    assert (conv(x) - plain).abs().max() < 1e-5


@torch.no_grad()
def test_rel_pos_tables_follow_data_replacement():
    torch.manual_seed(0)
    attn = Attention(16, num_heads=2, use_rel_pos=True, input_size=(4, 4)).eval()
    attn.__class__ = FastAttention
    attn._rel_pos(4, torch.float32)  # fills the cache
    attn.rel_pos_h.data = torch.randn_like(attn.rel_pos_h)
    rel_h, _ = attn._rel_pos(4, torch.float32)
    assert torch.equal(rel_h, get_rel_pos(4, 4, attn.rel_pos_h))
    assert attn._rel_pos(4, torch.float64)[0].dtype == torch.float64


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@torch.no_grad()
def test_key_and_cast_copy_follow_device_moves(linear):
    owner = nn.Module()
    key = weights_key(linear)
    assert cast_copy(owner, linear, torch.bfloat16).weight.device.type == "cpu"
    linear.to("cuda")
    assert weights_key(linear) != key
    assert cast_copy(owner, linear, torch.bfloat16).weight.device.type == "cuda"
