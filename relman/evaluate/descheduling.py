"""Was a timed call descheduled? And how crowded is the machine?

Paired latency ratios compare two wall-clock times taken a moment apart. On an oversubscribed
machine (more runnable threads than cores) the scheduler takes the core away in the middle of a
call for a few milliseconds; a long call is hit more often than a short one, so a ratio of wall
times drifts towards the shorter model (issue 31 measured 47–800 % moves beside three CPU hogs
on two cores). The remedy is to notice each disturbed call and leave its pair out:

- run-queue wait (Linux `/proc/<pid>/task/<tid>/schedstat`, second field): nanoseconds a thread
  spent runnable but not running. Read for every thread of the process around a call, it catches
  a descheduled ONNX Runtime / PyTorch worker thread as well as the calling thread — the one
  signal that works for multi-threaded inference.
- thread CPU time (`time.thread_time_ns`) against wall time, for single-threaded calls: it also
  catches time the hypervisor took (steal), which the guest's run queue never sees.

`machine_load` says how crowded the machine was while measuring (runnable threads against
cores, the 1-minute load average); the latency suite stores it beside the ratio, and refuses a
ratio when too many pairs were disturbed ("not measured: machine oversubscribed").
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

# A call is undisturbed when it lost at most this much to other work: 5 % of its wall time,
# and never less than 50 µs (timer interrupts and page faults cost a few µs on any machine).
SHARE_ALLOWED = 0.05
FLOOR_MS = 0.05


def allowed_ms(wall_ms: float) -> float:
    """How much run-queue wait / off-CPU time a call of `wall_ms` may show and still count as
    undisturbed."""
    return max(FLOOR_MS, SHARE_ALLOWED * wall_ms)


class RunQueueClock:
    """Summed run-queue wait (ms) of every thread of this process, from schedstat; `None` from
    `read()` where the kernel does not expose it. The thread list is refreshed on `refresh()`
    (between rounds: inference libraries start their pools at the first call, during warm-up)."""

    def __init__(self) -> None:
        self._root = Path(f"/proc/{os.getpid()}/task")
        self._fds: list[int] = []
        self.available = self._root.is_dir() and self._one(Path("/proc/thread-self/schedstat")) is not None
        self.refresh()

    @staticmethod
    def _one(path: Path) -> int | None:
        try:
            return int(path.read_text().split()[1])
        except (OSError, IndexError, ValueError):
            return None

    def refresh(self) -> None:
        self.close()
        if not self.available:
            return
        for tid in os.listdir(self._root):
            try:
                self._fds.append(os.open(self._root / tid / "schedstat", os.O_RDONLY))
            except OSError:  # the thread ended meanwhile
                continue

    def read(self) -> float | None:
        if not self.available:
            return None
        total = 0
        for fd in self._fds:
            try:
                total += int(os.pread(fd, 96, 0).split()[1])
            except (OSError, IndexError, ValueError):  # a thread that ended: it waits no more
                continue
        return total / 1e6

    def close(self) -> None:
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []


def disturbance_timer(call: Callable[[], Any], clock: RunQueueClock | None,
                      single_thread: bool) -> Callable[[], tuple[float, float]]:
    """A function timing one call: (wall ms, ms lost to other work — the larger of the run-queue
    wait of the process's threads and, single-threaded, wall minus thread CPU time). The probes
    are read outside the timed span, so they add nothing to the wall time."""
    perf, thread = time.perf_counter_ns, time.thread_time_ns
    rq = clock.read if clock is not None and clock.available else None

    def timed() -> tuple[float, float]:
        q0 = rq() if rq else 0.0
        c0 = thread()
        t0 = perf()
        call()
        t1 = perf()
        c1 = thread()
        q1 = rq() if rq else 0.0
        wall = (t1 - t0) / 1e6
        lost = max(0.0, (q1 or 0.0) - (q0 or 0.0))
        if single_thread:
            lost = max(lost, wall - (c1 - c0) / 1e6)
        return wall, lost
    return timed


def can_tell(single_thread: bool, clock: RunQueueClock | None) -> str | None:
    """How descheduling is told apart here (None: it cannot be, e.g. multi-threaded off Linux)."""
    have_rq = clock is not None and clock.available
    if single_thread:
        return "run-queue wait (schedstat) and thread CPU vs wall" if have_rq else "thread CPU vs wall"
    return "run-queue wait of every thread (schedstat)" if have_rq else None


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def runnable_threads() -> int | None:
    """Threads runnable on the whole machine right now (Linux /proc/stat `procs_running`,
    this one included); None elsewhere."""
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("procs_running"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def load_avg_1m() -> float:
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):  # Windows
        return -1.0


def pin_to_current_cpu() -> tuple[int | None, Callable[[], None]]:
    """Pin the calling thread to the core it runs on (no migrations mid-measurement: a moved
    thread starts on cold caches). Returns (the core, or None where affinity cannot be set or
    there is one core only; the function that restores the old affinity)."""
    try:
        old = os.sched_getaffinity(0)
        cpu = _current_cpu()
        if cpu is None or len(old) <= 1 or cpu not in old:
            return None, lambda: None
        os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError):
        return None, lambda: None

    def restore() -> None:
        try:
            os.sched_setaffinity(0, old)
        except OSError:
            pass
    return cpu, restore


def _current_cpu() -> int | None:
    try:  # field 39 of /proc/thread-self/stat: the CPU the thread last ran on
        stat = Path("/proc/thread-self/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[36])
    except (OSError, ValueError, IndexError):
        return None
