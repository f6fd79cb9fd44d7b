"""``hqsam embed``: a folder that ``hqsam segment --cache`` and the widget session reuse."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from napari_hq_sam.cli import main
from napari_hq_sam.engine.cache import EmbeddingCache, image_key, model_signature
from napari_hq_sam.engine.image import default_contrast_limits, describe_layout, model_slice
from napari_hq_sam.weights import file_sha256

SAMPLE = Path(__file__).resolve().parents[2] / "src" / "napari_hq_sam" / "_sample_data"
IMAGE = SAMPLE / "nuclei3d_image.tif"
BOXES = SAMPLE / "nuclei3d_boxes.csv"  # boxes on slices 10 and 20
SUMMARY = re.compile(r"^embedded (\d+) slices? in [\d.]+ s \([\d.]+ s per slice, (.+)\); "
                     r"embeddings: (\d+) computed, (\d+) reused; "
                     r"contrast limits (\S+) (\S+); cache (.+)$")


def _run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # the option parser's own errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _embed(capsys, cache, *extra, checkpoint=None):
    """``hqsam embed`` of the 3D sample; returns (slices, where, computed, reused)."""
    model = ["--model", "vit_tiny"] + (["--checkpoint", checkpoint] if checkpoint else [])
    code, out, err = _run(capsys, "embed", IMAGE, *model, "--cache", cache, "--device", "cpu",
                          "--quiet", *extra)
    assert code == 0, err
    lines = out.splitlines()
    found = SUMMARY.match(lines[0])
    assert len(lines) == 1 and found, out
    assert found[7] == str(cache)
    if "--contrast" not in extra:  # the whole sample's minimum and maximum
        image = tifffile.imread(IMAGE)
        assert (float(found[5]), float(found[6])) == (image.min(), image.max())
    return int(found[1]), found[2], int(found[3]), int(found[4])


def _segment(capsys, out, *extra, checkpoint=None):
    """``hqsam segment`` of the bundled boxes; returns (labels, (computed, reused))."""
    model = ["--model", "vit_tiny"] + (["--checkpoint", checkpoint] if checkpoint else [])
    code, text, err = _run(capsys, "segment", IMAGE, "--prompts", BOXES, *model, "--out", out,
                           "--device", "cpu", "--quiet", *extra)
    assert code == 0, err
    found = re.search(r"embeddings: (\d+) computed, (\d+) reused", text)
    return tifffile.imread(out), (int(found[1]), int(found[2]))


def _session_hits(folder, model, choice, slices) -> tuple[int, int]:
    """(computed, reused) of the widget session embedding ``slices`` as the widget shows them."""
    from napari_hq_sam.session import ViewerSession

    image = tifffile.imread(IMAGE)
    layout, limits = describe_layout(image.shape), default_contrast_limits(image)
    session = ViewerSession()
    session.set_model(model, choice)
    session.use_embedding_folder(folder)
    session.segmenter.embeddings([model_slice(image, layout, (z,), limits) for z in slices])
    return session.segmenter.computed, session.segmenter.reused


@pytest.fixture(scope="module")
def reference(tiny_checkpoint, tmp_path_factory):
    """Labels of ``hqsam segment`` without a cache."""
    out = tmp_path_factory.mktemp("reference") / "labels.tif"
    assert main(["segment", str(IMAGE), "--prompts", str(BOXES), "--model", "vit_tiny",
                 "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--device", "cpu",
                 "--quiet"]) == 0
    return tifffile.imread(out)


def test_embed_resumes_then_segment_and_widget_reuse(tiny_checkpoint, tiny_model, reference,
                                                     tmp_path, capsys):
    from napari_hq_sam.session import ModelChoice

    cache = tmp_path / "emb.zarr"
    # a run that did slice 10 only, as if killed; the full run does the rest
    assert _embed(capsys, cache, "--slices", "10", checkpoint=tiny_checkpoint) == (
        1, "1 process", 1, 0)
    assert _embed(capsys, cache, "--slices", "10", "20", checkpoint=tiny_checkpoint) == (
        2, "1 process", 1, 1)
    assert _embed(capsys, cache, "--slices", "20", "10", checkpoint=tiny_checkpoint) == (
        2, "1 process", 0, 2)
    labels, counts = _segment(capsys, tmp_path / "out.tif", "--cache", cache,
                              checkpoint=tiny_checkpoint)
    assert counts == (0, 2) and np.array_equal(labels, reference)
    assert reference[[10, 20]].any(axis=(1, 2)).all()  # the comparison is not of empty slices
    choice = ModelChoice("vit_tiny", checkpoint=str(tiny_checkpoint))
    assert _session_hits(cache, tiny_model, choice, (10, 20)) == (0, 2)
    assert _session_hits(cache, tiny_model, choice, (11,)) == (1, 0)  # not embedded


def test_percentile_contrast_is_shared_with_segment(tiny_checkpoint, reference, tmp_path,
                                                    capsys):
    cache = tmp_path / "emb.zarr"
    assert _embed(capsys, cache, "--slices", "10:21:10", "--contrast", "percentile",
                  checkpoint=tiny_checkpoint) == (2, "1 process", 2, 0)
    _, counts = _segment(capsys, tmp_path / "p.tif", "--cache", cache, "--contrast",
                         "percentile", checkpoint=tiny_checkpoint)
    assert counts == (0, 2)
    # the default contrast gives other model inputs: other entries
    labels, counts = _segment(capsys, tmp_path / "d.tif", "--cache", cache,
                              checkpoint=tiny_checkpoint)
    assert counts == (2, 0) and np.array_equal(labels, reference)


def test_official_weights_sign_the_folder_as_segment_and_the_widget(
        tiny_checkpoint, tiny_model, reference, tmp_path, capsys, monkeypatch):
    from napari_hq_sam.session import ModelChoice

    # the official vit_tiny file, as a verified download leaves it in the weights cache
    weights = tmp_path / "weights"
    weights.mkdir()
    official = shutil.copy(tiny_checkpoint, weights / "sam_hq_vit_tiny.pth")
    (weights / "sam_hq_vit_tiny.pth.verified").write_text(
        f"{file_sha256(tiny_checkpoint)} {Path(official).stat().st_size}\n")
    monkeypatch.setenv("NAPARI_HQ_SAM_CACHE", str(weights))
    cache = tmp_path / "emb.zarr"
    assert _embed(capsys, cache, "--slices", "10", "20") == (2, "1 process", 2, 0)
    signature = dict(zarr.open_group(str(cache), mode="r").attrs["signature"])
    assert signature == model_signature(tiny_model, tiny_checkpoint)
    labels, counts = _segment(capsys, tmp_path / "out.tif", "--cache", cache)
    assert counts == (0, 2) and np.array_equal(labels, reference)
    assert _session_hits(cache, tiny_model, ModelChoice("vit_tiny"), (10, 20)) == (0, 2)


def test_dask_scheduler_writes_the_same_entries(tiny_checkpoint, tmp_path, capsys):
    from distributed import LocalCluster

    single, dask = tmp_path / "single.zarr", tmp_path / "dask.zarr"
    _embed(capsys, single, "--slices", "3:5", checkpoint=tiny_checkpoint)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:
        found = _embed(capsys, dask, "--slices", "3:5", "--scheduler",
                       cluster.scheduler_address, checkpoint=tiny_checkpoint)
    assert found == (2, f"scheduler {cluster.scheduler_address}", 2, 0)
    signature = dict(zarr.open_group(str(single), mode="r").attrs["signature"])
    assert (EmbeddingCache(signature, directory=dask).stored_keys()
            == EmbeddingCache(signature, directory=single).stored_keys())
    image = tifffile.imread(IMAGE)
    layout, limits = describe_layout(image.shape), default_contrast_limits(image)
    assert EmbeddingCache(signature, directory=single).stored_keys() == sorted(
        image_key(model_slice(image, layout, (z,), limits)) for z in (3, 4))


@pytest.mark.parametrize("argv, setup, message", [
    ([], dict(model_type="vit_b"), "holds embeddings of another model or version.*"
                                   "model_type: vit_b in the cache vs vit_tiny now"),
    ([], dict(precision="bf16"), "precision: bf16 in the cache vs fp32 now"),
    (["--precision", "bf16"], {}, "precision: fp32 in the cache vs bf16 now"),
    ([], "not a cache", "exists but is not an embedding cache"),
    (["--slices", "31"], None, "index '31' does not exist on an axis of 31 slices"),
    (["--slices", "1,2"], None, "one index or range per slice axis"),
    (["--slices", "5:2"], None, "selects no slice"),
    (["--slices", "x"], None, "indices must be integers"),
    (["--slices", "0:4:0"], None, "a step other than 0"),
    (["--batch-size", "0"], None, "--batch-size: must be at least 1"),
    (["--workers", "0"], None, "--workers: must be at least 1"),
    (["--workers", "1", "--batch-size", "2"], None, "--batch-size applies to a run in this"),
    (["--channel", "1"], None, "a channel was chosen without a channel axis"),
    (["--adapter", "missing.pt"], None, "missing.pt does not exist"),
])
def test_bad_input_is_one_line_before_the_model_loads(tiny_checkpoint, tiny_model, tmp_path,
                                                      capsys, monkeypatch, argv, setup,
                                                      message):
    import napari_hq_sam.loading

    def no_model(*args, **kwargs):
        raise AssertionError("the model loaded before the inputs were checked")

    monkeypatch.setattr(napari_hq_sam.loading, "load_model", no_model)
    monkeypatch.chdir(tmp_path)
    if isinstance(setup, dict):
        signature = dict(model_signature(tiny_model, tiny_checkpoint), **setup)
        EmbeddingCache(signature, directory=tmp_path / "c.zarr")
    elif setup == "not a cache":
        (tmp_path / "c.zarr").mkdir()
        (tmp_path / "c.zarr" / "notes.txt").write_text("mine")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code, out, err = _run(capsys, "embed", IMAGE, "--model", "vit_tiny", "--checkpoint",
                          tiny_checkpoint, "--cache", tmp_path / "c.zarr", "--quiet", *argv)
    assert code == 2 and out == ""
    assert err.startswith("hqsam embed: error:") and err.count("\n") == 1
    assert re.search(message, err), err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # no folder made or changed


def test_missing_image_and_checkpoint(tmp_path, capsys):
    code, _, err = _run(capsys, "embed", tmp_path / "none.tif", "--model", "vit_tiny",
                        "--cache", tmp_path / "c.zarr")
    assert code == 2 and "none.tif does not exist" in err
    code, _, err = _run(capsys, "embed", IMAGE, "--model", "vit_tiny", "--checkpoint",
                        tmp_path / "none.pth", "--cache", tmp_path / "c.zarr")
    assert code == 2 and "none.pth does not exist" in err
    assert list(tmp_path.iterdir()) == []
