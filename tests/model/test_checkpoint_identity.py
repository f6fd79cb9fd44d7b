"""How a checkpoint file is identified: its sha256 (stamp or memo) and its backbone."""

from __future__ import annotations

import hashlib
import os

import pytest
import torch

from napari_hq_sam import weights
from napari_hq_sam.adapters import AdapterError, read_adapter, save_adapter
from napari_hq_sam.engine.cache import model_signature
from napari_hq_sam.errors import HQSamError, MissingFileError
from napari_hq_sam.model import HQ_KEY_PREFIXES, CheckpointError
from napari_hq_sam.testing import write_random_checkpoint
from napari_hq_sam.weights import DownloadError, checkpoint_model_type, file_sha256

FAKE_SHA = "ab" * 32


@pytest.fixture()
def digests(monkeypatch):
    """Paths whose content :mod:`weights` reads to hash them, in call order."""
    calls = []
    real = weights._digest

    def counting(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(weights, "_digest", counting)
    return calls


def _blob(path, n=300_000, seed=0):
    path.write_bytes(torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(seed),
                                   dtype=torch.uint8).numpy().tobytes())
    return path


def test_sha256_equals_hashlib(tmp_path):
    path = _blob(tmp_path / "file.bin")
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert file_sha256(str(path)) == file_sha256(tmp_path / "." / "file.bin")


def test_stamp_of_matching_size_answers_without_reading(tmp_path, digests):
    path = _blob(tmp_path / "sam_hq_vit_tiny.pth")
    (tmp_path / "sam_hq_vit_tiny.pth.verified").write_text(f"{FAKE_SHA} {path.stat().st_size}\n")
    assert file_sha256(path) == FAKE_SHA
    assert digests == []


def test_stamp_of_another_size_is_ignored(tmp_path, digests):
    path = _blob(tmp_path / "ckpt.pth")
    (tmp_path / "ckpt.pth.verified").write_text(f"{FAKE_SHA} {path.stat().st_size + 1}\n")
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert len(digests) == 1


def test_unchanged_file_is_read_once_and_a_new_mtime_rehashes(tmp_path, digests):
    path = _blob(tmp_path / "ckpt.pth", seed=1)
    first = file_sha256(path)
    assert file_sha256(path) == first
    assert len(digests) == 1
    _blob(path, seed=2)  # same size, new content
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = file_sha256(path)
    assert len(digests) == 2
    assert second == hashlib.sha256(path.read_bytes()).hexdigest() != first


def test_missing_file(tmp_path):
    with pytest.raises(MissingFileError, match="File not found"):
        file_sha256(tmp_path / "nowhere.pth")


def test_signature_and_adapter_record_the_same_digest(tiny_model, tiny_checkpoint, tmp_path):
    expected = hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    signature = model_signature(tiny_model, tiny_checkpoint)
    adapter = read_adapter(save_adapter(tiny_model, tmp_path / "a.pt",
                                        base_checkpoint=tiny_checkpoint))
    assert signature["checkpoint_sha256"] == adapter.base_sha256 == expected


def test_signature_and_adapter_honour_the_download_stamp(tiny_model, tiny_checkpoint, tmp_path,
                                                         digests):
    # A verified download is never re-read: both consumers take the stamp's hash.
    path = tmp_path / "sam_hq_vit_tiny.pth"
    path.write_bytes(tiny_checkpoint.read_bytes())
    (tmp_path / "sam_hq_vit_tiny.pth.verified").write_text(f"{FAKE_SHA} {path.stat().st_size}\n")
    adapter = read_adapter(save_adapter(tiny_model, tmp_path / "a.pt", base_checkpoint=path))
    assert model_signature(tiny_model, path)["checkpoint_sha256"] == FAKE_SHA
    assert adapter.base_sha256 == FAKE_SHA
    assert digests == []


def test_backbone_from_keys_under_any_name(tmp_path):
    tiny = write_random_checkpoint(tmp_path / "my weights.pth", "vit_tiny", seed=3)
    assert checkpoint_model_type(tiny) == "vit_tiny"
    # vit_b/l/h are told apart by the width of the patch embedding alone.
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(1280, 3, 1, 1)},
               tmp_path / "big.pth")
    assert checkpoint_model_type(tmp_path / "big.pth") == "vit_h"


def test_official_name_answers_without_reading(tmp_path, monkeypatch):
    def no_read(*args, **kwargs):
        raise AssertionError("an official file name must not be read")

    monkeypatch.setattr(weights, "read_state_dict", no_read)
    (tmp_path / "sam_hq_vit_l.pth").write_bytes(b"\0")
    assert checkpoint_model_type(tmp_path / "sam_hq_vit_l.pth") == "vit_l"


def test_unknown_files_are_refused(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n" * 50)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        checkpoint_model_type(text)
    torch.save({"encoder.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not an HQ-SAM checkpoint of a known backbone"):
        checkpoint_model_type(tmp_path / "other.pth")
    with pytest.raises(MissingFileError):
        checkpoint_model_type(tmp_path / "sam_hq_vit_b.pth")


def test_hq_key_prefixes_select_the_hq_tensors(tiny_model):
    hq = {k: v for k, v in tiny_model.state_dict().items() if k.startswith(HQ_KEY_PREFIXES)}
    assert len(hq) == 25
    assert sum(v.numel() for v in hq.values()) == 448_512  # HQ parameters of vit_tiny


@pytest.mark.parametrize("error, builtin", [(CheckpointError, ValueError),
                                            (DownloadError, RuntimeError),
                                            (AdapterError, ValueError)])
def test_errors_are_user_errors_and_keep_their_builtin_base(error, builtin):
    assert issubclass(error, HQSamError) and issubclass(error, builtin)
