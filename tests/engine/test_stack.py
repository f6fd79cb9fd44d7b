"""Stack runs: labels on prompted slices, cache reuse, resume after a cancelled run, Dask."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr

from napari_hq_sam.engine.cache import EmbeddingCache, model_signature
from napari_hq_sam.engine.encoder import encode_slices
from napari_hq_sam.engine.prompts import ObjectPrompt
from napari_hq_sam.engine.segmenter import SliceSegmenter
from napari_hq_sam.engine.stack import plan_stack, segment_stack

PROMPTED = (8, 15, 22)


@pytest.fixture(scope="module")
def prompts(nuclei3d_labels):
    """Boxes around the two largest nuclei on slice 8, one on 15; a point object on 22."""
    out = []
    h, w = nuclei3d_labels.shape[1:]
    for z, n in zip(PROMPTED, (2, 1, 1)):
        ids, counts = np.unique(nuclei3d_labels[z], return_counts=True)
        for i in ids[1:][np.argsort(-counts[1:])][:n]:
            rows, cols = np.nonzero(nuclei3d_labels[z] == i)
            obj = len(out) + 1
            if z == 22:
                out.append(ObjectPrompt((z,), points=[[cols.mean(), rows.mean()]], labels=[1],
                                        object_id=obj))
            else:
                out.append(ObjectPrompt((z,), box=[max(cols.min() - 1, 0), max(rows.min() - 1, 0),
                                                   min(cols.max() + 1, w - 1),
                                                   min(rows.max() + 1, h - 1)], object_id=obj))
    return out


class Counter:
    """The reference encoder, counting the slices it encodes."""

    def __init__(self):
        self.slices = 0

    def __call__(self, model, images):
        self.slices += len(images)
        return encode_slices(model, images)


@pytest.fixture(scope="module")
def runs(tiny_model, tiny_checkpoint, nuclei3d, prompts, tmp_path_factory):
    """A run cancelled after one slice, its resumed rerun, and a third run, on one disk cache."""
    folder = tmp_path_factory.mktemp("emb") / "cache.zarr"
    signature = model_signature(tiny_model, tiny_checkpoint)
    out = {"folder": folder, "signature": signature}
    for name in ("cancelled", "resumed", "again"):
        # a fresh cache object and segmenter per run, as in a new process
        encoder, calls = Counter(), []
        segmenter = SliceSegmenter(tiny_model, encode=encoder,
                                   cache=EmbeddingCache(signature, directory=folder))
        stop_after = 1 if name == "cancelled" else None
        result = segment_stack(nuclei3d, prompts, segmenter=segmenter,
                               progress=lambda done, total, c=calls: c.append((done, total)),
                               should_stop=lambda c=calls, k=stop_after: k is not None
                               and len(c) >= k)
        out[name] = (result, encoder.slices, calls, segmenter)
    return out


def test_cancelled_run_keeps_finished_slices_and_resumes(runs):
    cancelled, encoded, calls, _ = runs["cancelled"]
    assert cancelled.cancelled and encoded == 1 and calls == [(1, 3)]
    assert cancelled.slices == [(8,)]
    assert np.flatnonzero(cancelled.labels.any(axis=(1, 2))).tolist() == [8]
    resumed, encoded, calls, _ = runs["resumed"]
    assert not resumed.cancelled and encoded == 2
    assert (resumed.computed, resumed.reused) == (2, 1)
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert np.array_equal(resumed.labels[8], cancelled.labels[8])


def test_second_run_computes_no_embedding(runs):
    again, encoded, _, _ = runs["again"]
    assert encoded == 0 and (again.computed, again.reused) == (0, 3)
    assert np.array_equal(again.labels, runs["resumed"][0].labels)
    cache = EmbeddingCache(runs["signature"], directory=runs["folder"])
    assert len(cache.stored_keys()) == 3
    assert not [p for p in runs["folder"].iterdir() if p.name.startswith(".tmp")]


def test_labels_only_on_prompted_slices_one_id_per_object(runs, prompts, nuclei3d):
    result, _, _, segmenter = runs["resumed"]
    labels = result.labels
    assert labels.shape == nuclei3d.shape and labels.dtype == np.uint16
    assert np.flatnonzero(labels.any(axis=(1, 2))).tolist() == list(PROMPTED)
    plan = plan_stack(nuclei3d, prompts)
    assert plan.indices == [(z,) for z in PROMPTED]
    for z in PROMPTED:
        here = [p for p in prompts if p.slice_index == (z,)]
        masks = segmenter.segment(plan.model_image(nuclei3d, (z,)), here).masks
        expected = np.zeros(labels.shape[1:], labels.dtype)
        for p, m in zip(here, masks):  # earlier objects keep their pixels
            expected[m & (expected == 0)] = p.object_id
        assert np.array_equal(labels[z], expected)
        assert set(np.unique(labels[z])) - {0} <= {p.object_id for p in here}
    assert set(np.unique(labels)) - {0} <= {1, 2, 3, 4}


def test_dask_and_zarr_input_and_zarr_labels(runs, prompts, nuclei3d, tiny_model, tmp_path):
    reference = runs["resumed"][0].labels
    cache = EmbeddingCache(runs["signature"], directory=runs["folder"])
    lazy = da.from_array(nuclei3d, chunks=(4, 61, 57))
    assert np.array_equal(segment_stack(lazy, prompts, tiny_model, cache=cache).labels, reference)
    stored = zarr.create_array(str(tmp_path / "img.zarr"), shape=nuclei3d.shape,
                               dtype=nuclei3d.dtype, chunks=(1, 61, 57))
    stored[...] = nuclei3d
    out = zarr.create_array(str(tmp_path / "labels.zarr"), shape=nuclei3d.shape,
                            dtype=np.uint16, chunks=(1, 61, 57), fill_value=0)
    result = segment_stack(stored, prompts, tiny_model, cache=cache, labels=out)
    assert result.computed == 0 and np.array_equal(out[...], reference)


def test_cache_refuses_another_signature(runs):
    other = dict(runs["signature"], model_type="vit_b")
    with pytest.raises(ValueError, match="another model or version.*model_type: vit_tiny"):
        EmbeddingCache(other, directory=runs["folder"])


def test_dask_local_cluster_matches_single_process(runs, prompts, nuclei3d, tiny_checkpoint,
                                                   monkeypatch):
    from distributed import Client, LocalCluster

    import napari_hq_sam.loading
    from napari_hq_sam.engine import distributed
    from napari_hq_sam.engine.distributed import ModelSpec, segment_stack_distributed

    spec = ModelSpec("vit_tiny", str(tiny_checkpoint), device="cpu")
    distributed._MODELS.pop(spec, None)
    loads = []
    real_load = napari_hq_sam.loading.load_model
    monkeypatch.setattr(napari_hq_sam.loading, "load_model",
                        lambda *a, **k: loads.append(a) or real_load(*a, **k))
    calls = []
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        result = segment_stack_distributed(nuclei3d, prompts, spec, client=client,
                                           progress=lambda d, t: calls.append((d, t)))
    assert (result.computed, result.reused) == (3, 0)  # no cache: encoded on the workers
    assert len(loads) == 1  # one worker, two threads, three tasks: one model load
    assert sorted(calls) == [(1, 3), (2, 3), (3, 3)]
    assert np.array_equal(result.labels, runs["resumed"][0].labels)


def test_bad_images_refused_before_encoding(prompts, nuclei3d, tiny_model):
    bad = nuclei3d.astype(np.float32)
    bad[15, 3, 3] = np.nan
    encoder = Counter()
    with pytest.raises(ValueError, match="NaN or infinite"):
        segment_stack(bad, prompts, tiny_model, encode=encoder)
    with pytest.raises(ValueError, match="axis hint"):
        segment_stack(np.zeros((2, 2, 31, 61, 57), np.uint8), prompts, tiny_model)
    with pytest.raises(ValueError, match="does not exist"):
        segment_stack(nuclei3d[:10], prompts, tiny_model, encode=encoder)
    assert encoder.slices == 0


@pytest.mark.parametrize("bad", [{"box": [1, 2, 3, 4]}, "prompts.csv", np.zeros((2, 4)),
                                 [ObjectPrompt((8,), box=[1, 1, 9, 9]), {"box": [1, 2, 3, 4]}]])
def test_prompts_that_are_not_object_prompts_are_refused(bad, nuclei3d, tiny_model):
    with pytest.raises(ValueError, match="ObjectPrompt"):
        segment_stack(nuclei3d, bad, tiny_model)


def test_one_prompt_alone_is_a_list_of_one(nuclei3d, prompts, tiny_model):
    from napari_hq_sam.engine.stack import prompt_list

    assert prompt_list(prompts[0]) == [prompts[0]]
