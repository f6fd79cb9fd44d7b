"""Adapter files: HQ tensors only, round trip, refusals, checksums, whole-or-nothing writes."""

from __future__ import annotations

import copy
import errno
import hashlib
import os
import time

import pytest
import torch

from napari_hq_sam import build_hq_sam
from napari_hq_sam.adapters import (
    AdapterError,
    check_adapter_output,
    hq_state_dict,
    load_adapter,
    read_adapter,
    save_adapter,
    tensors_digest,
)
from napari_hq_sam.errors import MissingFileError, OutputError
from napari_hq_sam.model import HQ_KEY_PREFIXES
from napari_hq_sam.testing import with_changed_hq, write_random_checkpoint
from napari_hq_sam.weights import file_sha256


@pytest.fixture()
def trained(tiny_model):
    """A copy of the tiny model whose HQ tensors were changed, as training would."""
    return with_changed_hq(tiny_model, seed=0)


def test_round_trip_holds_only_hq_tensors(trained, tiny_checkpoint, tmp_path):
    path = save_adapter(trained, tmp_path / "a.pt", base_checkpoint=tiny_checkpoint,
                        training={"steps": 3, "prompt_kinds": ["box"]},
                        metrics={"val": {"mIoU": 0.5}})
    assert path.stat().st_size < 8 * 2**20
    adapter = read_adapter(path)
    assert len(adapter.state_dict) == 25
    assert all(k.startswith(HQ_KEY_PREFIXES) for k in adapter.state_dict)
    n_params = sum(v.numel() for v in adapter.state_dict.values())
    assert n_params == 448_512  # HQSAM.md: HQ parameters of vit_tiny
    assert adapter.model_type == "vit_tiny"
    assert adapter.base_sha256 == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert adapter.training == {"steps": 3, "prompt_kinds": ["box"]}
    assert adapter.metrics == {"val": {"mIoU": 0.5}}

    fresh = build_hq_sam("vit_tiny", tiny_checkpoint)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    load_adapter(fresh, path, base_checkpoint=tiny_checkpoint)
    after, target = fresh.state_dict(), trained.state_dict()
    for key, value in after.items():
        assert torch.equal(value, target[key]), key
        assert torch.equal(value, before[key]) != key.startswith(HQ_KEY_PREFIXES), key


def test_refuses_another_base_checkpoint(trained, tiny_checkpoint, tmp_path):
    path = save_adapter(trained, tmp_path / "a.pt", base_checkpoint=tiny_checkpoint)
    other = write_random_checkpoint(tmp_path / "other.pth", "vit_tiny", seed=7)
    model = build_hq_sam("vit_tiny", other)
    hq_before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(AdapterError, match="another base checkpoint"):
        load_adapter(model, path, base_checkpoint=other)
    assert all(torch.equal(v, hq_before[k]) for k, v in model.state_dict().items())
    assert file_sha256(other) != read_adapter(path).base_sha256


def test_refuses_another_model_type(trained, tiny_checkpoint, tmp_path):
    path = save_adapter(trained, tmp_path / "a.pt", base_checkpoint=tiny_checkpoint)
    payload = torch.load(path, weights_only=True)
    payload["model_type"] = "vit_b"
    torch.save(payload, tmp_path / "b.pt")
    with pytest.raises(AdapterError, match="trained for vit_b, not vit_tiny"):
        load_adapter(trained, tmp_path / "b.pt", base_checkpoint=tiny_checkpoint)


def test_refuses_checkpoints_and_pickled_code(tiny_checkpoint, tiny_model, tmp_path):
    with pytest.raises(AdapterError, match="not a napari-hq-sam adapter"):
        read_adapter(tiny_checkpoint)
    torch.save({"format": "napari-hq-sam-adapter", "hook": _NotATensor()}, tmp_path / "x.pt")
    with pytest.raises(AdapterError, match="not a readable adapter"):
        read_adapter(tmp_path / "x.pt")  # weights_only=True refuses arbitrary objects
    with pytest.raises(MissingFileError, match="Adapter file not found"):
        load_adapter(tiny_model, tmp_path / "missing.pt", base_checkpoint=tiny_checkpoint)
    with pytest.raises(MissingFileError, match="Base checkpoint not found"):
        save_adapter(tiny_model, tmp_path / "a.pt", base_checkpoint=tmp_path / "none.pth")


class _NotATensor:
    pass


def test_file_records_a_checksum_of_its_tensors(trained, tiny_checkpoint, tmp_path):
    path = save_adapter(trained, tmp_path / "a.pt", base_checkpoint=tiny_checkpoint)
    payload = torch.load(path, weights_only=True)
    assert payload["version"] == 2
    state = payload["state_dict"]
    assert payload["tensors_sha256"] == tensors_digest(state) == tensors_digest(
        hq_state_dict(trained))
    # every part of a tensor counts: one value, its dtype, its shape, its name
    key = "mask_decoder.hf_token.weight"
    one_value = dict(state, **{key: state[key].clone()})
    one_value[key][0, 0] += 1e-6
    other_dtype = dict(state, **{key: state[key].double()})
    other_shape = dict(state, **{key: state[key].reshape(-1)})
    renamed = {(k + "x" if k == key else k): v for k, v in state.items()}
    digests = {tensors_digest(s) for s in (state, one_value, other_dtype, other_shape, renamed)}
    assert len(digests) == 5


