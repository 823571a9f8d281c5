"""The stand-by runner: queued jobs still run after the window is gone (closed or crashed).

The window drives the job runner on a QTimer in its own process, so before this a window that
died (the none_dealloc crash, a kill, a logout) left queued jobs waiting until relman was opened
again; running jobs were safe (workers live in their own sessions) but nothing started the next
one. Now, as soon as the catalog has unfinished jobs, the window starts this small process in a
session of its own with a pipe on its stdin and keeps the write end. The process blocks reading
the pipe; the OS closes the pipe when the window closes it (`release`, on close) or when the
window's process ends in any way, crash included. Then it takes the runner lock (skipping if a
new window or `relman jobs run` already holds it), drives the queue until nothing is queued or
running — adopting the dead window's running workers through pid + heartbeat, as every runner
does — and exits. It imports no Qt.

Run as `python -m relman.ui.runner_standby CATALOG [CPU_SLOTS]`; its log is
`<catalog>/logs/runner-standby.log`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

LOG_NAME = "runner-standby.log"


def start(catalog_root: Path, cpu_slots: int | None = None) -> subprocess.Popen[bytes]:
    """Start the stand-by runner for `catalog_root`; keep the returned Popen (its stdin is the
    pipe whose closing wakes it)."""
    logs = Path(catalog_root) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log: IO[bytes] = open(logs / LOG_NAME, "ab")
    try:
        cmd = [sys.executable, "-m", "relman.ui.runner_standby", str(catalog_root)]
        if cpu_slots is not None:
            cmd.append(str(int(cpu_slots)))
        env = dict(os.environ)
        env.pop("QT_QPA_PLATFORM", None)
        return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=log, stderr=log, start_new_session=True,
                                close_fds=True, env=env)
    finally:
        log.close()


def release(proc: subprocess.Popen[Any] | None) -> None:
    """Let the stand-by runner take over now (the window is closing)."""
    if proc is not None and proc.stdin is not None and not proc.stdin.closed:
        try:
            proc.stdin.close()
        except OSError:
            pass


def stand_by(catalog_root: Path, cpu_slots: int | None = None, wake: IO[bytes] | None = None) -> str:
    """Block until `wake` (stdin) reaches end of file, then run the catalog's queue until it is
    empty. Returns what it did, for the log."""
    stream = wake if wake is not None else sys.stdin.buffer
    while stream.read(4096):  # the window never writes; EOF means it closed or died
        pass
    if not (Path(catalog_root) / "catalog.db").exists():  # a catalog removed meanwhile (a test's)
        return "no catalog any more"
    from relman.jobs.runner import Runner

    runner = Runner(catalog_root, cpu_slots)
    try:
        if not runner.lock.acquire():
            holder = runner.lock.holder_pid()
            return f"another runner (pid {holder}) drives the catalog; nothing to do"
        if runner.idle():
            return "nothing queued or running"
        runner.run_forever(stop_when_idle=True)
        return "ran the queue until it was empty"
    finally:
        runner.close()


def main(argv: list[str]) -> int:
    import relman.app  # noqa: F401  (registers the app's job kinds, as relman.cli does)
    from datetime import datetime, timezone

    root = Path(argv[0])
    slots = int(argv[1]) if len(argv) > 1 else None
    what = stand_by(root, slots)
    print(f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} pid {os.getpid()}: {what}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
