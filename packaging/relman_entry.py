"""Entry point of the frozen (PyInstaller) application: one executable for GUI, CLI and workers.

Why a separate script: PyInstaller needs a file to start from, and `relman/__main__.py` is a
module of the package (running it as a script would break its relative imports in a bundle).
The frozen executable is also the worker: `relman/jobs/launch.py` starts workers as
`[sys.executable, "--catalog", PATH, "worker", ID]` when `sys.frozen` is set, which lands here.
"""

from __future__ import annotations

import multiprocessing
import os
import sys


def _offline_defaults() -> None:
    """The installed app never reaches a model hub: our users' machines are often offline, and a
    silent download attempt would only add a long timeout. An explicit setting still wins."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _ensure_streams() -> None:
    """The windowed Windows launcher (relmanw.exe) may start with no stdout/stderr at all; click
    and tqdm would then fail on their first write. Output of such a process goes nowhere anyway
    (a worker's is redirected to its log file by the runner, which gives it real handles)."""
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))


def main() -> None:
    _ensure_streams()
    multiprocessing.freeze_support()  # a no-op unless a library spawns multiprocessing children
    _offline_defaults()
    from relman.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    sys.exit(main())
