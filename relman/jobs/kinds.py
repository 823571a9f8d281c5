"""Registry of job kinds: name → "module:function" of a `run(params, ctx)` function.

Strings, not imports, so that queueing a job (in the GUI or CLI process) never imports the
heavy module; only the worker process resolves and imports it. This table names only its own
layer and the ones below (the test kinds, the compress / optimize / evaluate / explain jobs);
a layer above adds its kinds with `register` from where it is composed — the app's background
jobs are registered by relman.app (relman/app/job_kinds.py) on import, which every process that
queues or runs them (CLI, GUI, worker: all start through relman.cli) has done. So the table
never names a module above relman.jobs (tests/test_targets.py holds that).
"""

from __future__ import annotations

from relman import targets
from typing import Any, Callable

JOB_KINDS: dict[str, str] = {
    "noop": "relman.jobs.builtin:noop",
    "sleep": "relman.jobs.builtin:sleep",
    "fail": "relman.jobs.builtin:fail",
    "write_version": "relman.jobs.builtin:write_version",
    "device_info": "relman.jobs.builtin:device_info",
    "spawn": "relman.jobs.builtin:spawn",
    "progress_burst": "relman.jobs.builtin:progress_burst",
    "evaluate": "relman.evaluate.job:run",
    "explain": "relman.evaluate.explain.job:run",
    "compress": "relman.compress.job:run",
    "optimize": "relman.compress.optimize:run",
}


# Kinds whose jobs time things and so get their device alone (see relman.jobs.runner): True,
# or "module:function" deciding from the job's params.
EXCLUSIVE: dict[str, str | bool] = {
    "evaluate": "relman.evaluate.registry:is_timing_request",  # latency / memory suites
    "optimize": True,  # times every candidate against the parent
}


def register(kind: str, target: str, *, exclusive: str | bool = False) -> None:
    """Add a job kind named by a layer above this one. Registering the same kind again with the
    same target is a no-op (modules are imported once, but tests may re-run registration);
    another target for a known kind is a programming error, refused."""
    known = JOB_KINDS.get(kind)
    if known is not None and known != target:
        raise ValueError(f"job kind '{kind}' is already registered as {known}, not {target}")
    JOB_KINDS[kind] = target
    if exclusive:
        EXCLUSIVE[kind] = exclusive


def needs_exclusive(kind: str, params: dict[str, Any]) -> bool:
    """Whether a job of `kind` with `params` must run alone on its device."""
    rule = EXCLUSIVE.get(kind, False)
    if isinstance(rule, bool):
        return rule
    return bool(targets.resolve(rule)(params))


def resolve(kind: str) -> Callable[..., Any]:
    from relman.errors import JobError

    try:
        target = JOB_KINDS[kind]
    except KeyError:
        raise JobError(f"unknown job kind '{kind}' (known: {', '.join(sorted(JOB_KINDS))})") from None
    fn: Callable[..., Any] = targets.resolve(target)
    return fn
