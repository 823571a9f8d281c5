"""How a worker process is started: the app's own entry point, in its own process group.

Workers are started as `relman --catalog PATH worker ID`, resolved from `sys.executable`:
`python -m relman ...` in a development or pip install, and the executable itself in a
frozen (PyInstaller) build, where there is no `-m`. Each worker gets its own session /
process group, so cancelling can signal the worker *and* anything it started, and a Ctrl+C
in the terminal that runs the GUI or `relman jobs run` does not kill running jobs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Sequence

import relman


def is_frozen() -> bool:
    return bool(getattr(sys, "frozen", False))


def relman_argv(*args: str) -> list[str]:
    """The command line that runs `relman ARGS...` with this same interpreter / executable."""
    if is_frozen():
        return [sys.executable, *args]
    return [sys.executable, "-m", "relman", *args]


def worker_command(catalog_root: Path | str, job_id: int) -> list[str]:
    return relman_argv("--catalog", str(catalog_root), "worker", str(int(job_id)))


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a relman child process: ours, with relman importable (also when
    running from a source checkout that is not installed) and no inherited catalog override."""
    env = dict(os.environ)
    if not is_frozen():
        src = str(Path(relman.__file__).resolve().parent.parent)
        parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if src not in parts:
            env["PYTHONPATH"] = os.pathsep.join([src, *parts])
    env.pop("RELMAN_CATALOG", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def popen_group_kwargs() -> dict:
    """Popen arguments that put the child in its own process group (and session on POSIX)."""
    if os.name == "nt":
        flags = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        return {"creationflags": flags}
    return {"start_new_session": True}


def start_worker(catalog_root: Path | str, job_id: int, log_path: Path | str,
                 env: Mapping[str, str] | None = None, argv: Sequence[str] | None = None) -> subprocess.Popen:
    """Start the worker for `job_id` with stdout and stderr appended to its log file."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(argv) if argv is not None else worker_command(catalog_root, job_id),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, close_fds=True,
            env=child_env(env), cwd=str(catalog_root), **popen_group_kwargs())
