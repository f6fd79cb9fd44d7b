"""What the package imports matches what pyproject.toml declares, and only the widgets use Qt.

The source files are read with :mod:`ast`, not imported, so these checks hold for
whatever modules exist under ``src/napari_hq_sam`` and need neither napari nor torch.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "napari_hq_sam"
WIDGET = PACKAGE / "_widget"

# GUI packages: only the napari widgets (src/napari_hq_sam/_widget) may import them, so that
# the core install runs the engine, CLI and Dask path on a machine without a display.
GUI_MODULES = {"napari", "qtpy", "magicgui", "superqt", "PyQt5", "PyQt6", "PySide2", "PySide6"}

# import name -> (distribution, extra that must be requested), where the two differ
DISTRIBUTIONS = {
    "skimage": ("scikit-image", None),
    "yaml": ("pyyaml", None),
    "PIL": ("pillow", None),
    "sklearn": ("scikit-learn", None),
    "cv2": ("opencv-python", None),
    "segment_anything": ("segment-anything", None),
    "segment_anything_hq": ("segment-anything-hq", None),
    "distributed": ("dask", "distributed"),
}

# Declared but never imported by name: the Qt binding, which the widgets reach through qtpy.
USED_INDIRECTLY = {"pyqt6"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def _requirements(extra: str | None = None) -> list[Requirement]:
    """Requirements of the core install, or of ``extra`` with its self-references expanded."""
    project = _pyproject()
    entries = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    out = []
    for entry in entries:
        req = Requirement(entry)
        if _canonical(req.name) == _canonical(project["name"]):
            for inner in req.extras:
                out.extend(_requirements(inner))
        else:
            out.append(req)
    return out


def _satisfies(module: str, requirements: list[Requirement]) -> bool:
    """Whether a requirement in ``requirements`` installs top-level module ``module``."""
    dist, extra = DISTRIBUTIONS.get(module, (module, None))
    return any(_canonical(r.name) == _canonical(dist) and (extra is None or extra in r.extras)
               for r in requirements)


def _is_import_guard(handler: ast.ExceptHandler) -> bool:
    names = {"ImportError", "ModuleNotFoundError"}
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(k, ast.Name) and k.id in names for k in kinds)


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(top-level module, line, required)`` for every absolute import in ``path``.

    An import is not required when it sits in a ``try`` that catches ImportError
    (an optional package) or under ``if TYPE_CHECKING:`` (annotations only).
    """
    found = []

    def visit(node: ast.AST, required: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend((a.name.partition(".")[0], node.lineno, required) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module.partition(".")[0], node.lineno, required))
        if isinstance(node, ast.Try) and any(_is_import_guard(h) for h in node.handlers):
            for child in node.body:
                visit(child, False)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, required)
            return
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                visit(child, False)
            for child in node.orelse:
                visit(child, required)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, required)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), True)
    return found


def _third_party(path: Path) -> list[tuple[str, int, bool]]:
    return [(m, line, req) for m, line, req in _imports(path)
            if m not in sys.stdlib_module_names and m != "napari_hq_sam"]


def _sources(widget: bool) -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert files, f"no sources under {PACKAGE}"
    return [f for f in files if (WIDGET in f.parents) == widget]


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def test_the_import_scan_sees_guards_and_relative_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "from __future__ import annotations\nimport numpy as np\nfrom . import x\n"
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import napari\n"
        "def f():\n    try:\n        import segment_anything_hq\n    except ImportError:\n"
        "        import torch.nn\n    from skimage.io import imread\n")
    assert _third_party(source) == [("numpy", 2, True), ("napari", 6, False),
                                    ("segment_anything_hq", 9, False), ("torch", 11, True),
                                    ("skimage", 12, True)]
    core = [Requirement("scikit-image>=0.2"), Requirement("dask[distributed]")]
    assert _satisfies("skimage", core) and _satisfies("distributed", core)
    assert not _satisfies("distributed", [Requirement("dask")])
    assert not _satisfies("numpy", core)


def test_only_the_widgets_import_napari_or_qt():
    offenders = [f"{_where(path, line)} imports {module}"
                 for path in _sources(widget=False)
                 for module, line, _ in _imports(path) if module in GUI_MODULES]
    assert not offenders, "GUI imports outside _widget:\n" + "\n".join(offenders)


def test_core_modules_import_only_core_dependencies():
    core = _requirements()
    missing = [f"{_where(path, line)} imports {module}"
               for path in _sources(widget=False)
               for module, line, required in _third_party(path)
               if required and not _satisfies(module, core)]
    assert not missing, "not in [project] dependencies:\n" + "\n".join(missing)


def test_widget_modules_import_only_core_or_napari_extra_dependencies():
    declared = _requirements() + _requirements("napari")
    missing = [f"{_where(path, line)} imports {module}"
               for path in _sources(widget=True)
               for module, line, required in _third_party(path)
               if required and not _satisfies(module, declared)]
    assert not missing, "not in dependencies or the napari extra:\n" + "\n".join(missing)


@pytest.mark.parametrize("extra", [None, "napari"])
def test_every_declared_dependency_is_imported(extra):
    """A declared package that no module imports is dead weight for every user."""
    files = _sources(widget=False) if extra is None else _sources(widget=True)
    modules = {m for path in files for m, _, _ in _third_party(path)}
    unused = [str(req) for req in _requirements(extra)
              if _canonical(req.name) not in USED_INDIRECTLY
              and not any(_satisfies(m, [req]) for m in modules)]
    assert not unused, f"declared for {extra or 'the core install'} but never imported: {unused}"


def test_core_install_has_no_gui_and_the_extras_do():
    gui = {_canonical(m) for m in GUI_MODULES}
    core = {_canonical(r.name) for r in _requirements()}
    assert not core & gui, f"GUI packages in the core install: {core & gui}"
    napari = {_canonical(r.name) for r in _requirements("napari")}
    assert {"napari", "pyqt6", "qtpy"} <= napari
    assert {_canonical(r.name) for r in _requirements("qt")} == {"pyqt6"}
    assert {str(r) for r in _requirements("all")} == {str(r) for r in _requirements("napari")}
    testing = {_canonical(r.name) for r in _requirements("testing")}
    assert {"pytest", "pytest-qt", "segment-anything-hq", "timm", "napari", "pyqt6"} <= testing


def test_napari_finds_the_manifest():
    project = _pyproject()
    assert "Framework :: napari" in project["classifiers"]
    target = project["entry-points"]["napari.manifest"]["napari-hq-sam"]
    assert target == "napari_hq_sam:napari.yaml" and (PACKAGE / "napari.yaml").is_file()
