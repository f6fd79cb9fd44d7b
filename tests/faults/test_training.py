"""Fault matrix: ``hqsam train`` and ``hqsam evaluate`` inputs, the adapter output, and
the Python calls behind them (``train_hq``, ``evaluate``, ``TrainingConfig``).

Labels that cannot be scored or trained on, images that cannot be read and outputs
that cannot be written are refused with one line naming the file, before the model
loads and before any training; the inputs are unchanged and nothing is written.
"""

from __future__ import annotations

import copy
import errno
import math
import os
import tempfile

import numpy as np
import pytest
import tifffile
import torch
from fault_utils import assert_user_error, leftovers, run_cli, snapshot

from napari_hq_sam._groundtruth import check_labels, object_boxes
from napari_hq_sam.adapters import hq_state_dict
from napari_hq_sam.cli import build_parser
from napari_hq_sam.errors import InputError
from napari_hq_sam.evaluation import evaluate
from napari_hq_sam.training import TrainingConfig, train_hq

CROP = (slice(0, 64), slice(0, 64))


@pytest.fixture()
def inputs(tmp_path, nuclei2d, nuclei2d_labels):
    """A folder with a small crop of the nuclei image and its labels."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    tifffile.imwrite(folder / "image.tif", nuclei2d[CROP])
    tifffile.imwrite(folder / "labels.tif", nuclei2d_labels[CROP])
    return folder


class ModelLoaded(Exception):
    pass


@pytest.fixture()
def no_model(monkeypatch):
    """Loading the model raises :class:`ModelLoaded`: every check must come before it."""
    def load_model(*args, **kwargs):
        raise ModelLoaded

    monkeypatch.setattr("napari_hq_sam.loading.load_model", load_model)


def _cli(command, inputs, checkpoint, labels="labels.tif", image="image.tif", extra=()):
    argv = [command, "--image", inputs / image, "--labels", inputs / labels,
            "--model", "vit_tiny", "--checkpoint", checkpoint, "--device", "cpu", *extra]
    if command == "train":
        argv += ["--out", inputs.parent / "out" / "adapter.pt", "--steps", "1", "--quiet"]
    else:
        argv += ["--json"]
    return run_cli(argv)


def _nothing_written(inputs, before):
    assert snapshot(inputs) == before and leftovers(inputs.parent) == []
    assert not (inputs.parent / "out").exists()


# -- labels ------------------------------------------------------------------------------

def _negative(labels):
    out = labels.astype(np.int32)
    out[out == out.max()] = -3
    return out


def _fractional(labels):
    return labels.astype(np.float32) + 0.5


def _float_nan(labels):
    out = labels.astype(np.float32)
    out[0, 0] = np.nan
    return out


def _left_empty(labels):
    out = labels.copy()
    out[:, :32] = 0
    return out


# case -> (labels from the good ones, file suffix, extra options, message fragments)
LABELS = {
    "negative ids": (_negative, ".tif", (), ("negative ids (lowest -3)", "relabel")),
    "no objects": (np.zeros_like, ".tif", (), ("holds no objects", "every value is 0")),
    "no objects inside --crop": (_left_empty, ".tif", ("--crop", ":,:32"),
                                 ("inside --crop holds no objects",)),
    "float labels with fractions": (_fractional, ".tif", (),
                                    ("not whole-number ids (e.g. 0.5)", "integer type")),
    "float labels with NaN": (_float_nan, ".tif", (), ("not whole-number ids (e.g. nan)",)),
    "boolean labels": (lambda lab: lab > 0, ".npy", (), ("has type bool", "integer type")),
    "labels of a smaller image": (lambda lab: lab[:60], ".tif", (),
                                  ("has shape (60, 64)", "image", "has shape (64, 64)")),
    "a stack of labels for a 2D image": (lambda lab: np.stack([lab, lab]), ".tif", (),
                                         ("has shape (2, 64, 64)",)),
}


@pytest.mark.parametrize("command", ["train", "evaluate"])
@pytest.mark.parametrize("case", list(LABELS))
def test_unusable_labels_are_one_line_before_the_model_loads(case, command, inputs,
                                                            tiny_checkpoint, no_model):
    make, suffix, extra, fragments = LABELS[case]
    bad = inputs / f"bad{suffix}"
    labels = make(tifffile.imread(inputs / "labels.tif"))
    if suffix == ".npy":
        np.save(bad, labels)
    else:
        tifffile.imwrite(bad, labels)
    before = snapshot(inputs)
    line = assert_user_error(_cli(command, inputs, tiny_checkpoint, bad.name, extra=extra),
                             f"labels {bad}", *fragments)
    assert line.startswith(f"hqsam {command}: error: ")
    _nothing_written(inputs, before)


@pytest.mark.parametrize("command", ["train", "evaluate"])
@pytest.mark.parametrize("which", ["image", "labels"])
def test_truncated_compressed_tiff_is_one_line(which, command, inputs, tiny_checkpoint,
                                               nuclei2d, nuclei2d_labels, no_model):
    data = nuclei2d[CROP] if which == "image" else nuclei2d_labels[CROP]
    whole = inputs / f"{which}_zlib.tif"
    tifffile.imwrite(whole, data, compression="zlib")
    cut = inputs / f"{which}_cut.tif"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    before = snapshot(inputs)
    names = {"image": "image.tif", "labels": "labels.tif", which: cut.name}
    outcome = _cli(command, inputs, tiny_checkpoint, names["labels"], names["image"])
    assert_user_error(outcome, str(cut))
    _nothing_written(inputs, before)


def _reaches_the_model(argv) -> None:
    """The command's checks pass: the next thing it does is loading the model."""
    args = build_parser().parse_args([str(a) for a in argv])
    with pytest.raises(ModelLoaded):
        args.func(args)


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_whole_numbers_in_float_labels_are_ids(command, inputs, tiny_checkpoint, tmp_path,
                                               no_model):
    labels = tifffile.imread(inputs / "labels.tif")
    tifffile.imwrite(inputs / "float.tif", labels.astype(np.float32))
    ids = check_labels(tifffile.imread(inputs / "float.tif"))
    assert ids.dtype.kind == "i" and np.array_equal(ids, labels)
    argv = [command, "--image", inputs / "image.tif", "--labels", inputs / "float.tif",
            "--model", "vit_tiny", "--checkpoint", tiny_checkpoint]
    _reaches_the_model(argv + (["--out", tmp_path / "a.pt"] if command == "train" else []))


