"""Precomputed embeddings: batched, resumable, cancellable, on Dask, read by the widget session."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from napari_hq_sam.engine.cache import EmbeddingCache, image_key, model_signature
from napari_hq_sam.engine.embed import embed_stack, embed_stack_distributed
from napari_hq_sam.engine.encoder import encode_slices
from napari_hq_sam.engine.image import default_contrast_limits, describe_layout, model_slice
from napari_hq_sam.engine.segmenter import SliceSegmenter
from napari_hq_sam.errors import InputError

ALL = [(0,), (1,), (2,), (3,)]


class Counter:
    """The reference encoder, recording the size of each batch it encodes."""

    def __init__(self):
        self.batches = []

    def __call__(self, model, images):
        self.batches.append(len(images))
        return encode_slices(model, images)


@pytest.fixture(scope="module")
def stack(nuclei3d) -> np.ndarray:
    """The first 4 slices of the 3D sample, (4, 61, 57) uint16."""
    return np.ascontiguousarray(nuclei3d[:4])


def widget_inputs(stack) -> list[np.ndarray]:
    """Each slice as the widget gives it to the model: whole-image default contrast limits."""
    layout = describe_layout(stack.shape)
    limits = default_contrast_limits(stack)
    return [model_slice(stack, layout, index, limits) for index in ALL]


def run(model, signature, folder, stack, stop_after=None, **kwargs):
    """One run in a fresh cache object and segmenter, as in a new process.

    ``stop_after``: ``should_stop()`` says True once this many slices are reported done.
    """
    encoder, calls = Counter(), []
    segmenter = SliceSegmenter(model, encode=encoder,
                               cache=EmbeddingCache(signature, directory=folder))
    result = embed_stack(stack, segmenter=segmenter,
                         progress=lambda done, total: calls.append((done, total)),
                         should_stop=lambda: stop_after is not None and len(calls) >= stop_after,
                         **kwargs)
    return result, encoder.batches, calls, segmenter


@pytest.fixture(scope="module")
def embedded(tiny_model, tiny_checkpoint, stack, tmp_path_factory):
    """A batched run into a new folder, then a second run on the same folder."""
    folder = tmp_path_factory.mktemp("embed") / "cache.zarr"
    signature = model_signature(tiny_model, tiny_checkpoint)
    first = run(tiny_model, signature, folder, stack, batch_size=2)
    second = run(tiny_model, signature, folder, stack)
    return {"folder": folder, "signature": signature, "first": first, "second": second}


def test_batched_run_stores_every_slice_under_its_model_input(embedded, tiny_model, stack):
    result, batches, calls, _ = embedded["first"]
    assert batches == [2, 2]
    assert result.labels is None and not result.cancelled
    assert result.slices == ALL and (result.computed, result.reused) == (4, 0)
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    inputs = widget_inputs(stack)
    cache = EmbeddingCache(embedded["signature"], directory=embedded["folder"])
    assert cache.stored_keys() == sorted(image_key(rgb) for rgb in inputs)
    stored = cache.get(image_key(inputs[2]))
    expected = encode_slices(tiny_model, [inputs[2]])[0]
    assert stored.original_size == (61, 57)
    np.testing.assert_allclose(stored.embeddings, expected.embeddings, atol=1e-4)
    np.testing.assert_allclose(stored.hq_features, expected.hq_features, atol=1e-4)


def test_second_run_computes_nothing_and_reads_no_entry(embedded):
    result, batches, calls, segmenter = embedded["second"]
    assert batches == [] and (result.computed, result.reused) == (0, 4)
    assert result.slices == ALL and calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert segmenter.reused == 0  # found by key, never read back


def test_cancelled_run_keeps_its_slices_and_a_rerun_does_the_rest(tiny_model, tiny_checkpoint,
                                                                  stack, tmp_path):
    folder = tmp_path / "cache.zarr"
    signature = model_signature(tiny_model, tiny_checkpoint)
    cancelled, batches, calls, _ = run(tiny_model, signature, folder, stack, stop_after=2,
                                       batch_size=1)
    assert cancelled.cancelled and cancelled.slices == [(0,), (1,)]
    assert batches == [1, 1] and calls == [(1, 4), (2, 4)]
    assert len(EmbeddingCache(signature, directory=folder).stored_keys()) == 2
    # stopped at once, while looking for stored slices: nothing new, nothing lost
    idle, batches, _, _ = run(tiny_model, signature, folder, stack, stop_after=0)
    assert idle.cancelled and idle.slices == [] and batches == []
    resumed, batches, calls, _ = run(tiny_model, signature, folder, stack)
    assert not resumed.cancelled and batches == [1, 1]
    assert (resumed.computed, resumed.reused) == (2, 2)
    assert resumed.slices == ALL and calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert (EmbeddingCache(signature, directory=folder).stored_keys()
            == sorted(image_key(rgb) for rgb in widget_inputs(stack)))
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp")]


def test_chosen_slices_and_contrast_limits(tiny_model, stack):
    segmenter = SliceSegmenter(tiny_model)
    result = embed_stack(stack, segmenter=segmenter, slices=[(3,), (1,)],
                         contrast_limits=(0, 1000))
    assert result.slices == [(3,), (1,)] and result.computed == 2
    layout = describe_layout(stack.shape)
    for z in (1, 3):
        assert segmenter.cache.get(image_key(model_slice(stack, layout, (z,), (0, 1000))))
    with pytest.raises(InputError, match=r"slice \(4,\) does not exist"):
        embed_stack(stack, segmenter=segmenter, slices=[(4,)])
    with pytest.raises(InputError, match="needs a model or a segmenter"):
        embed_stack(stack)


def test_widget_session_reads_the_folder(embedded, tiny_model, tiny_checkpoint, stack):
    from napari_hq_sam.session import ModelChoice, ViewerSession

    session = ViewerSession()
    session.set_model(tiny_model, ModelChoice("vit_tiny", checkpoint=str(tiny_checkpoint)))
    session.use_embedding_folder(embedded["folder"])
    stored = dict(zarr.open_group(str(embedded["folder"]), mode="r").attrs["signature"])
    assert session.cache.signature == stored == embedded["signature"]
    inputs = widget_inputs(stack)
    found = session.segmenter.embeddings(inputs)
    assert (session.segmenter.computed, session.segmenter.reused) == (0, 4)
    reference = EmbeddingCache(stored, directory=embedded["folder"])
    for rgb, embedding in zip(inputs, found):
        assert np.array_equal(embedding.embeddings, reference.get(image_key(rgb)).embeddings)
    # the key is the uint8 input: other contrast limits are another entry
    lo, hi = default_contrast_limits(stack)
    other = model_slice(stack, describe_layout(stack.shape), (0,), (lo, hi * 2))
    assert session.cache.get(image_key(other)) is None


def test_dask_run_writes_the_same_entries(embedded, tiny_checkpoint, stack, tmp_path):
    from distributed import Client, LocalCluster

    from napari_hq_sam.engine.distributed import ModelSpec

    spec = ModelSpec("vit_tiny", str(tiny_checkpoint), device="cpu",
                     cache_dir=str(tmp_path / "dask.zarr"))
    calls = []
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        result = embed_stack_distributed(stack, spec, client=client,
                                         progress=lambda d, t: calls.append((d, t)))
        again = embed_stack_distributed(stack, spec, client=client)
    assert result.labels is None and result.slices == ALL
    assert (result.computed, result.reused) == (4, 0) and (again.computed, again.reused) == (0, 4)
    assert sorted(calls) == [(1, 4), (2, 4), (3, 4), (4, 4)]
    single = EmbeddingCache(embedded["signature"], directory=embedded["folder"])
    dask = EmbeddingCache(embedded["signature"], directory=spec.cache_dir)
    assert dask.stored_keys() == single.stored_keys()
    for key in single.stored_keys():
        np.testing.assert_allclose(dask.get(key).hq_features, single.get(key).hq_features,
                                   atol=1e-4)
    with pytest.raises(InputError, match="needs a cache folder"):
        embed_stack_distributed(stack, ModelSpec("vit_tiny", str(tiny_checkpoint)))
