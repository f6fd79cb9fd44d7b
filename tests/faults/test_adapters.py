"""Fault matrix: adapter files given to ``hqsam evaluate --adapter`` and adapters written.

Every damaged or wrong adapter is refused with one line naming the file, before the
model loads; the files are unchanged and nothing is left behind. Writing is whole or
nothing: a full disk or a killed writer never leaves a half-written adapter.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tifffile
import torch
from fault_utils import assert_user_error, leftovers, run_cli, snapshot

from napari_hq_sam.adapters import (
    AdapterError,
    hq_state_dict,
    read_adapter,
    save_adapter,
    tensors_digest,
)
from napari_hq_sam.errors import OutputError
from napari_hq_sam.testing import with_changed_hq


@pytest.fixture(scope="module")
def trained(tiny_model):
    """The tiny model with HQ tensors changed, as training would."""
    return with_changed_hq(tiny_model, seed=3)


@pytest.fixture(scope="module")
def good_adapter(trained, tiny_checkpoint, tmp_path_factory) -> Path:
    return save_adapter(trained, tmp_path_factory.mktemp("adapter") / "good.pt",
                        base_checkpoint=tiny_checkpoint)


@pytest.fixture()
def inputs(tmp_path, nuclei2d, nuclei2d_labels) -> Path:
    """A folder with a small crop of the nuclei image and its labels."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    tifffile.imwrite(folder / "image.tif", nuclei2d[:64, :64])
    tifffile.imwrite(folder / "labels.tif", nuclei2d_labels[:64, :64])
    return folder


@pytest.fixture()
def no_model(monkeypatch):
    """Fail the test if a command loads the model: its checks must come first."""
    def load_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr("napari_hq_sam.loading.load_model", load_model)


def _flip(data: bytes, start: int, n: int = 256) -> bytes:
    out = bytearray(data)
    out[start:start + n] = bytes(b ^ 0xFF for b in out[start:start + n])
    return bytes(out)


def _payload(good: Path) -> dict:
    return torch.load(good, weights_only=True)


def _resaved(good: Path, path: Path, change) -> None:
    """``good``'s payload changed by ``change(payload)`` and saved with fresh zip CRCs."""
    payload = _payload(good)
    change(payload)
    torch.save(payload, path)


def _edit_tensor(payload):
    payload["state_dict"]["mask_decoder.hf_token.weight"][0, :8] += 0.5


def _nan_tensor(payload):
    payload["state_dict"]["mask_decoder.hf_mlp.layers.0.bias"][3] = float("nan")
    payload["tensors_sha256"] = tensors_digest(payload["state_dict"])


class _Code:
    def __reduce__(self):
        return (print, ("this must never run",))