# -- the adapter output of ``hqsam train`` ------------------------------------------------

def _train_out(inputs, checkpoint, out, *extra):
    return run_cli(["train", "--image", inputs / "image.tif", "--labels",
                    inputs / "labels.tif", "--model", "vit_tiny", "--checkpoint", checkpoint,
                    "--out", out, "--steps", "1", "--device", "cpu", "--quiet", *extra])


def test_unwritable_outputs_are_one_line_before_the_model_loads(inputs, tiny_checkpoint,
                                                               tmp_path, no_model):
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "old.pt").write_bytes(b"an earlier adapter")
    cases = [
        (tmp_path / "a_folder", (), ("is a folder", "give a file name in it")),
        (tmp_path / "old.pt", (), ("exists; use --overwrite",)),
        (tmp_path / "a_file" / "adapter.pt", (), ("a_file is a file, not a folder",)),
        (inputs / "labels.tif", ("--overwrite",), ("is the --labels file",)),
        (inputs / "image.tif", ("--overwrite",), ("is the --image file",)),
    ]
    (tmp_path / "a_folder").mkdir()
    before = snapshot(tmp_path)
    for out, extra, fragments in cases:
        outcome = _train_out(inputs, tiny_checkpoint, out, *extra)
        assert_user_error(outcome, str(out), *fragments)
    assert snapshot(tmp_path) == before and leftovers(tmp_path) == []


def test_read_only_folder_is_refused_before_the_model_loads(inputs, tiny_checkpoint, tmp_path,
                                                           monkeypatch, no_model):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_mkstemp = tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):  # what a read-only mount answers
        if dir is not None and os.path.samefile(dir, locked):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    for out in (locked / "adapter.pt", locked / "missing" / "deeper" / "adapter.pt"):
        assert_user_error(_train_out(inputs, tiny_checkpoint, out), str(out),
                          f"folder {locked} is not writable", "Read-only file system")
    assert list(locked.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="permissions do not bind root (or this system)")
def test_folder_without_write_permission(inputs, tiny_checkpoint, tmp_path, no_model):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        out = locked / "adapter.pt"
        assert_user_error(_train_out(inputs, tiny_checkpoint, out), str(out), "not writable")
    finally:
        locked.chmod(0o755)


def test_missing_output_folder_passes_the_checks_and_is_not_made_early(inputs, tiny_checkpoint,
                                                                       tmp_path, no_model):
    out = tmp_path / "new" / "deeper" / "adapter.pt"
    _reaches_the_model(["train", "--image", inputs / "image.tif", "--labels",
                        inputs / "labels.tif", "--model", "vit_tiny", "--checkpoint",
                        tiny_checkpoint, "--out", out])
    assert not (tmp_path / "new").exists() and leftovers(tmp_path) == []


def test_full_disk_at_the_end_of_training_is_one_line(inputs, tiny_checkpoint, tmp_path,
                                                      monkeypatch):
    """The write fails after training: one line, no adapter, no folder, no temporary file."""
    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    out = tmp_path / "new" / "adapter.pt"
    outcome = _train_out(inputs, tiny_checkpoint, out, "--no-flip", "--val-fraction", "0",
                         "--crop", ":48,:48")
    assert_user_error(outcome, f"cannot write adapter {out}", "No space left on device")
    assert not (tmp_path / "new").exists() and leftovers(tmp_path) == []


# -- the Python calls --------------------------------------------------------------------

