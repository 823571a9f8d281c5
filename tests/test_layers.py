"""Layering: the import-linter contracts in pyproject.toml, plus what start-up really loads.

- `lint-imports` keeps every contract (layers, Qt only in relman/ui, nothing heavy imported at
  start-up); a broken contract fails this test with import-linter's report;
- each `relman/commands/*_cmds.py` imports on its own in a fresh interpreter (no cycle through
  relman.cli);
- fresh interpreters (tests/import_probe.py) confirm that `relman.catalog`, `relman.cli`, the
  GUI's start-up module, and the main window built on a real catalog load neither torch,
  transformers nor onnxruntime (nor Qt, for the CLI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from import_probe import HEAVY, REPO, heavy_loaded_by, loaded_after


def lint_imports(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if exe is None:
        pytest.fail("lint-imports is not installed (pip install -r requirements-dev.txt)")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(cwd), str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.run([exe, "--no-cache", *args], capture_output=True, text=True, cwd=str(cwd), env=env,
                          timeout=300)


def test_import_contracts_are_kept():
    out = lint_imports()
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout
    for name in ("layers: imports point downwards only", "Qt (PySide6, shiboken6, pyqtgraph) only in relman.ui",
                 "start-up modules import no heavy library", "catalog layers: catalog > staging > integrity"):
        assert name in out.stdout.replace("\n", " "), f"contract '{name}' was not checked"


def test_the_import_time_contract_follows_module_level_imports_only(tmp_path):
    """The custom contract type on a planted package: a module-level chain to the forbidden
    module is reported with its lines; the same import inside a function, or under
    TYPE_CHECKING, is not."""
    pkg = tmp_path / "plant"
    pkg.mkdir()
    files = {
        "__init__.py": "",
        "heavy.py": "",
        "mid.py": "import plant.heavy\n",
        "chained.py": "from plant import mid\n",
        "lazy.py": "def f():\n    import plant.heavy\n",
        "typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import plant.heavy\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text, encoding="utf-8")
    (tmp_path / "contracts.toml").write_text(
        '[tool.importlinter]\nroot_package = "plant"\nexclude_type_checking_imports = true\n'
        'contract_types = ["import_time_forbidden: devtools.import_contracts.ImportTimeForbiddenContract"]\n'
        '[[tool.importlinter.contracts]]\nname = "planted"\ntype = "import_time_forbidden"\n'
        'source_modules = ["plant.chained", "plant.lazy", "plant.typed"]\nforbidden_modules = ["plant.heavy"]\n',
        encoding="utf-8")
    out = lint_imports("--config", str(tmp_path / "contracts.toml"), cwd=tmp_path)
    assert out.returncode == 1, out.stdout
    report = out.stdout
    assert "importing plant.chained imports plant.heavy" in report
    assert "plant.chained -> plant.mid (l.1)" in report and "plant.mid -> plant.heavy (l.1)" in report
    assert "plant.lazy" not in report and "plant.typed" not in report


def test_the_catalog_layers_contract_fails_when_the_audit_circle_comes_back(tmp_path):
    """The repository's `catalog-layers` contract on a copy of relman/catalog: kept as it is,
    broken once a lower module (the anchor) imports `catalog.py` again, even lazily inside a
    function, which is how the circle catalog -> anchor/integrity -> catalog once closed."""
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["id"] == "catalog-layers")
    pkg = tmp_path / "relman"
    shutil.copytree(REPO / "relman" / "catalog", pkg / "catalog", ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "__init__.py").write_text("", encoding="utf-8")
    layers = ", ".join(f'"{layer}"' for layer in contract["layers"])
    (tmp_path / "contracts.toml").write_text(
        '[tool.importlinter]\nroot_package = "relman"\nexclude_type_checking_imports = true\n'
        f'[[tool.importlinter.contracts]]\nname = "planted catalog layers"\ntype = "layers"\n'
        f'containers = ["relman.catalog"]\nlayers = [{layers}]\n', encoding="utf-8")
    kept = lint_imports("--config", str(tmp_path / "contracts.toml"), cwd=tmp_path)
    assert kept.returncode == 0, kept.stdout[-4000:] + kept.stderr[-2000:]
    with open(pkg / "catalog" / "anchor.py", "a", encoding="utf-8") as f:
        f.write("\n\ndef _planted_upward_import():\n    from relman.catalog.catalog import utcnow\n    return utcnow()\n")
    broken = lint_imports("--config", str(tmp_path / "contracts.toml"), cwd=tmp_path)
    assert broken.returncode == 1, broken.stdout
    assert "relman.catalog.anchor is not allowed to import relman.catalog.catalog" in broken.stdout


def command_modules() -> list[str]:
    return sorted(p.stem for p in (REPO / "relman" / "commands").glob("*_cmds.py"))


@pytest.mark.parametrize("module", command_modules())
def test_each_command_module_imports_on_its_own(module):
    top = loaded_after(f"import relman.commands.{module} as m\nassert m.COMMANDS, 'no COMMANDS'")
    assert "relman" in top


@pytest.mark.parametrize("module", ["relman.catalog", "relman.cli"])
def test_core_and_cli_start_up_import_nothing_heavy_and_no_qt(module):
    assert heavy_loaded_by(module) == []


def test_gui_start_up_module_imports_no_heavy_library():
    assert heavy_loaded_by("relman.ui.app", "relman.ui.qt_main", qt=False) == []


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
