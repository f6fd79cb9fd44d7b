"""Bookkeeping of the CUDA-graph cache, on the CPU: capture is replaced by a recorder.

What is checked on a GPU (replay equals eager) is in ``test_cuda_graphs.py``.
"""

from __future__ import annotations

import copy
import pickle
from types import SimpleNamespace

import pytest
import torch

from napari_hq_sam.model import cuda_graph


class RecordingCapture:
    """Stands in for ``_CapturedCall``: counts captures, calls ``fn`` on replay."""

    captures: list = []

    def __init__(self, fn, example):
        self.fn = fn
        RecordingCapture.captures.append(example.shape)

    def __call__(self, images):
        return self.fn(images)


@pytest.fixture
def model(monkeypatch):
    RecordingCapture.captures = []
    monkeypatch.setattr(cuda_graph, "_CapturedCall", RecordingCapture)
    torch.manual_seed(0)
    return torch.nn.Linear(4, 3).eval()


def _call(model, x, variant=("fp32",)):
    return cuda_graph.graphed_call(model, lambda b: (model(b),), x, variant=variant)


def test_one_capture_per_input_and_variant(model):
    x = torch.randn(1, 4)
    first = _call(model, x)[0]
    assert torch.equal(_call(model, x)[0], first)
    assert len(RecordingCapture.captures) == 1
    _call(model, x, variant=("bf16",))
    assert len(RecordingCapture.captures) == 2
    _call(model, x)  # both variants kept (MAX_GRAPHS = 2)
    assert len(RecordingCapture.captures) == 2
    _call(model, torch.randn(2, 4))  # a third key evicts the least recently used
    assert len(model._cuda_graph_cache) == cuda_graph.MAX_GRAPHS
    _call(model, x, variant=("bf16",))
    assert len(RecordingCapture.captures) == 4


def test_weight_changes_lead_to_a_new_capture(model):
    x = torch.randn(1, 4)
    before = _call(model, x)[0]
    with torch.no_grad():
        model.weight.mul_(2.0)  # in place: same tensor, new version
    after = _call(model, x)[0]
    assert len(RecordingCapture.captures) == 2 and not torch.equal(after, before)
    model.weight.data = model.weight.data.clone()  # replaced storage, same Parameter
    _call(model, x)
    assert len(RecordingCapture.captures) == 3


def test_failed_capture_falls_back_to_eager_once(model, monkeypatch):
    def refuse(fn, example):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(cuda_graph, "_CapturedCall", refuse)
    x = torch.randn(1, 4)
    with pytest.warns(RuntimeWarning, match="without graphs"):
        out = _call(model, x)[0]
    assert torch.equal(out, model(x))
    assert model.cuda_graphs is False
    assert not cuda_graph.graphs_apply(model, torch.randn(1, 3, 8, 8))


def test_copies_and_pickles_get_an_empty_cache(model):
    _call(model, torch.randn(1, 4))
    assert len(model._cuda_graph_cache) == 1
    assert len(copy.deepcopy(model)._cuda_graph_cache) == 0
    assert len(pickle.loads(pickle.dumps(model))._cuda_graph_cache) == 0


def test_graphs_apply_only_to_single_cuda_slices_in_inference(model):
    def cuda_input(batch):  # stands in for a CUDA tensor: graphs_apply reads these two
        return SimpleNamespace(is_cuda=True, shape=(batch, 3, 1024, 1024))

    assert not cuda_graph.graphs_apply(model, torch.randn(1, 3, 8, 8))  # CPU
    with torch.no_grad():
        assert cuda_graph.graphs_apply(model, cuda_input(1))
        assert not cuda_graph.graphs_apply(model, cuda_input(2))
        model.train()
        assert not cuda_graph.graphs_apply(model, cuda_input(1))
        model.eval()
        model.cuda_graphs = False
        assert not cuda_graph.graphs_apply(model, cuda_input(1))
    model.cuda_graphs = True
    assert not cuda_graph.graphs_apply(model, cuda_input(1))  # autograd on
