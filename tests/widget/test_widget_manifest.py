"""The npe2 manifest: it validates, every widget docks and every sample loads in a viewer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_hq_sam._sample_data import SAMPLE_DIR

PLUGIN = "napari-hq-sam"
ROOT = Path(__file__).resolve().parents[2]


def manifest():
    from npe2 import PluginManifest

    return PluginManifest.from_distribution(PLUGIN)


def test_manifest_validates_and_is_the_top_level_one():
    from npe2 import PluginManifest

    pm = manifest()
    assert pm.name == PLUGIN
    pm.validate_imports()  # every python_name resolves
    top = ROOT / "napari.yaml"
    assert top.is_symlink() and top.resolve() == (ROOT / "src/napari_hq_sam/napari.yaml")
    assert PluginManifest.from_file(top).name == PLUGIN
    commands = {c.id for c in pm.contributions.commands}
    for item in [*pm.contributions.widgets, *pm.contributions.sample_data]:
        assert item.command in commands


def test_every_widget_docks(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((2, 32, 32)), name="img")
    widgets = manifest().contributions.widgets
    assert any(w.display_name == "HQ-SAM segmentation" for w in widgets)
    for contribution in widgets:
        _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, contribution.display_name)
        assert widget in viewer.window.dock_widgets.values()
    assert len(viewer.window.dock_widgets) >= len(widgets)


EXPECTED = {
    "nuclei2d": [("nuclei2d", "nuclei2d_image.tif"),
                 ("nuclei2d ground truth", "nuclei2d_labels.tif")],
    "nuclei3d": [("nuclei3d", "nuclei3d_image.tif"),
                 ("nuclei3d ground truth", "nuclei3d_labels.tif")],
    "mri_brain": [("MRI brain", "mri_brain_stack.tif")],
}


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_every_sample_loads(make_napari_viewer, key):
    viewer = make_napari_viewer()
    assert key in {s.key for s in manifest().contributions.sample_data}
    viewer.open_sample(PLUGIN, key)
    assert [layer.name for layer in viewer.layers] == [name for name, _ in EXPECTED[key]]
    for name, filename in EXPECTED[key]:
        np.testing.assert_array_equal(viewer.layers[name].data,
                                      tifffile.imread(SAMPLE_DIR / filename))
    kinds = {type(layer).__name__ for layer in viewer.layers}
    assert kinds == ({"Image", "Labels"} if len(EXPECTED[key]) == 2 else {"Image"})


def test_samples_ship_with_their_licences():
    names = {p.name for p in SAMPLE_DIR.iterdir()}
    assert {"LICENSE-stardist.txt", "LICENSE-nibabel.txt"} <= names
    assert (ROOT / "sample_data").resolve() == SAMPLE_DIR
