"""Adapter files: only the HQ tensors, round trip, refusal on a wrong base or model type."""

from __future__ import annotations

import copy
import hashlib

import pytest
import torch

from napari_hq_sam import build_hq_sam
from napari_hq_sam.adapters import AdapterError, load_adapter, read_adapter, save_adapter
from napari_hq_sam.errors import MissingFileError
from napari_hq_sam.model import HQ_KEY_PREFIXES
from napari_hq_sam.testing import write_random_checkpoint
from napari_hq_sam.weights import file_sha256


@pytest.fixture()
def trained(tiny_model):
    """A copy of the tiny model whose HQ tensors were changed, as training would."""
    model = copy.deepcopy(tiny_model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.mask_decoder.hq_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model


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
