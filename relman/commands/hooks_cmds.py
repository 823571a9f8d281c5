"""Hook commands: `relman hooks add|list|test|remove` (automations on release events, see
relman/release/hooks.py), and `report_hooks`, which promote, reject and rollback use to say
what each hook a transition triggered did."""

from __future__ import annotations

from typing import Any, Mapping

import click

from relman.commands._shared import AppState, emit_json, pass_state, say, table

EVENT_CHOICE = click.Choice(["promoted", "rolled-back", "rejected", "gate-failed", "integrity-failed"])
PHASE_CHOICE = click.Choice(["draft", "candidate", "staging", "production", "retired", "rejected"])


def report_hooks(catalog: Any, result: Mapping[str, Any] | None, *, wait: bool = True) -> bool:
    """Print what the hooks a transition (or a refusal) queued did: waits for their jobs (bounded
    by the hooks' timeouts) unless `wait` is off. Returns False when a hook failed. The transition
    itself stands either way, so this never raises."""
    from relman.app.hooks import wait_for_hooks

    if not result:
        return True
    ok = True
    for line in result.get("hooks_refused", []):
        click.echo(f"warning: {line}", err=True)
        ok = False
    if result.get("hooks_error"):
        click.echo(f"warning: {result['hooks_error']}", err=True)
        ok = False
    jobs = result.get("hook_jobs") or []
    if not jobs:
        return ok
    if not wait:
        for j in jobs:
            say(f"hook {j['hook']} ({j['what']}) queued as job {j['job']}")
        return ok
    for outcome in wait_for_hooks(catalog, jobs):
        if outcome["ok"]:
            say(outcome["line"])
        else:
            ok = False
            from relman.names import terminal_safe

            click.echo(f"warning: {terminal_safe(outcome['line'])} (details: relman jobs show {outcome['job']})",
                       err=True)
    return ok


def hooks_wait_option(f: Any) -> Any:
    return click.option("--no-wait-hooks", "no_wait_hooks", is_flag=True,
                        help="Queue the hooks this triggers and return, instead of waiting to report each one.")(f)


@click.group("hooks", invoke_without_command=True)
@click.pass_context
def hooks(ctx: click.Context) -> None:
    """Automations on release events: run a program or POST JSON when a version is promoted,
    rolled back, rejected, refused by its gates or by a catalog that fails verification."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(hooks_list)


@hooks.command("add")
@click.option("--on", "event", required=True, type=EVENT_CHOICE, help="The release event that triggers it.")
@click.option("--model", default=None, help="Only this model's events (default: every model of the catalog).")
@click.option("--to", "to_phase", default=None, type=PHASE_CHOICE,
              help="'promoted' only: just promotions to this phase.")
@click.option("--post", "url", default=None, help="POST the JSON payload to this URL (loopback only unless "
                                                  "--allow-remote) instead of running a program.")
@click.option("--allow-remote", is_flag=True, help="Let a --post hook reach a host other than this machine.")
@click.option("--timeout", "timeout_s", type=float, default=None, help="Seconds before the hook is stopped "
                                                                       "(default 30, at most 3600).")
@click.option("--by", "who", help="Who adds it (default: RELMAN_USER or the login name).")
@click.option("--json", "as_json", is_flag=True, help="Print the stored hook as JSON.")
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
@pass_state
def hooks_add(state: AppState, event: str, model: str | None, to_phase: str | None, url: str | None,
              allow_remote: bool, timeout_s: float | None, who: str | None, as_json: bool,
              argv: tuple[str, ...]) -> None:
    """Add a hook: a program (its argument list after `--`, no shell; the JSON payload on stdin)
    or `--post URL`.

    \b
    relman hooks add --on promoted --to production -- /usr/bin/python3 /srv/copy_onnx.py
    relman hooks add --on gate-failed --post http://127.0.0.1:8065/hooks/relman
    """
    from relman.app.hooks import add_hook, describe

    h = add_hook(state.catalog(), event, argv=list(argv) or None, url=url, model=model, to_phase=to_phase,
                 timeout_s=timeout_s, allow_remote=allow_remote, who=who)
    if as_json:
        emit_json(h)
        return
    say(f"hook {h['id']}: on {h['event']}" + (f" of {h['model']}" if h["model"] else "")
        + (f" to {h['to_phase']}" if h["to_phase"] else "") + f": {describe(h)} (timeout {h['timeout_s']:g} s)")


@hooks.command("list")
@click.option("--model", default=None, help="Only the hooks that apply to this model.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_state
def hooks_list(state: AppState, model: str | None = None, as_json: bool = False) -> None:
    """The hooks of this catalog."""
    from relman.app.hooks import describe, list_hooks

    rows = list_hooks(state.catalog(), model=model)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no hooks (add one with 'relman hooks add --on EVENT -- PROGRAM ARGS...')")
        return
    click.echo(table([[h["id"], h["event"], h["model"] or "(all)", h["to_phase"] or "", describe(h),
                       f"{h['timeout_s']:g}s", h["created_by"]] for h in rows],
                     ["ID", "EVENT", "MODEL", "TO", "DOES", "TIMEOUT", "BY"]))


@hooks.command("test")
@click.argument("hook_id", type=click.IntRange(1, 2**63 - 1))
@pass_state
def hooks_test(state: AppState, hook_id: int) -> None:
    """Run hook HOOK_ID now with a sample payload ("test": true) as a job, and say how it went."""
    from relman.errors import JobError
    from relman.app.hooks import describe, get_hook, queue_test

    cat = state.catalog()
    hook = get_hook(cat, hook_id)
    job = queue_test(cat, hook_id)
    if not report_hooks(cat, {"hook_jobs": [{"hook": hook_id, "job": job, "what": describe(hook)}]}):
        raise JobError(f"hook {hook_id} failed its test run (job {job}; relman jobs show {job})")


@hooks.command("remove")
@click.argument("hook_id", type=click.IntRange(1, 2**63 - 1))
@click.option("--by", "who", help="Who removes it.")
@pass_state
def hooks_remove(state: AppState, hook_id: int, who: str | None) -> None:
    """Remove hook HOOK_ID (recorded in the audit log)."""
    from relman.app.hooks import describe, remove_hook

    h = remove_hook(state.catalog(), hook_id, who=who)
    say(f"removed hook {h['id']} (on {h['event']}: {describe(h)})")


COMMANDS: list[click.Command] = [hooks]
