"""Registry of job kinds: name → "module:function" of a `run(params, ctx)` function.

Strings, not imports, so that queueing a job (in the GUI or CLI process) never imports the
heavy module; only the worker process resolves and imports it. A new kind is one line here.
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
    # file work the GUI hands to a worker (relman/app/background.py)
    "import_model": "relman.app.background:import_model_job",
    "register_dataset": "relman.app.background:register_dataset_job",
    "promote": "relman.app.background:promote_job",
    "export_bundle": "relman.app.background:export_bundle_job",
    "import_bundle": "relman.app.background:import_bundle_job",
    "delete_version": "relman.app.background:delete_version_job",
    "archive_version": "relman.app.background:archive_version_job",
    "restore_version": "relman.app.background:restore_version_job",
    "collect_garbage": "relman.app.background:collect_garbage_job",
    "generate": "relman.app.generation:generate_job",
    "hook": "relman.app.hooks:hook_job",  # automations on release events (relman/release/hooks.py)  # side-by-side generation (relman/app/generation.py)
}


# Kinds whose jobs time things and so get their device alone (see relman.jobs.runner): True,
# or "module:function" deciding from the job's params.
EXCLUSIVE: dict[str, str | bool] = {
    "evaluate": "relman.evaluate.registry:is_timing_request",  # latency / memory suites
    "optimize": True,  # times every candidate against the parent
}


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
