"""Every "module:attr" target a registry names resolves, and none points up the layers.

Registries name implementations as strings (so listing them imports nothing heavy), which
import-linter cannot see; this test is their contract. A target may name its own layer or a
lower one; the few that still point up are listed in UPWARD with the reason, so a new one fails.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from relman import targets
from relman.errors import RelmanError

ROOT = Path(__file__).resolve().parent.parent
_LAYERS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]["layers"]
RANK = {name.strip(): len(_LAYERS) - i for i, layer in enumerate(_LAYERS) for name in layer.split(":")}

# Known upward names, each a (registry layer, target module prefix) pair with its reason. None
# now: the app's job kinds are registered from relman.app (relman/app/job_kinds.py).
UPWARD: set[tuple[str, str]] = set()


def layer_of(module: str) -> str:
    return module.split(".")[1]


def registered() -> list[tuple[str, str]]:
    """(registry layer, target) for every registry that lives below the UI."""
    from relman.app.job_kinds import APP_KINDS
    from relman.compress.registry import all_recipes
    from relman.data.formats import READERS
    from relman.evaluate.registry import SUITES
    from relman.jobs.kinds import EXCLUSIVE, JOB_KINDS
    from relman.modelio.loading import MATERIALIZERS, RUNNER_WRAPPERS, TORCH_LOADER_MODULES
    from relman.tasks.specs import TASKS

    out = [("compress", r.target) for r in all_recipes()]
    out += [("evaluate", s.target) for s in SUITES.values()]
    out += [("jobs", t) for k, t in JOB_KINDS.items() if k not in APP_KINDS]
    out += [("app", t) for t in APP_KINDS.values()]
    out += [("jobs", t) for t in EXCLUSIVE.values() if isinstance(t, str)]
    out += [("tasks", t.adapter) for t in TASKS.values()]
    out += [("data", r.target) for r in READERS.values()] + [("data", r.entries) for r in READERS.values() if r.entries]
    out += [("modelio", f"{m}:__name__") for m in TORCH_LOADER_MODULES.values()]
    out += [("modelio", t) for t in (*RUNNER_WRAPPERS.values(), *MATERIALIZERS.values())]
    return out


def test_targets_respect_the_layers() -> None:
    bad = []
    for registry, target in registered():
        module, _ = targets.split(target)
        upward = RANK[layer_of(module)] > RANK[registry]
        if upward and not any(registry == r and module.startswith(p) for r, p in UPWARD):
            bad.append(f"{registry} names {target}")
    assert not bad, bad
    assert len(registered()) > 40


@pytest.mark.heavy  # resolving imports the implementations (torch, onnxruntime...)
def test_every_target_resolves() -> None:
    for _, target in registered():
        assert targets.resolve(target) is not None, target


def test_the_jobs_table_names_no_app_kind_until_the_app_registers_them() -> None:
    import subprocess
    import sys

    code = ("import relman.jobs.kinds as k; before = set(k.JOB_KINDS); import relman.app; "
            "print(sorted(before & {'import_model', 'promote'}), sorted(set(k.JOB_KINDS) - before))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("[] ["), out
    assert "'import_model'" in out and "'promote'" in out


def test_registering_a_known_kind_elsewhere_is_refused() -> None:
    from relman.jobs import kinds

    kinds.register("noop", kinds.JOB_KINDS["noop"])  # the same target again: a no-op
    with pytest.raises(ValueError, match="already registered"):
        kinds.register("noop", "relman.jobs.builtin:sleep")


def test_views_resolve_in_the_ui_layer() -> None:
    pytest.importorskip("PySide6")
    from relman.ui.views import VIEWS

    for v in VIEWS:
        assert layer_of(targets.split(v.target)[0]) == "ui", v.target


def test_malformed_targets_are_one_line_errors() -> None:
    for bad in ("relman.catalog", ":x", "relman.catalog:"):
        with pytest.raises(RelmanError, match="malformed target"):
            targets.resolve(bad)
    assert targets.resolve("relman.targets:resolve.__name__") == "resolve"
