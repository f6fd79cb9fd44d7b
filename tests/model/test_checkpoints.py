"""Loading official-format checkpoints: strict keys and the errors users meet."""

from __future__ import annotations

import pickle

import pytest
import torch

from napari_hq_sam import CheckpointError, build_hq_sam
from napari_hq_sam.errors import MissingFileError
from napari_hq_sam.model import HQ_MODULE_NAMES, MODEL_TYPES, detect_model_type
from napari_hq_sam.testing import reference_state_dict, write_random_checkpoint

# HQ parameter counts published for each backbone (HQSAM.md).
HQ_PARAMS = {"vit_tiny": 448_512, "vit_b": 1_071_104, "vit_l": 1_333_248, "vit_h": 1_595_392}


@pytest.mark.parametrize("model_type", ["vit_tiny", "vit_b"])
def test_keys_and_shapes_equal_the_official_model(model_type):
    ours = build_hq_sam(model_type).state_dict()
    ref = reference_state_dict(model_type)
    assert set(ours) == set(ref)
    shapes = {k: tuple(v.shape) for k, v in ours.items()}
    assert shapes == {k: tuple(v.shape) for k, v in ref.items()}
    assert detect_model_type(ours) == model_type


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_hq_parameter_count_matches_the_paper(model_type):
    decoder = build_hq_sam(model_type).mask_decoder
    assert sum(p.numel() for p in decoder.hq_parameters()) == HQ_PARAMS[model_type]
    hq_keys = [k for k in decoder.state_dict() if k.split(".")[0] in HQ_MODULE_NAMES]
    assert len(hq_keys) == 25


def test_loading_restores_every_tensor(tiny_checkpoint):
    model = build_hq_sam("vit_tiny", tiny_checkpoint)
    saved = torch.load(tiny_checkpoint, weights_only=True)
    state = model.state_dict()
    for key, value in saved.items():
        assert torch.equal(state[key], value), key
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())


def test_plain_sam_checkpoint_is_named_as_such(tmp_path):
    path = write_random_checkpoint(tmp_path / "sam_vit_tiny.pth", "vit_tiny", drop_hq_keys=True)
    with pytest.raises(CheckpointError) as err:
        build_hq_sam("vit_tiny", path)
    message = str(err.value)
    assert "plain SAM checkpoint" in message and "25 HQ-SAM keys" in message
    assert "sam_hq_vit_tiny.pth" in message and "hqsam download vit_tiny" in message
    assert str(path) in message


def test_checkpoint_of_another_backbone(tiny_checkpoint):
    with pytest.raises(CheckpointError, match="holds vit_tiny weights, not vit_b"):
        build_hq_sam("vit_b", tiny_checkpoint)


def test_truncated_checkpoint(tmp_path, tiny_checkpoint):
    truncated = tmp_path / "sam_hq_vit_tiny.pth"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[: 5_000_000])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint") as err:
        build_hq_sam("vit_tiny", truncated)
    assert str(truncated) in str(err.value)


def test_non_checkpoint_file(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("this is not a checkpoint\n" * 100)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        build_hq_sam("vit_tiny", text)


def test_missing_path(tmp_path):
    with pytest.raises(MissingFileError, match="Checkpoint file not found") as err:
        build_hq_sam("vit_tiny", tmp_path / "nowhere.pth")
    assert "hqsam download vit_tiny" in str(err.value)


def test_unknown_model_type():
    with pytest.raises(ValueError, match="choose one of vit_tiny, vit_b, vit_l, vit_h"):
        build_hq_sam("vit_x")


class _Payload:
    """Unpickling this would run code; weights_only loading must refuse it."""

    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_checkpoint_that_runs_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    torch.save({"image_encoder.x": _Payload()}, path, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(CheckpointError):
        build_hq_sam("vit_tiny", path)
    assert not (tmp_path / "PWNED").exists()


def test_state_dict_with_missing_sam_keys(tmp_path):
    state = reference_state_dict("vit_tiny")
    del state["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"]
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="1 keys missing"):
        build_hq_sam("vit_tiny", path)


def test_non_tensor_content(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="does not hold a state dict of tensors"):
        build_hq_sam("vit_tiny", path)
