"""Hook use cases the GUI and the CLI both call, and the `hook` job kind's entry point.

The rules (what a hook may be, how it runs, the tamper check) live in `relman.release.hooks`;
this module fills in who acts (RELMAN_USER / the login name) and is where `relman.jobs.kinds`
points the `hook` kind (job kinds name the app layer, never the release layer directly).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from relman.catalog.catalog import current_user
from relman.release import hooks as _hooks

if TYPE_CHECKING:
    from relman.catalog import Catalog
    from relman.jobs.context import JobContext

EVENTS = _hooks.EVENTS
describe = _hooks.describe
wait_for_hooks = _hooks.wait_for_hooks


def add_hook(catalog: "Catalog", event: str, *, argv: Sequence[str] | None = None, url: str | None = None,
             model: str | None = None, to_phase: str | None = None, timeout_s: float | None = None,
             allow_remote: bool = False, who: str | None = None) -> dict[str, Any]:
    return _hooks.add_hook(catalog, event, argv=argv, url=url, model=model, to_phase=to_phase, timeout_s=timeout_s,
                           allow_remote=allow_remote, who=who or current_user())


def list_hooks(catalog: "Catalog", *, model: str | None = None) -> list[dict[str, Any]]:
    return _hooks.list_hooks(catalog, model=model)


def get_hook(catalog: "Catalog", hook_id: int) -> dict[str, Any]:
    return _hooks.get_hook(catalog, hook_id)


def remove_hook(catalog: "Catalog", hook_id: int, *, who: str | None = None) -> dict[str, Any]:
    return _hooks.remove_hook(catalog, hook_id, who=who or current_user())


def queue_test(catalog: "Catalog", hook_id: int, *, who: str | None = None) -> int:
    """Queue a run of the hook with a sample payload ("test": true); the GUI polls the job."""
    return _hooks.queue_test(catalog, hook_id, who=who or current_user())


def hook_job(params: dict[str, Any], ctx: "JobContext") -> dict[str, Any]:
    """The `hook` job kind (relman.jobs.kinds)."""
    return _hooks.run_hook_job(params, ctx)