# case -> (how the file is made from the good adapter, fragments of the one-line message)
DAMAGED = {
    "256 bytes flipped in the tensors": (
        lambda good, p: p.write_bytes(_flip(good.read_bytes(), good.stat().st_size // 2)),
        ("is damaged", "CRC-32")),
    "256 bytes flipped in the pickle": (
        lambda good, p: p.write_bytes(_flip(good.read_bytes(), 80)),
        ("is damaged", "CRC-32")),
    "bytes flipped in the zip directory": (
        lambda good, p: p.write_bytes(_flip(good.read_bytes(), good.stat().st_size - 40, 40)),
        ("not a readable adapter file",)),
    "cut in half": (
        lambda good, p: p.write_bytes(good.read_bytes()[: good.stat().st_size // 2]),
        ("not a readable adapter file", "cut short")),
    "empty": (lambda good, p: p.write_bytes(b""), ("not a readable adapter file",)),
    "a text file": (lambda good, p: p.write_text("model: vit_tiny\nweights: none\n"),
                    ("not a readable adapter file",)),
    "tensors edited and saved again": (
        lambda good, p: _resaved(good, p, _edit_tensor), ("damaged or was altered",)),
    "checksum removed": (
        lambda good, p: _resaved(good, p, lambda d: d.pop("tensors_sha256")),
        ("damaged or was altered",)),
    "NaN in a tensor, checksum matching": (
        lambda good, p: _resaved(good, p, _nan_tensor), ("NaN or infinite",)),
    "a newer format version": (
        lambda good, p: _resaved(good, p, lambda d: d.update(version=3)),
        ("format version 3", "update napari-hq-sam")),
    "pickled code": (
        lambda good, p: torch.save({"format": "napari-hq-sam-adapter", "hook": _Code()}, p),
        ("not a readable adapter file",)),
    "trained for another model type": (
        lambda good, p: _resaved(good, p, lambda d: d.update(model_type="vit_b")),
        ("trained for vit_b, not vit_tiny",)),
    "trained on another base checkpoint": (
        lambda good, p: _resaved(good, p, lambda d: d.update(base_sha256="0" * 64)),
        ("another base checkpoint", "use the checkpoint it was trained on")),
}


def _evaluate(inputs: Path, checkpoint: Path, adapter: Path):
    return run_cli(["evaluate", "--image", inputs / "image.tif", "--labels",
                    inputs / "labels.tif", "--model", "vit_tiny", "--checkpoint", checkpoint,
                    "--device", "cpu", "--json", "--adapter", adapter])


@pytest.mark.parametrize("case", list(DAMAGED))
def test_damaged_or_wrong_adapter_is_one_line_before_the_model_loads(
        case, good_adapter, inputs, tiny_checkpoint, no_model):
    make, fragments = DAMAGED[case]
    bad = inputs / "adapter.pt"
    make(good_adapter, bad)
    before = snapshot(inputs)
    line = assert_user_error(_evaluate(inputs, tiny_checkpoint, bad), str(bad), *fragments)
    assert line.startswith("hqsam evaluate: error: ")
    assert snapshot(inputs) == before and leftovers(inputs) == []


def test_a_full_checkpoint_a_folder_or_no_file(inputs, tiny_checkpoint, no_model):
    checkpoint_copy = inputs / "sam_hq_vit_tiny.pth"
    shutil.copy(tiny_checkpoint, checkpoint_copy)
    assert_user_error(_evaluate(inputs, tiny_checkpoint, checkpoint_copy), str(checkpoint_copy),
                      "not a napari-hq-sam adapter", "--checkpoint")
    assert_user_error(_evaluate(inputs, tiny_checkpoint, inputs), str(inputs), "is a folder")
    missing = inputs / "missing.pt"
    assert_user_error(_evaluate(inputs, tiny_checkpoint, missing), str(missing), "not found")


def test_bytes_flipped_anywhere_never_load(good_adapter, tmp_path):
    """A damaged adapter never loads, wherever the damage is (every 64 KiB)."""
    data = good_adapter.read_bytes()
    for start in range(0, len(data), 65536):
        bad = tmp_path / f"flipped_{start}.pt"
        bad.write_bytes(_flip(data, start))
        with pytest.raises(AdapterError, match=bad.name):
            read_adapter(bad)


def test_full_disk_while_writing_keeps_the_old_adapter(trained, tiny_model, tiny_checkpoint,
                                                       tmp_path, monkeypatch):
    out = save_adapter(tiny_model, tmp_path / "a.pt", base_checkpoint=tiny_checkpoint)
    old = snapshot(tmp_path)

    def disk_full(fd):  # where delayed allocation reports a full disk: on flushing to it
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OutputError) as info:
        save_adapter(trained, out, base_checkpoint=tiny_checkpoint)
    monkeypatch.undo()
    assert str(out) in str(info.value) and "No space left" in str(info.value)
    assert snapshot(tmp_path) == old and leftovers(tmp_path) == []


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_a_writer_killed_mid_write_leaves_the_old_adapter_whole(tiny_model, tiny_checkpoint,
                                                                tmp_path):
    out = save_adapter(tiny_model, tmp_path / "a.pt", base_checkpoint=tiny_checkpoint)
    old = out.read_bytes()
    script = textwrap.dedent(f"""
        import os, signal
        import torch
        from napari_hq_sam import build_hq_sam
        from napari_hq_sam.adapters import save_adapter
        model = build_hq_sam("vit_tiny", {str(tiny_checkpoint)!r})
        with torch.no_grad():
            model.mask_decoder.hf_token.weight.add_(1.0)
        def killed(fd):  # the temporary file is written, not yet renamed: die here
            os.kill(os.getpid(), signal.SIGKILL)
        os.fsync = killed
        save_adapter(model, {str(out)!r}, base_checkpoint={str(tiny_checkpoint)!r})
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == -9, done.stderr
    assert out.read_bytes() == old  # the target is the old adapter, whole
    partial = [p for p in tmp_path.iterdir() if p.name.startswith(".a.pt.partial-")]
    assert len(partial) == 1  # a killed process cannot clean up; the next write does
    os.utime(partial[0], (0, 0))
    save_adapter(tiny_model, out, base_checkpoint=tiny_checkpoint)
    assert leftovers(tmp_path) == [] and read_adapter(out).version == 2
    assert torch.equal(read_adapter(out).state_dict["mask_decoder.hf_token.weight"],
                       hq_state_dict(tiny_model)["mask_decoder.hf_token.weight"])
