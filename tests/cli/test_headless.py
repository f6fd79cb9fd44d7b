"""The core install works without napari or Qt: imports and ``hqsam segment`` in a Python
that refuses to import any GUI package, as on a server where only the core is installed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import tifffile

SAMPLE = Path(__file__).resolve().parents[2] / "src" / "napari_hq_sam" / "_sample_data"
GUI_MODULES = ("napari", "qtpy", "magicgui", "PyQt5", "PyQt6", "PySide2", "PySide6")

# Installed first in the child: any import of a GUI package (or one of its submodules)
# fails as if it were not installed.
BLOCK_GUI = textwrap.dedent(f"""
    import importlib.abc
    import sys

    BLOCKED = {set(GUI_MODULES)!r}
    loaded = sorted(BLOCKED & {{name.partition(".")[0] for name in sys.modules}})
    if loaded:
        raise SystemExit(f"GUI modules loaded before the test started: {{loaded}}")


    class NoGui(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}} (headless test)",
                                          name=name)
            return None


    sys.meta_path.insert(0, NoGui())
""")

# Every module of the package outside _widget, found on disk (no package is imported to
# look into it, so _widget's __init__ is never touched).
IMPORT_ALL = textwrap.dedent("""
    import importlib
    import json
    import pkgutil

    import napari_hq_sam

    def walk(paths, prefix):
        for info in pkgutil.iter_modules(paths, prefix):
            if info.name.rpartition(".")[2] == "_widget":
                continue
            yield info.name
            if info.ispkg:
                yield from walk([info.module_finder.path + "/" + info.name.rpartition(".")[2]],
                                info.name + ".")

    names = sorted(walk(napari_hq_sam.__path__, "napari_hq_sam."))
    for name in names:
        importlib.import_module(name)
    blocked = []
    for gui in BLOCKED:
        try:
            importlib.import_module(gui)
        except ImportError:
            blocked.append(gui)
    print(json.dumps({"imported": names, "blocked": sorted(blocked)}))
""")


def run_headless(code: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter that cannot import GUI packages."""
    return subprocess.run([sys.executable, "-c", BLOCK_GUI + code], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def test_every_module_outside_the_widgets_imports_without_gui(tmp_path):
    done = run_headless(IMPORT_ALL, tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["blocked"] == sorted(GUI_MODULES)  # the child really had no GUI package
    imported = result["imported"]
    assert {"napari_hq_sam.cli", "napari_hq_sam.engine", "napari_hq_sam.model",
            "napari_hq_sam.testing"} <= set(imported)
    assert any(name.startswith("napari_hq_sam.engine.") for name in imported)
    assert any(name.startswith("napari_hq_sam.commands.") for name in imported)
    assert not [name for name in imported if "_widget" in name]


def test_segment_command_writes_labels_without_gui(tmp_path, tiny_checkpoint, nuclei3d):
    out = tmp_path / "labels.tif"
    argv = ["segment", str(SAMPLE / "nuclei3d_image.tif"),
            "--prompts", str(SAMPLE / "nuclei3d_boxes.csv"), "--model", "vit_tiny",
            "--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--out", str(out),
            "--quiet"]
    done = run_headless(f"from napari_hq_sam.cli import main\nsys.exit(main({argv!r}))\n",
                        tmp_path)
    assert done.returncode == 0, done.stderr
    assert "segmented 2 slices, 3 objects" in done.stdout
    labels = tifffile.imread(out)
    assert labels.shape == nuclei3d.shape
    # the three bundled boxes lie on slices 10 (ids 1, 2) and 20 (id 3)
    assert np.flatnonzero(labels.any(axis=(1, 2))).tolist() == [10, 20]
    assert set(np.unique(labels[20])) == {0, 3}
    assert set(np.unique(labels[10])) - {0} <= {1, 2}

