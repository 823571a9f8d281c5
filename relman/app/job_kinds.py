"""The app's background jobs, registered as job kinds (relman.jobs.kinds.register).

The file work the GUI hands to a worker (relman/app/background.py) and side-by-side generation
(relman/app/generation.py). Registered here, from the layer that implements them, so the jobs
layer's table names nothing above it; relman/app/__init__.py calls `register_app_kinds` on
import, and every process that queues or runs these kinds imports relman.app first (the CLI,
the GUI and the worker all start through relman.cli).
"""

from __future__ import annotations

from relman.jobs import kinds

APP_KINDS: dict[str, str] = {
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
    "diff_versions": "relman.app.diff:diff_job",
    "hook": "relman.app.hooks:hook_job",  # automations on release events (relman/release/hooks.py)
}


def register_app_kinds() -> None:
    for kind, target in APP_KINDS.items():
        kinds.register(kind, target)
