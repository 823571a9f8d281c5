"""Job commands: `relman jobs` (list, show, cancel, retry, run, devices), `relman queue`, and
the hidden `relman worker ID` / `relman probe-devices` that the runner starts as processes."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from relman.commands._shared import AppState, emit_json, pass_state, table
from relman.names import terminal_safe
from relman.jobs.wait import wait_option


def _elapsed(job: dict[str, Any]) -> str:
    from relman.jobs.queue import elapsed_seconds

    s = elapsed_seconds(job)
    if s is None:
        return ""
    return f"{s:.1f}s" if s < 60 else f"{int(s // 60)}m{int(s % 60):02d}s"


def _job_json(job: dict[str, Any]) -> dict[str, Any]:
    from relman.jobs.queue import elapsed_seconds

    return {**job, "elapsed_s": elapsed_seconds(job)}


JOB_ID = click.IntRange(1, 2**63 - 1)  # SQLite integers; larger ids cannot exist


@click.group("jobs", invoke_without_command=True)
@click.option("--status", "statuses", multiple=True,
              type=click.Choice(["queued", "running", "succeeded", "failed", "cancelled"]),
              help="Only jobs with this status (repeatable).")
@click.option("--limit", type=int, default=50, show_default=True, help="Newest N jobs (0 = all).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def jobs(ctx: click.Context, statuses: tuple[str, ...], limit: int, as_json: bool) -> None:
    """Background jobs. Without a subcommand: a table of the newest jobs."""
    if ctx.invoked_subcommand is not None:
        return
    from relman.app.jobs import list_jobs

    cat = ctx.find_object(AppState).catalog()
    rows = list_jobs(cat, statuses=statuses or None, limit=limit or None)
    if as_json:
        emit_json([_job_json(r) for r in rows])
        return
    if not rows:
        click.echo("no jobs yet")
        return
    out = [[r["id"], r["kind"], r["status"] + ("*" if r["cancel_requested"] and r["status"] == "running" else ""),
            f"{100 * r['progress']:.0f}%", r["device_used"] or r["device"], _elapsed(r),
            (r.get("cause") or "") if r["status"] == "failed" else "",
            (r["error"] if r["status"] == "failed" and r["error"] else r["message"])[:70]] for r in rows]
    click.echo(table(out, ["ID", "KIND", "STATUS", "PROGRESS", "DEVICE", "ELAPSED", "CAUSE", "MESSAGE"]))


@jobs.command("show")
@click.argument("job_id", type=JOB_ID)
@click.option("--lines", "-n", type=int, default=20, show_default=True, help="Log lines to show.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON (with the log tail).")
@pass_state
def show(state: AppState, job_id: int, lines: int, as_json: bool) -> None:
    """Show one job: its row and the end of its log."""
    from relman.app.jobs import get_job, job_log_tail

    cat = state.catalog()
    job = get_job(cat, job_id)
    tail = job_log_tail(cat, job_id, lines)
    if as_json:
        emit_json({**_job_json(job), "log_tail": tail})
        return
    click.echo(f"job {job['id']}  {job['kind']}  [{job['status']}]")
    fields = [("progress", f"{100 * job['progress']:.0f}%  {job['message']}"),
              ("device", f"{job['device']}" + (f" (ran on {job['device_used']})" if job["device_used"] else "")),
              ("params", json.dumps(job["params"], sort_keys=True)), ("attempts", job["attempts"]),
              ("pid", job["pid"]), ("created", f"{job['created_at']} by {job['created_by']}"),
              ("started", job["started_at"]), ("finished", job["finished_at"]), ("elapsed", _elapsed(job)),
              ("parent job", job["parent_job_id"]), ("error", job["error"]),
              ("cause", (f"{job['cause']} — " + json.dumps(job["cause_evidence"] or {}, sort_keys=True))
                        if job["status"] == "failed" and job.get("cause") else None),
              ("result", json.dumps(job["result"], sort_keys=True) if job["result"] is not None else None),
              ("result version", job["result_version_id"]), ("log", job["log_path"])]
    for key, value in fields:
        if value not in (None, ""):
            click.echo(terminal_safe(f"  {key:<15}{value}"))
    if job["cancel_requested"] and job["status"] == "running":
        click.echo("  cancel requested")
    if tail:
        click.echo(f"--- last {lines} log lines ---")
        click.echo("\n".join(terminal_safe(line) for line in tail.splitlines()))


@jobs.command("cancel")
@click.argument("job_id", type=JOB_ID)
@pass_state
def cancel(state: AppState, job_id: int) -> None:
    """Cancel a job: a queued one at once, a running one at its next step (terminated after
    the grace period if it does not stop)."""
    from relman.app.jobs import cancel_job

    job = cancel_job(state.catalog(), job_id)
    if job["status"] == "cancelled":
        click.echo(f"job {job_id} cancelled")
    else:
        click.echo(f"job {job_id}: cancel requested; it stops at its next step")


@jobs.command("retry")
@click.argument("job_id", type=JOB_ID)
@click.option("--force", is_flag=True, help="Retry even a job that failed on bad input or a bug.")
@wait_option
@pass_state
def retry(state: AppState, job_id: int, force: bool, wait: bool) -> None:
    """Queue a failed or cancelled job again (refused, unless --force, where its cause says a
    retry would fail the same way: bad input, a bug)."""
    from relman.app.jobs import retry_job
    from relman.jobs.wait import wait_or_raise

    cat = state.catalog()
    job = retry_job(cat, job_id, force=force)
    from relman.jobs.queue import where_it_runs

    click.echo(f"job {job_id} queued again (attempt {job['attempts'] + 1}); {where_it_runs(cat, job['kind'])}")
    if wait:
        wait_or_raise(cat, [job_id])
        click.echo(f"job {job_id} succeeded")


@jobs.command("run")
@click.option("--once", is_flag=True, help="Exit when no job is queued or running.")
@click.option("--cpu-slots", type=click.IntRange(min=1), default=None,
              help="Jobs at a time on the CPU (default: RELMAN_CPU_SLOTS, else 2). One per CUDA device.")
@click.option("--grace", type=click.FloatRange(min=0), default=None,
              help="Seconds a cancelled job gets to stop before it is terminated (default 5).")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
              help="Run jobs as tasks on the Ray cluster at ADDRESS (HOST:PORT, or 'local' for a private "
                   "Ray instance here); default: the catalog's setting ('relman jobs executor').")
@click.option("--allow-remote", is_flag=True,
              help="Allow a Ray address that is not on this machine (trusted lab networks only).")
@click.option("--ray-token-file", "token_file", default=None, metavar="PATH",
              help="The file holding the Ray cluster's token (token authentication, RAY_AUTH_MODE=token); "
                   "default: the catalog's setting, else Ray's own (RAY_AUTH_TOKEN[_PATH], ~/.ray/auth_token).")
@pass_state
def run(state: AppState, once: bool, cpu_slots: int | None, grace: float | None, ray_address: str | None,
        allow_remote: bool, token_file: str | None) -> None:
    """Run queued jobs here (a headless runner, instead of the GUI). Ctrl+C stops the runner;
    running jobs carry on and the next runner picks them up (jobs on Ray end with the runner
    that submitted them and are failed, ready to retry)."""
    from relman.jobs.runner import Runner

    cat = state.catalog()
    executor = None
    if ray_address or cat.get_setting("executor.ray_address"):
        from relman.jobs.ray_executor import executor_from_settings

        executor = executor_from_settings(cat, ray_address, allow_remote or None, token_file)
    runner = Runner(cat.root, cpu_slots=cpu_slots, grace_s=grace, executor=executor)
    try:
        where = f"; jobs on Ray at {executor.address}" if executor else ""
        click.echo(f"runner on {runner.catalog.root} (cpu slots: {runner.cpu_slots}{where}); Ctrl+C to stop",
                   err=True)
        runner.run_forever(stop_when_idle=once)
    except KeyboardInterrupt:
        click.echo("runner stopped; running jobs carry on", err=True)
    finally:
        runner.close()


@jobs.command("executor")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
              help="Run this catalog's jobs on the Ray cluster at ADDRESS (HOST:PORT or 'local').")
@click.option("--allow-remote", is_flag=True, help="Allow an address that is not on this machine.")
@click.option("--ray-token-file", "token_file", default=None, metavar="PATH",
              help="The file holding the Ray cluster's token (token authentication, RAY_AUTH_MODE=token); "
                   "the catalog stores where the file is, never the token; without it, Ray's own (RAY_AUTH_TOKEN[_PATH], ~/.ray/auth_token).")
@click.option("--local", "local", is_flag=True, help="Run jobs as local worker processes (the default).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_state
def executor_cmd(state: AppState, ray_address: str | None, allow_remote: bool, token_file: str | None, local: bool,
                 as_json: bool) -> None:
    """Show or set where this catalog's runners (the GUI's, 'jobs run' and '--wait') execute jobs."""
    from relman.jobs.ray_executor import SETTING_ADDRESS, SETTING_ALLOW_REMOTE, SETTING_TOKEN_FILE, set_executor

    cat = state.catalog()
    if ray_address and local:
        raise click.UsageError("give --ray ADDRESS or --local, not both")
    if token_file and not ray_address:
        raise click.UsageError("--ray-token-file goes with --ray ADDRESS")
    if ray_address or local:
        set_executor(cat, ray_address if ray_address else None, allow_remote, token_file)
    address = cat.get_setting(SETTING_ADDRESS)
    info = {"executor": "ray" if address else "local", "address": address,
            "allow_remote": bool(cat.get_setting(SETTING_ALLOW_REMOTE, False)),
            "token_file": cat.get_setting(SETTING_TOKEN_FILE)}
    if as_json:
        emit_json(info)
    else:
        token = f" (token file {info['token_file']})" if info["token_file"] else ""
        click.echo(f"jobs run on the Ray cluster at {address}{token}" if address else "jobs run as local worker processes")


@jobs.command("auto-retry")
@click.option("--on/--off", "on", default=None, help="Retry jobs lost to the infrastructure (a killed worker, a "
              "lost node, a silent worker) by themselves. Off by default.")
@click.option("--max", "max_attempts", type=click.IntRange(1, 20), default=None,
              help="Attempts in all, the first included (default 3).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_state
def auto_retry_cmd(state: AppState, on: bool | None, max_attempts: int | None, as_json: bool) -> None:
    """Show or set whether runners retry jobs lost to the infrastructure by themselves (jobs that
    failed on bad input or a bug are never retried automatically)."""
    from relman.jobs import causes

    cat = state.catalog()
    if on is not None:
        cat.set_setting(causes.SETTING_AUTO_RETRY, on)
    if max_attempts is not None:
        cat.set_setting(causes.SETTING_AUTO_RETRY_MAX, max_attempts)
    if on is not None or max_attempts is not None:
        cat.log_event("auto-retry-set", {"on": cat.get_setting(causes.SETTING_AUTO_RETRY, False),
                                         "max": cat.get_setting(causes.SETTING_AUTO_RETRY_MAX, causes.DEFAULT_AUTO_RETRY_MAX)})
    info = {"auto_retry": cat.get_setting(causes.SETTING_AUTO_RETRY, False) is True,
            "max_attempts": cat.get_setting(causes.SETTING_AUTO_RETRY_MAX, causes.DEFAULT_AUTO_RETRY_MAX),
            "causes": sorted(causes.INFRASTRUCTURE)}
    if as_json:
        emit_json(info)
    else:
        click.echo(f"auto-retry {'on' if info['auto_retry'] else 'off'} (at most {info['max_attempts']} attempts; "
                   f"for {', '.join(info['causes'])})")


@jobs.command("devices")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def devices(as_json: bool) -> None:
    """Which devices jobs can run on (probed in a child process)."""
    from relman.jobs.devices import cpu_slots_default, detect_devices

    d = detect_devices()
    if as_json:
        emit_json({**d.as_dict(), "cpu_slots": cpu_slots_default()})
        return
    click.echo(f"cpu     ({cpu_slots_default()} job slots)")
    for dev in d.cuda:
        click.echo(f"{dev:<8}{d.names.get(dev, '')}")
    if not d.cuda:
        click.echo("no CUDA device" + (f" ({d.error})" if d.error else ""))


def _parse_params(pairs: tuple[str, ...]) -> dict[str, Any]:
    from relman.errors import JobError

    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise JobError(f"--param '{pair}' is not KEY=VALUE")
        try:
            params[key.strip()] = json.loads(text)
        except ValueError:
            params[key.strip()] = text
    return params


@click.command("queue")
@click.argument("kind")
@click.option("--param", "-p", "pairs", multiple=True, metavar="KEY=VALUE",
              help="A job parameter (VALUE read as JSON when it parses, else as text). Repeatable.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda:N.")
@wait_option
@click.option("--json", "as_json", is_flag=True, help="Print the job (after waiting, with --wait) as JSON.")
@pass_state
def queue_cmd(state: AppState, kind: str, pairs: tuple[str, ...], device: str, wait: bool, as_json: bool) -> None:
    """Queue a job of any registered KIND (e.g. noop, sleep) with parameters."""
    from relman.app.jobs import get_job, queue_job
    from relman.jobs.wait import wait_or_raise

    cat = state.catalog()
    job_id = queue_job(cat, kind, _parse_params(pairs), device=device)
    if wait:
        wait_or_raise(cat, [job_id])
    if as_json:
        emit_json(_job_json(get_job(cat, job_id)))
    elif wait:
        click.echo(f"job {job_id} succeeded")
    else:
        click.echo(f"queued job {job_id} ({kind})")


@click.command("worker", hidden=True)
@click.argument("job_id", type=JOB_ID)
@pass_state
def worker(state: AppState, job_id: int) -> None:
    """Run one job (started by the runner; not for direct use)."""
    from relman.catalog import resolve_catalog_path
    from relman.jobs.worker import run_worker

    sys.exit(run_worker(resolve_catalog_path(state.catalog_path), job_id))


@click.command("probe-devices", hidden=True)
def probe_devices() -> None:
    """Print the CUDA devices torch sees, as JSON (run in a child process by the runner)."""
    from relman.jobs.devices import probe_in_process

    click.echo(json.dumps(probe_in_process()))


COMMANDS: list[click.Command] = [jobs, queue_cmd, worker, probe_devices]
