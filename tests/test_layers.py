"""Layering, checked in fresh interpreters: what start-up imports.

- `relman.catalog` and `relman.cli` (the CLI's start-up import) pull in neither torch,
  transformers, onnxruntime nor Qt;
- every other package below the UI imports no Qt (scanned: no module under relman/ outside
  relman/ui mentions PySide6 or pyqtgraph in an import);
- the GUI's start-up module, and the main window built on a real catalog, import no torch,
  transformers or onnxruntime.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "onnxruntime", "onnx", "captum")
QT = ("PySide6", "pyqtgraph")


def loaded_after(code: str, env_extra: dict[str, str] | None = None) -> set[str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_extra or {})
    probe = code + "\nimport sys, json\nprint('MODULES=' + json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("MODULES="))
    return {m.split(".")[0] for m in json.loads(line[len("MODULES="):])}


@pytest.mark.parametrize("stmt", ["import relman.catalog", "import relman.cli"])
def test_core_and_cli_start_up_import_nothing_heavy_and_no_qt(stmt):
    top = loaded_after(stmt)
    assert not top & set(HEAVY), f"{stmt} imported {sorted(top & set(HEAVY))}"
    assert not top & set(QT), f"{stmt} imported {sorted(top & set(QT))}"


def test_only_relman_ui_imports_qt():
    offenders = []
    for path in (REPO / "relman").rglob("*.py"):
        if (REPO / "relman" / "ui") in path.parents:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] in QT for n in names):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders


def test_gui_start_up_module_imports_no_heavy_library():
    top = loaded_after("import relman.ui.app, relman.ui.qt_main")
    assert not top & set(HEAVY), sorted(top & set(HEAVY))


def test_main_window_on_a_real_catalog_imports_no_heavy_library(tmp_path, tiny_vit):
    from relman.app.models import import_model
    from relman.catalog import Metric, open_catalog

    cat = open_catalog(tmp_path / "cat")
    v = import_model(cat, tiny_vit, "digits-vit")
    cat.add_metrics(v.id, [Metric("quality", "accuracy", 0.9)])
    cat.close()
    code = (
        "from relman.ui.app import close_window, open_window, screenshots\n"
        f"app, w = open_window({str(tmp_path / 'cat')!r}, headless=True)\n"
        f"screenshots(w, __import__('pathlib').Path({str(tmp_path / 'shots')!r}))\n"
        "close_window(app, w)\n"
    )
    top = loaded_after(code, {"QT_QPA_PLATFORM": "offscreen", "RELMAN_GUI_SETTINGS": str(tmp_path / "gui.ini")})
    assert "PySide6" in top and "pyqtgraph" in top  # the probe really built the window
    assert not top & set(HEAVY), sorted(top & set(HEAVY))
