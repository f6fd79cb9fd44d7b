"""Tiled segmentation with the real model on a mosaic of the bundled nuclei image."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from napari_hq_sam.engine.image import default_contrast_limits, to_model_image
from napari_hq_sam.engine.prompts import ObjectPrompt
from napari_hq_sam.engine.segmenter import SliceSegmenter
from napari_hq_sam.engine.stack import segment_stack
from napari_hq_sam.engine.tiled import MAX_WINDOW_TILES, prompt_extent
from napari_hq_sam.engine.tiles import Tiling


@pytest.fixture(scope="module")
def mosaic(nuclei2d):
    """2048 x 2048 uint8 model image: the 512 x 512 nuclei sample repeated 4 x 4."""
    return to_model_image(np.tile(nuclei2d, (4, 4)), default_contrast_limits(nuclei2d))


def box_of(labels: np.ndarray, object_id: int, offset=(0, 0)) -> list[float]:
    rows, cols = np.nonzero(labels == object_id)
    return [cols.min() + offset[1] - 2, rows.min() + offset[0] - 2,
            cols.max() + offset[1] + 2, rows.max() + offset[0] + 2]


def central_object(labels: np.ndarray) -> int:
    """Id of the ground-truth nucleus nearest the sample's centre."""
    ids = np.unique(labels)[1:]
    centres = [np.mean(np.nonzero(labels == i), axis=1) for i in ids]
    return int(ids[np.argmin([np.hypot(*(c - 256)) for c in centres])])


@pytest.fixture
def no_moves(monkeypatch):
    """Decode each object once, in its routed tile.

    Random weights give blotchy masks that reach a tile's edge, which the tiled path
    answers by decoding again in a wider window (tested exactly with an oracle in
    test_tiles.py); here the routed tile's own decode is what is compared.
    """
    monkeypatch.setattr("napari_hq_sam.engine.tiled.MAX_MOVES", 0)


def test_an_object_inside_a_core_gets_the_mask_of_its_tile_alone(tiny_model, mosaic,
                                                                  nuclei2d_labels, no_moves):
    """Objects in the cores of tile (0, 0) and tile (1, 1): equal to their tile's crop."""
    tiling = Tiling()  # cores 0-767, 768-1535, ...; tile (1, 1) spans 640-1663
    obj = central_object(nuclei2d_labels)
    offsets = [(0, 0), (1024, 1024)]  # two copies of the sample hold it
    prompts = [ObjectPrompt(box=box_of(nuclei2d_labels, obj, o), object_id=k + 1)
               for k, o in enumerate(offsets)]
    segmenter = SliceSegmenter(tiny_model)
    tiled = segmenter.segment(mosaic, prompts, tiling=tiling)
    assert tiled.origins is not None and segmenter.computed == 2
    for k, window in enumerate([(0, 0), (640, 640)]):
        crop = mosaic[window[0]:window[0] + 1024, window[1]:window[1] + 1024]
        shifted = ObjectPrompt(box=np.subtract(prompts[k].box, [window[1], window[0]] * 2))
        alone = segmenter.segment(crop, [shifted])  # the crop's embedding: a cache hit
        expected = np.zeros(mosaic.shape[:2], bool)
        expected[window[0]:window[0] + 1024, window[1]:window[1] + 1024] = alone.masks[0]
        assert expected.sum() > 50
        np.testing.assert_array_equal(tiled.full_mask(k), expected)
        assert tiled.scores[k] == pytest.approx(alone.scores[0], abs=1e-6)
    assert segmenter.computed == 2 and segmenter.reused == 2


def test_stack_run_writes_only_in_the_routed_tile_and_tiling_none_resizes(
        tiny_model, mosaic, nuclei2d_labels, no_moves):
    obj = central_object(nuclei2d_labels)
    stack = np.stack([mosaic[..., 0], mosaic[..., 0]])  # (2, 2048, 2048) grey
    prompts = [ObjectPrompt((1,), box=box_of(nuclei2d_labels, obj, (1536, 512)), object_id=5)]
    tiled = segment_stack(stack, prompts, tiny_model, contrast_limits=(0, 255))
    whole = segment_stack(stack, prompts, tiny_model, contrast_limits=(0, 255), tiling=None)
    assert tiled.computed == 1 and whole.computed == 1
    assert not tiled.labels[0].any() and set(np.unique(tiled.labels)) == {0, 5}
    # the mask lies in the one tile the box was routed to (rows 1024-2047: tile row 2)
    window = Tiling().route((2048, 2048), prompt_extent(prompts[0]))
    assert window.top == 1024 and window.shape == (1024, 1024)
    rows, cols = np.nonzero(tiled.labels[1] == 5)
    assert len(rows) > 50
    assert rows.min() >= window.top and rows.max() < window.bottom
    assert cols.min() >= window.left and cols.max() < window.right
    # the untiled run saw a 2x downscaled slice: a different mask
    assert not np.array_equal(tiled.labels, whole.labels)


MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import numpy as np, torch, zarr
    from napari_hq_sam import build_hq_sam
    from napari_hq_sam.engine.prompts import ObjectPrompt
    from napari_hq_sam.engine.segmenter import SliceSegmenter
    from napari_hq_sam.engine.stack import segment_stack
    from napari_hq_sam.predictor import ImageEmbedding

    model = build_hq_sam("vit_tiny", sys.argv[1])
    image = zarr.open_array(sys.argv[2], mode="r")
    labels = zarr.open_array(sys.argv[3], mode="w", shape=image.shape, chunks=(1024, 1024),
                             dtype="uint16")
    reads = []

    def encode(model, images):  # cheap stand-in for the encoder: memory is what is measured
        reads.extend(im.shape for im in images)
        return [ImageEmbedding(torch.zeros(1, 256, 64, 64), torch.zeros(1, 32, 256, 256),
                               im.shape[:2], (1024, 1024)) for im in images]

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    prompts = [ObjectPrompt(box=[100, 200, 160, 260], object_id=1),
               ObjectPrompt(points=[[10_000, 10_000]], labels=[1], object_id=2),
               ObjectPrompt(box=[19_000, 18_500, 19_999, 19_999], object_id=3)]
    result = segment_stack(image, prompts, segmenter=SliceSegmenter(model, encode=encode),
                           contrast_limits=(0, 4095), labels=labels)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_kib": after - before, "reads": reads,
                      "slices": len(result.slices)}))
""")


def test_a_20000_pixel_lazy_slice_runs_in_bounded_memory(tmp_path, tiny_checkpoint, nuclei2d):
    """20000 x 20000 uint16 zarr (800 MB in memory): peak memory grows by far less."""
    zarr = pytest.importorskip("zarr")
    image = zarr.open_array(tmp_path / "big.zarr", mode="w", shape=(20000, 20000),
                            chunks=(1024, 1024), dtype="uint16", fill_value=300)
    image[:512, :512] = nuclei2d.astype(np.uint16) * 16  # real content near one prompt
    script = tmp_path / "run.py"
    script.write_text(MEMORY_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(tiny_checkpoint),
                           str(tmp_path / "big.zarr"), str(tmp_path / "labels.zarr")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["slices"] == 1
    # three objects far apart: a handful of windows read, not the slice. The stand-in's
    # blank embeddings give masks filling their window, so each object is also decoded
    # in two wider windows, the widest at most MAX_WINDOW_TILES tiles on a side
    reads = report["reads"]
    assert 3 <= len(reads) <= 9
    assert max(max(h, w) for h, w, _ in reads) <= MAX_WINDOW_TILES * 1024 + 2, reads
    assert sum(h * w for h, w, _ in reads) < 0.25 * 20000 * 20000
    assert report["growth_kib"] < 400 * 1024  # the image alone would be 800 MB
    # labels written chunk by chunk, only around the three prompts
    chunks = {tuple(int(v) for v in f.relative_to(tmp_path / "labels.zarr" / "c").parts)
              for f in (tmp_path / "labels.zarr" / "c").rglob("*") if f.is_file()}
    near = [(0, 0), (9, 9), (18, 18)]  # chunk (row, col) of each prompt
    assert chunks and len(chunks) <= 3 * 4 * 4  # of 400: each object within 4 x 4 tiles
    assert all(min(max(abs(r - a), abs(c - b)) for a, b in near) <= 3
               for r, c in chunks), chunks


def test_embedded_tiles_serve_later_prompted_runs(tmp_path, tiny_model, tiny_checkpoint,
                                                  mosaic, no_moves):
    from napari_hq_sam.engine.cache import EmbeddingCache, model_signature
    from napari_hq_sam.engine.embed import embed_stack

    image = mosaic[:500, :1100, 0]  # grey, 500 x 1100: 1 x 3 tiles of 512 px (halo 64)
    tiling = Tiling(tile=512, halo=64)
    signature = model_signature(tiny_model, tiny_checkpoint)

    def cache():
        return EmbeddingCache(signature, directory=tmp_path / "cache", max_items=2)

    first = embed_stack(image, tiny_model, cache=cache(), tiling=tiling)
    assert (first.computed, first.reused, first.slices) == (3, 0, [()])
    again = embed_stack(image, tiny_model, cache=cache(), tiling=tiling)
    assert (again.computed, again.reused) == (0, 3)
    prompts = [ObjectPrompt(points=[[100, 100]], labels=[1], object_id=1),
               ObjectPrompt(points=[[1000, 400]], labels=[1], object_id=2)]
    run = segment_stack(image, prompts, segmenter=SliceSegmenter(tiny_model, cache=cache()),
                        tiling=tiling)
    assert run.computed == 0 and run.reused == 2  # the grid tiles the prompts route to
    assert set(np.unique(run.labels)) <= {0, 1, 2} and (run.labels > 0).any()
    # entries are keyed by the window's pixels: another halo reuses only the windows that
    # cover exactly the same rectangle (those at the slice's corners), computes the rest
    wider = Tiling(tile=512, halo=100)
    same = set(wider.grid(image.shape)) & set(tiling.grid(image.shape))
    other = embed_stack(image, tiny_model, cache=cache(), tiling=wider)
    n_wider = len(wider.grid(image.shape))
    assert 0 < len(same) < n_wider
    assert (other.computed, other.reused) == (n_wider - len(same), len(same))
