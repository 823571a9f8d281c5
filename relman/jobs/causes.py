"""Why a job ended badly, as a type a person (and the retry logic) can act on.

A failed job's `error` is free text; its `cause` says what kind of failure it was, and
`cause_evidence` (JSON) what that rests on: the exit signal, the last heartbeat, the peak RSS
the runner saw and the machine's limit, the node. The classification is deliberately small:

- `worker_killed` — the worker process died from a signal nobody asked for (kill -9, a crash)
                    or vanished (machine restarted, a Ray worker process lost);
- `oom`           — it ran out of memory (MemoryError, CUDA out of memory, Ray's OOM killer, or a
                    SIGKILL while its peak RSS was near the machine's memory);
- `node_lost`     — the Ray node running it died;
- `timeout`       — it stopped responding (no heartbeat) or never started;
- `cancelled`     — someone asked it to stop;
- `disk_full`     — no space left where it wrote;
- `bad_input`     — relman refused what it was given (RelmanError: a wrong column, a bad parameter,
                    a corrupt file);
- `bug`           — any other exception: relman (or a library) failed unexpectedly.

Retrying helps only where the cause lies outside the job's input (`RETRY_HELPS`); the runner
retries jobs lost to infrastructure (`INFRASTRUCTURE`) by itself when the catalog setting
`jobs.auto_retry` is on (off by default), at most `jobs.auto_retry_max` attempts.
"""

from __future__ import annotations

import errno
from typing import Any

WORKER_KILLED = "worker_killed"
OOM = "oom"
NODE_LOST = "node_lost"
TIMEOUT = "timeout"
CANCELLED = "cancelled"
DISK_FULL = "disk_full"
BAD_INPUT = "bad_input"
BUG = "bug"
CAUSES = (WORKER_KILLED, OOM, NODE_LOST, TIMEOUT, CANCELLED, DISK_FULL, BAD_INPUT, BUG)

# Causes where running the same job again can succeed (after freeing disk or memory, perhaps).
RETRY_HELPS = frozenset({WORKER_KILLED, OOM, NODE_LOST, TIMEOUT, CANCELLED, DISK_FULL})
# Causes outside the job and the machine's state that an automatic retry may fix.
INFRASTRUCTURE = frozenset({WORKER_KILLED, NODE_LOST, TIMEOUT})

SETTING_AUTO_RETRY = "jobs.auto_retry"
SETTING_AUTO_RETRY_MAX = "jobs.auto_retry_max"
DEFAULT_AUTO_RETRY_MAX = 3  # attempts in all, the first one included

# A SIGKILLed worker whose peak RSS reached this share of the memory it could have was most
# likely killed by the kernel's OOM killer (the signal itself does not say).
OOM_SHARE = 0.9

TITLES = {
    WORKER_KILLED: "worker killed", OOM: "out of memory", NODE_LOST: "node lost", TIMEOUT: "timed out",
    CANCELLED: "cancelled", DISK_FULL: "disk full", BAD_INPUT: "bad input", BUG: "unexpected error (bug)",
}


def retry_helps(cause: str | None) -> bool:
    """Whether retrying a job that ended with `cause` can help (unknown causes: yes, to be safe)."""
    return cause is None or cause in RETRY_HELPS


def from_exception(exc: BaseException) -> str:
    """The cause of a job whose own code raised `exc` (in the worker)."""
    from relman.errors import JobCancelled, RelmanError

    if isinstance(exc, JobCancelled):
        return CANCELLED
    typed = getattr(exc, "job_cause", None)  # an error that knows its cause (a hook's timeout)
    if isinstance(typed, str) and typed in CAUSES:
        return typed
    if isinstance(exc, MemoryError) or "OutOfMemory" in type(exc).__name__:
        return OOM
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DISK_FULL
    if isinstance(exc, RelmanError):
        text = str(exc).lower()
        if "no space left" in text or "disk is full" in text:
            return DISK_FULL
        return BAD_INPUT
    return BUG


def memory_limit_bytes() -> int:
    """What a worker on this machine can have: the cgroup's limit when one is set, else RAM."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path, encoding="ascii").read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < (1 << 60):
            return int(text)
    import psutil

    return int(psutil.virtual_memory().total)


def from_exit(returncode: int, *, peak_rss: int | None = None, limit: int | None = None) -> tuple[str, dict[str, Any]]:
    """(cause, evidence) for a worker that exited without recording its outcome."""
    import signal

    evidence: dict[str, Any] = {"exit_code": returncode}
    if returncode < 0:
        try:
            evidence["signal"] = signal.Signals(-returncode).name
        except ValueError:
            evidence["signal"] = str(-returncode)
    if peak_rss is not None:
        evidence["peak_rss_mb"] = round(peak_rss / 2**20, 1)
        limit = limit if limit is not None else memory_limit_bytes()
        evidence["memory_limit_mb"] = round(limit / 2**20, 1)
        if returncode == -signal.SIGKILL and peak_rss >= OOM_SHARE * limit:
            return OOM, evidence
    return WORKER_KILLED, evidence


def from_ray_failure(text: str) -> str:
    """The cause of a Ray task's failure, from the error Ray reported."""
    low = text.lower()
    if "outofmemory" in low or "out of memory" in low or "oom" in low.split():
        return OOM
    if "node" in low and ("died" in low or "lost" in low or "dead" in low):
        return NODE_LOST
    if "worker" in low and ("died" in low or "crashed" in low or "killed" in low or "exited" in low):
        return WORKER_KILLED
    if "relmanerror" in low or "recipeerror" in low or "evaluationerror" in low or "datasetError".lower() in low:
        return BAD_INPUT
    return BUG


def describe(cause: str | None) -> str:
    return TITLES.get(cause or "", cause or "")
