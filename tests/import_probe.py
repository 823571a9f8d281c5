"""One probe for "importing this loads nothing heavy": run the imports in a fresh interpreter
(this test process has long loaded torch) and report which top-level packages it loaded.

The static side of the same rule is the `startup-imports-nothing-heavy` import-linter contract
(pyproject.toml); this probe checks what really happens at run time, e.g. imports made by
code that runs while a module is imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "onnxruntime", "onnx")
QT = ("PySide6", "shiboken6", "pyqtgraph")


def loaded_after(code: str, env_extra: dict[str, str] | None = None) -> set[str]:
    """Top-level package names in sys.modules after running `code` in a fresh interpreter."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_extra or {})
    probe = code + "\nimport sys, json\nprint('MODULES=' + json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300,
                         cwd=str(REPO))
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("MODULES="))
    return {m.split(".")[0] for m in json.loads(line[len("MODULES="):])}


def heavy_loaded_by(*modules: str, also: tuple[str, ...] = (), qt: bool = True) -> list[str]:
    """The heavy packages (torch & co., Qt unless `qt=False`, and `also`) that importing
    `modules` loads; [] is the expected answer for anything on the CLI's or GUI's start-up path."""
    top = loaded_after("\n".join(f"import {m}" for m in modules))
    return sorted(top & set(HEAVY + (QT if qt else ()) + also))
