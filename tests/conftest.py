"""Shared fixtures: official-format random checkpoints and the bundled sample images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_hq_sam.testing import write_random_checkpoint

# The package's own sample data (also reachable through the ``sample_data`` link).
DATA = Path(__file__).resolve().parents[1] / "src" / "napari_hq_sam" / "_sample_data"


def data_file(name: str) -> Path:
    """Path of a bundled sample file."""
    path = DATA / name
    if not path.is_file():
        raise FileNotFoundError(f"sample file {name} not found in {DATA}")
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """vit_tiny checkpoint in the official format, random perturbed weights."""
    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "sam_hq_vit_tiny.pth",
                                   "vit_tiny", seed=1)


@pytest.fixture(scope="session")
def vit_b_checkpoint(tmp_path_factory) -> Path:
    """vit_b checkpoint in the official format, random perturbed weights."""
    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "sam_hq_vit_b.pth",
                                   "vit_b", seed=2)


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    """vit_tiny HQSam on the CPU, loaded from :func:`tiny_checkpoint`."""
    from napari_hq_sam import build_hq_sam

    return build_hq_sam("vit_tiny", tiny_checkpoint)


@pytest.fixture(scope="session")
def nuclei2d() -> np.ndarray:
    """(512, 512) uint16 fluorescence nuclei."""
    return tifffile.imread(data_file("nuclei2d_image.tif"))


@pytest.fixture(scope="session")
def nuclei2d_labels() -> np.ndarray:
    """(512, 512) uint16 ground-truth instance labels of :func:`nuclei2d`, 125 nuclei."""
    return tifffile.imread(data_file("nuclei2d_labels.tif"))


@pytest.fixture(scope="session")
def nuclei3d() -> np.ndarray:
    """(31, 61, 57) ZYX uint16 nuclei stack."""
    return tifffile.imread(data_file("nuclei3d_image.tif"))


@pytest.fixture(scope="session")
def nuclei3d_labels() -> np.ndarray:
    """(31, 61, 57) ZYX ground-truth labels of :func:`nuclei3d`, 51 nuclei."""
    return tifffile.imread(data_file("nuclei3d_labels.tif"))


@pytest.fixture(scope="session")
def mri_stack() -> np.ndarray:
    """(24, 96, 128) ZYX int16 brain MRI."""
    return tifffile.imread(data_file("mri_brain_stack.tif"))