@pytest.mark.parametrize("settings, fragment", [
    ({"steps": 0}, "steps must be a whole number of at least 1, got 0"),
    ({"batch_size": 0}, "batch_size must be a whole number of at least 1"),
    ({"batch_size": 2.5}, "batch_size must be a whole number of at least 1, got 2.5"),
    ({"eval_every": 0}, "eval_every must be a whole number of at least 1"),
    ({"val_fraction": 1.0}, "val_fraction must be a finite number at least 0 and below 1"),
    ({"val_fraction": -0.1}, "val_fraction must be a finite number at least 0 and below 1"),
    ({"val_fraction": math.nan}, "val_fraction must be a finite number"),
    ({"lr": 0.0}, "lr must be a finite number above 0"),
    ({"lr": math.inf}, "lr must be a finite number above 0"),
    ({"lr_drop_at": 1.5}, "lr_drop_at must be a finite number from 0 to 1"),
    ({"importance_ratio": -1.0}, "importance_ratio must be a finite number from 0 to 1"),
    ({"oversample_ratio": 0.5}, "oversample_ratio must be a finite number at least 1"),
    ({"n_points": 0}, "n_points must be a whole number of at least 1"),
    ({"loss_points": 0}, "loss_points must be a whole number of at least 1"),
    ({"mask_noise_scale": 512}, "mask_noise_scale must be at most 256"),
    ({"max_val_objects": 0}, "max_val_objects must be a whole number of at least 1"),
    ({"prompt_kinds": ("box", "scribble")}, "prompt_kinds must be among box, points, mask"),
    ({"prompt_kinds": ()}, "prompt_kinds must be among box, points, mask"),
    ({"seed": -1}, "seed must be a whole number of at least 0"),
])
def test_training_settings_that_make_no_sense(settings, fragment):
    with pytest.raises(InputError, match=fragment):
        TrainingConfig(**settings)


@pytest.fixture()
def no_encoder(monkeypatch):
    def encode(*args, **kwargs):
        raise AssertionError("the encoder ran before the labels were checked")

    monkeypatch.setattr("napari_hq_sam.engine.encoder.encode_slices", encode)


# case of LABELS -> what the message says
API_LABELS = {
    "negative ids": "labels holds negative ids (lowest -3)",
    "no objects": "no objects (every value is 0)",
    "float labels with fractions": "labels holds values that are not whole-number ids",
    "boolean labels": "labels has type bool",
    "labels of a smaller image": "labels has shape (60, 64) but image has shape (64, 64)",
}


@pytest.mark.parametrize("case", list(API_LABELS))
def test_api_refuses_the_same_labels_before_any_model_work(case, tiny_model, nuclei2d,
                                                           nuclei2d_labels, no_encoder):
    labels = LABELS[case][0](nuclei2d_labels[CROP])
    image = nuclei2d[CROP]
    for call in (lambda: evaluate(tiny_model, image, labels),
                 lambda: train_hq(tiny_model, [(image, labels)], TrainingConfig(steps=1))):
        with pytest.raises(InputError) as info:
            call()
        assert API_LABELS[case] in str(info.value)


def test_huge_ids_cost_no_memory(nuclei2d_labels):
    """Boxes of ids up to 2**40 (find_objects alone would allocate one entry per id)."""
    labels = nuclei2d_labels[CROP].astype(np.int64)
    ids = [int(i) for i in np.unique(labels) if i]
    huge = labels.copy()
    for k, i in enumerate(ids):
        huge[labels == i] = 2**40 + 7 * k
    plain, sparse = object_boxes(labels), object_boxes(check_labels(huge))
    assert [label for label, _ in sparse] == [2**40 + 7 * k for k in range(len(ids))]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(plain, sparse))
    no_background = np.full((4, 5), 3_000_000_000, dtype=np.uint32)
    no_background[1:3, 2:4] = 3_000_000_001
    assert [(k, b.tolist()) for k, b in object_boxes(no_background)] == [
        (3_000_000_000, [0, 0, 4, 3]), (3_000_000_001, [2, 1, 3, 2])]


def test_evaluate_batch_size_below_one(tiny_model, nuclei2d, nuclei2d_labels):
    with pytest.raises(InputError, match="batch_size must be a whole number of at least 1"):
        evaluate(tiny_model, nuclei2d[CROP], nuclei2d_labels[CROP], batch_size=0)


def test_a_loss_that_becomes_nan_stops_training_and_keeps_finite_weights(
        tiny_model, nuclei2d, nuclei2d_labels, monkeypatch):
    model = copy.deepcopy(tiny_model)
    before = hq_state_dict(model)
    from napari_hq_sam.training import loop

    def nan_loss(logits, *args):
        nan = logits.sum() * float("nan")
        return nan, nan

    monkeypatch.setattr(loop, "bce_dice_loss", nan_loss)
    config = TrainingConfig(steps=3, batch_size=1, flip=False, val_fraction=0.0)
    with pytest.raises(InputError, match="training diverged at step 1 .* lower learning rate"):
        train_hq(model, [(nuclei2d[:48, :48], nuclei2d_labels[:48, :48])], config)
    after = hq_state_dict(model)
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert all(p.requires_grad is False for p in model.mask_decoder.hq_parameters())