def test_tensors_edited_and_saved_again_are_refused(trained, tiny_checkpoint, tmp_path):
    path = save_adapter(trained, tmp_path / "a.pt", base_checkpoint=tiny_checkpoint)
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["mask_decoder.hf_token.weight"][0, 0] += 1.0
    torch.save(payload, tmp_path / "edited.pt")  # new zip CRCs, old checksum
    model = build_hq_sam("vit_tiny", tiny_checkpoint)
    before = hq_state_dict(model)
    with pytest.raises(AdapterError, match="edited.pt is damaged or was altered"):
        load_adapter(model, tmp_path / "edited.pt", base_checkpoint=tiny_checkpoint)
    assert all(torch.equal(v, before[k]) for k, v in hq_state_dict(model).items())


def test_version_1_files_load_when_their_zip_checks_pass(trained, tiny_checkpoint, tmp_path):
    """Files of napari-hq-sam 0.1.0 carry no checksum; the zip CRC-32s verify them."""
    payload = torch.load(save_adapter(trained, tmp_path / "a.pt",
                                      base_checkpoint=tiny_checkpoint), weights_only=True)
    payload["version"] = 1
    del payload["tensors_sha256"]
    old = tmp_path / "v1.pt"
    torch.save(payload, old)
    fresh = build_hq_sam("vit_tiny", tiny_checkpoint)
    adapter = load_adapter(fresh, old, base_checkpoint=tiny_checkpoint)
    assert adapter.version == 1
    target = hq_state_dict(trained)
    assert all(torch.equal(v, target[k]) for k, v in hq_state_dict(fresh).items())

    data = bytearray(old.read_bytes())
    start = len(data) // 2
    data[start:start + 256] = bytes(b ^ 0xFF for b in data[start:start + 256])
    (tmp_path / "v1_damaged.pt").write_bytes(bytes(data))
    with pytest.raises(AdapterError, match="v1_damaged.pt is damaged .*CRC-32"):
        read_adapter(tmp_path / "v1_damaged.pt")


def test_version_2_without_checksum_and_unknown_versions_are_refused(trained, tiny_checkpoint,
                                                                     tmp_path):
    payload = torch.load(save_adapter(trained, tmp_path / "a.pt",
                                      base_checkpoint=tiny_checkpoint), weights_only=True)
    del payload["tensors_sha256"]
    torch.save(payload, tmp_path / "no_sum.pt")
    with pytest.raises(AdapterError, match="no_sum.pt is damaged or was altered"):
        read_adapter(tmp_path / "no_sum.pt")
    payload["version"] = 3
    torch.save(payload, tmp_path / "v3.pt")
    with pytest.raises(AdapterError, match="version 3; this napari-hq-sam reads versions 1, 2"):
        read_adapter(tmp_path / "v3.pt")


def test_non_finite_tensors_are_neither_written_nor_read(trained, tiny_checkpoint, tmp_path):
    broken = copy.deepcopy(trained)
    with torch.no_grad():
        broken.mask_decoder.hf_token.weight[0, 0] = float("nan")
    with pytest.raises(AdapterError, match="NaN or infinite"):
        save_adapter(broken, tmp_path / "nan.pt", base_checkpoint=tiny_checkpoint)
    assert list(tmp_path.iterdir()) == []
    path = save_adapter(trained, tmp_path / "a.pt", base_checkpoint=tiny_checkpoint)
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["mask_decoder.hf_token.weight"][0, 0] = float("inf")
    payload["tensors_sha256"] = tensors_digest(payload["state_dict"])
    torch.save(payload, tmp_path / "inf.pt")
    with pytest.raises(AdapterError, match="inf.pt holds NaN or infinite values"):
        read_adapter(tmp_path / "inf.pt")


def test_write_replaces_whole_or_not_at_all(trained, tiny_model, tiny_checkpoint, tmp_path,
                                            monkeypatch):
    path = save_adapter(tiny_model, tmp_path / "a.pt", base_checkpoint=tiny_checkpoint)
    old = path.read_bytes()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OutputError, match=r"cannot write adapter .*a\.pt: No space left"):
        save_adapter(trained, path, base_checkpoint=tiny_checkpoint)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]

    with pytest.raises(OutputError, match="exists; use --overwrite"):
        save_adapter(trained, path, base_checkpoint=tiny_checkpoint, overwrite=False)
    save_adapter(trained, path, base_checkpoint=tiny_checkpoint)
    target = hq_state_dict(trained)
    assert all(torch.equal(v, target[k]) for k, v in read_adapter(path).state_dict.items())


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(trained, tiny_checkpoint,
                                                                      tmp_path):
    stale = tmp_path / ".a.pt.partial-0123abcd"
    stale.write_bytes(b"half an adapter")
    fresh = tmp_path / ".a.pt.partial-4567cdef"  # a writer at work right now
    fresh.write_bytes(b"being written")
    hour_ago = time.time() - 3600
    os.utime(stale, (hour_ago, hour_ago))
    save_adapter(trained, tmp_path / "a.pt", base_checkpoint=tiny_checkpoint)
    assert sorted(p.name for p in tmp_path.iterdir()) == [fresh.name, "a.pt"]


def test_output_checks(tmp_path):
    assert check_adapter_output(tmp_path / "new" / "deeper" / "a.pt") == (
        tmp_path / "new" / "deeper" / "a.pt")
    assert not (tmp_path / "new").exists()  # checked, not created
    with pytest.raises(OutputError, match="is a folder: give a file name in it"):
        check_adapter_output(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="file is a file, not a folder"):
        check_adapter_output(tmp_path / "file" / "a.pt")
    with pytest.raises(OutputError, match="exists; use --overwrite"):
        check_adapter_output(tmp_path / "file")
    assert check_adapter_output(tmp_path / "file", overwrite=True) == tmp_path / "file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # no probe left
