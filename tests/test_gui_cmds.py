"""`relman gui` and `relman demo` from the command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import relman_subprocess_env


def test_gui_without_a_display_says_so(run_cli, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    from click.testing import CliRunner

    from relman.cli import cli

    result = CliRunner().invoke(cli, ["gui"])
    assert result.exit_code == 1 and "no display" in result.output


def test_gui_and_demo_have_help(run_cli):
    for cmd in ("gui", "demo"):
        result = run_cli(cmd, "--help")
        assert result.exit_code == 0 and len(result.output) > 100


def test_demo_headless_trains_imports_promotes_and_writes_screenshots(tmp_path: Path):
    """The demo flow end to end in a child process (short training, no jobs: the job flow is
    covered by tests/test_ui_jobs.py): a trained ViT in production, one PNG per main view."""
    pytest.importorskip("PySide6")
    env = relman_subprocess_env(tmp_path / "cat")
    env.update(QT_QPA_PLATFORM="offscreen", RELMAN_GUI_SETTINGS=str(tmp_path / "gui.ini"))
    env.pop("DISPLAY", None)
    out = subprocess.run([sys.executable, "-m", "relman", "demo", "--headless", "--no-jobs", "--train-seconds", "2",
                          "--screenshots", str(tmp_path / "shots")], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "trained a ViT on the digits" in out.stdout
    assert "promoted digits-vit@1.0.0 → production" in out.stdout
    shots = sorted(p.name for p in (tmp_path / "shots").glob("*.png"))
    from relman.ui.views import view_names

    assert shots == sorted([f"{v}.png" for v in view_names()] + ["dark-board.png", "dark-compare.png"])
    assert {"versions", "board", "compare", "lineage", "jobs", "audit"} <= set(view_names())
    from relman.catalog import open_catalog

    cat = open_catalog(tmp_path / "cat")
    v = cat.resolve("digits-vit@production")
    assert cat.metric_values(v.id)["test_accuracy"] > 0.1  # better than chance after 2 s of training
    assert not cat.verify_audit()
    cat.close()


def test_window_screenshots_in_a_real_xcb_window_under_xvfb(tmp_path: Path, tiny_vit):
    """The same window on the xcb platform (a real X window) when Xvfb is installed
    (`make system-deps`); skipped otherwise."""
    import shutil

    if not shutil.which("xvfb-run"):
        pytest.skip("xvfb-run not installed (make system-deps)")
    from relman.app.models import import_model
    from relman.catalog import Metric, open_catalog

    cat = open_catalog(tmp_path / "cat")
    v = import_model(cat, tiny_vit, "digits-vit")
    cat.add_metrics(v.id, [Metric("quality", "accuracy", 0.9), Metric("latency", "latency_p95_ms", 3.0)])
    cat.close()
    code = (
        "from pathlib import Path\n"
        "from relman.ui.app import close_window, open_window, screenshots\n"
        f"app, w = open_window({str(tmp_path / 'cat')!r}, run_jobs=False)\n"
        "print('PLATFORM', app.platformName())\n"
        f"screenshots(w, Path({str(tmp_path / 'shots')!r}))\n"
        "close_window(app, w)\n"
    )
    env = relman_subprocess_env()
    env.update(QT_QPA_PLATFORM="xcb", RELMAN_GUI_SETTINGS=str(tmp_path / "gui.ini"))
    out = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", sys.executable, "-c", code],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "PLATFORM xcb" in out.stdout
    pngs = list((tmp_path / "shots").glob("*.png"))
    from relman.ui.views import view_names

    assert len(pngs) == len(view_names()) and all(p.stat().st_size > 5000 for p in pngs)
