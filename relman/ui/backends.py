"""Which app-layer operations this build has, so the GUI can enable exactly those actions.

Why: the GUI drives use cases other packages provide (jobs, datasets, evaluation,
compression, release, bundles). An action whose function is missing is shown disabled with a
tooltip saying why, never wired to a silent no-op. Looking a function up imports its app
module, which by the layering rules is light (no torch/Qt at module level).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Backend:
    module: str
    attr: str
    what: str  # what the user gets, for the tooltip

    @property
    def target(self) -> str:
        return f"{self.module}.{self.attr}"


BACKENDS: dict[str, Backend] = {
    "import_model": Backend("relman.app.models", "import_model", "importing models"),
    "queue_job": Backend("relman.app.jobs", "queue_job", "queueing jobs"),
    "cancel_job": Backend("relman.app.jobs", "cancel_job", "cancelling jobs"),
    "retry_job": Backend("relman.app.jobs", "retry_job", "retrying jobs"),
    "job_log_tail": Backend("relman.app.jobs", "job_log_tail", "job logs"),
    "runner": Backend("relman.jobs.runner", "Runner", "running queued jobs"),
    "register_dataset": Backend("relman.app.datasets", "register_dataset", "registering datasets"),
    "queue_evaluation": Backend("relman.app.evaluate", "queue_evaluation", "evaluation"),
    "queue_compression": Backend("relman.app.compress", "queue_compression", "compression"),
    "optimize": Backend("relman.app.compress", "queue_optimization", "optimization"),
    "promote": Backend("relman.app.release", "promote", "promotion"),
    "reject": Backend("relman.app.release", "reject", "rejecting versions"),
    "rollback": Backend("relman.app.release", "rollback", "rollback"),
    "approve": Backend("relman.app.release", "approve", "approvals"),
    "gates": Backend("relman.app.release", "gates", "gate reports"),
    "approvals": Backend("relman.app.release", "approvals", "listing approvals"),
    "rollout": Backend("relman.app.release", "rollout", "canary rollout"),
    "history": Backend("relman.app.release", "history", "release history"),
    "export_bundle": Backend("relman.app.bundles", "export_bundle", "bundle export"),
    "write_model_card": Backend("relman.app.bundles", "write_model_card", "model cards"),
}


def lookup(key: str) -> tuple[Callable[..., Any] | None, str]:
    """(function, "") when available, else (None, a one-line reason for the tooltip)."""
    b = BACKENDS[key]
    try:
        module = importlib.import_module(b.module)
    except ImportError:
        return None, f"Not available in this build yet: {b.what} needs {b.target}"
    except Exception as e:  # a half-finished module must not take the window down
        return None, f"{b.what} is unavailable: importing {b.module} failed ({type(e).__name__}: {e})"
    fn = getattr(module, b.attr, None)
    if fn is None:
        return None, f"Not available in this build yet: {b.what} needs {b.target}"
    return fn, ""


def available(key: str) -> bool:
    return lookup(key)[0] is not None


def require(key: str) -> Callable[..., Any]:
    from relman.errors import RelmanError

    fn, reason = lookup(key)
    if fn is None:
        raise RelmanError(reason)
    return fn


def status() -> dict[str, str]:
    """key → '' (wired) or the reason it is not; for the report and the About box."""
    return {key: lookup(key)[1] for key in BACKENDS}
