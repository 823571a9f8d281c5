"""Automations on release events: run a program or POST to a URL when a version is promoted,
rolled back, rejected, refused by its gates, or refused because the catalog fails verification.

Why this shape:

- **After the commit, as jobs.** A transition never waits on, and is never undone by, a user's
  program: `fire` is called once the transition's transaction has committed (or, for
  `gate-failed` / `integrity-failed`, rolled back) and only *queues* one `hook` job per
  matching hook. The job runs in a worker process like any other (its stdout and stderr land
  in the job's log); a hook that exits non-zero, times out or gets an HTTP error makes its job
  fail with a typed cause, and each run is an audit event (`hook-run`).
- **No shell.** A program hook is an argument list (`argv`), started with `shell=False`, its
  first element resolved to an absolute path when the hook is added (a later `PATH` does not
  change what runs). The payload is JSON on stdin; the process gets its own process group and
  the whole group is killed at the timeout.
- **Loopback by default.** A POST hook's URL must name 127.0.0.0/8, ::1 or `localhost` unless
  the hook was added with `allow_remote`; names are not resolved (DNS could point anywhere),
  redirects are not followed and proxies from the environment are not used, so a loopback
  hook cannot be bent to another host.
- **Hooks decide what runs, so they are tracked rows** (`hooks` in
  `relman.catalog.integrity.TRACKED`): an edit made with `sqlite3` shows in `verify` and blocks
  promotions like any other, and a hook whose row differs from what its audit event committed
  is never queued nor run (checked when firing and again in the job).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence
from urllib.parse import urlsplit

from relman.errors import IntegrityError, NotFound, RelmanError
from relman.netaddr import is_loopback_host

if TYPE_CHECKING:
    from relman.catalog import Catalog
    from relman.jobs.context import JobContext

EVENTS = ("promoted", "rolled-back", "rejected", "gate-failed", "integrity-failed")
ACTIONS = ("run", "post")
JOB_KIND = "hook"
RUN_EVENT = "hook-run"
DEFAULT_TIMEOUT_S = 30.0
MAX_TIMEOUT_S = 3600.0
LOG_CAP_BYTES = 64 * 1024  # of each of stdout and stderr copied into the job's log
MAX_ARGS = 256
MAX_ARG_LEN = 4096


class HookError(RelmanError):
    """A hook that cannot be added, or whose run failed (`job_cause` types the job's failure)."""

    def __init__(self, message: str, job_cause: str | None = None) -> None:
        super().__init__(message)
        self.job_cause = job_cause


# -- checking what a hook may be ----------------------------------------------------------------
def check_url(url: str, *, allow_remote: bool = False) -> str:
    """The URL a POST hook may use, or a HookError saying why not (one line)."""
    text = (url or "").strip()
    try:
        parts = urlsplit(text)
        port = parts.port  # raises on a malformed port
    except ValueError as e:
        raise HookError(f"'{text}' is not a usable URL ({e})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HookError(f"'{text}' is not an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise HookError("a hook URL must not carry a user name or password (they would be stored in the catalog)")
    if not allow_remote and not is_loopback_host(parts.hostname):
        raise HookError(f"refused: {parts.hostname} is not a loopback address (127.0.0.1, ::1, localhost); "
                        "add the hook with --allow-remote to POST to another host")
    del port
    return text


def check_argv(argv: Sequence[str]) -> list[str]:
    """The argument list a program hook runs: its program resolved to an absolute, executable file."""
    args = [str(a) for a in argv]
    if not args:
        raise HookError("a program hook needs a program to run (an argument list, e.g. -- /usr/bin/python3 notify.py)")
    if len(args) > MAX_ARGS or any(len(a) > MAX_ARG_LEN for a in args):
        raise HookError(f"a hook's argument list is limited to {MAX_ARGS} arguments of {MAX_ARG_LEN} characters")
    if any("\x00" in a for a in args):
        raise HookError("a hook argument must not contain a NUL character")
    prog = args[0]
    found = prog if os.sep in prog or (os.altsep and os.altsep in prog) else shutil.which(prog)
    if not found or not Path(found).is_file():
        raise HookError(f"program '{prog}' not found" + ("" if os.sep in prog else " on PATH"))
    if not os.access(found, os.X_OK):
        raise HookError(f"program '{found}' is not executable")
    return [os.path.abspath(found), *args[1:]]  # not resolve(): a venv's python is a symlink that must stay one


def check_timeout(timeout_s: float | None) -> float:
    t = DEFAULT_TIMEOUT_S if timeout_s is None else float(timeout_s)
    if not math.isfinite(t) or not 0 < t <= MAX_TIMEOUT_S:
        raise HookError(f"a hook's timeout must be more than 0 and at most {MAX_TIMEOUT_S:.0f} s, not {timeout_s}")
    return t


# -- storing hooks --------------------------------------------------------------------------------
def _decode(row: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["argv"] = json.loads(out["argv"]) if out.get("argv") else None
    out["allow_remote"] = bool(out.get("allow_remote"))
    return out


def describe(hook: Mapping[str, Any]) -> str:
    """'run /usr/bin/python3 notify.py' or 'POST http://127.0.0.1:8080/x' (for lists and messages)."""
    if hook["action"] == "run":
        argv = hook["argv"] if isinstance(hook["argv"], list) else json.loads(hook["argv"] or "[]")
        return "run " + " ".join(argv)
    return f"POST {hook['url']}"


def add_hook(catalog: "Catalog", event: str, *, argv: Sequence[str] | None = None, url: str | None = None,
             model: str | None = None, to_phase: str | None = None, timeout_s: float | None = None,
             allow_remote: bool = False, who: str) -> dict[str, Any]:
    """Store a hook (with its `hook-add` audit event, which commits the row). Exactly one of
    `argv` (a program) and `url` (a POST) is given; everything is checked before anything is
    written."""
    from relman.catalog import integrity
    from relman.catalog.catalog import utcnow
    from relman.release.policy import PHASES

    if event not in EVENTS:
        raise HookError(f"unknown hook event '{event}' (events: {', '.join(EVENTS)})")
    if (argv is None or not list(argv)) == (url is None):
        raise HookError("give either a program to run (an argument list) or --post URL, not both or neither")
    if to_phase is not None:
        if event != "promoted":
            raise HookError("--to (a target phase) applies to 'promoted' hooks only")
        if to_phase not in PHASES:
            raise HookError(f"unknown phase '{to_phase}' (phases: {', '.join(PHASES)})")
    if model is not None:
        catalog.get_model(model)  # NotFound for a wrong name
    timeout = check_timeout(timeout_s)
    if url is not None:
        action, args, target = "post", None, check_url(url, allow_remote=allow_remote)
    else:
        action, args, target = "run", check_argv(list(argv or [])), None
        if allow_remote:
            raise HookError("--allow-remote applies to --post hooks only")
    at = utcnow()
    with catalog.transaction():
        cur = catalog.conn.execute(
            "INSERT INTO hooks (event, model, to_phase, action, argv, url, allow_remote, timeout_s, created_at,"
            " created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [event, model, to_phase, action, json.dumps(args) if args is not None else None, target,
             int(bool(allow_remote)), timeout, at, who])
        hook_id = int(cur.lastrowid or 0)
        integrity.commit_event(catalog.db, at=at, actor=who, kind="hook-add", model=model, version=None,
                               payload={"hook": hook_id, "event": event, "action": action, "argv": args, "url": target,
                                        "to_phase": to_phase, "allow_remote": bool(allow_remote), "timeout_s": timeout})
    return get_hook(catalog, hook_id)


def get_hook(catalog: "Catalog", hook_id: int) -> dict[str, Any]:
    rows = catalog.query("SELECT * FROM hooks WHERE id = ?", [int(hook_id)])
    if not rows:
        raise NotFound(f"no hook with id {hook_id} (see 'relman hooks list')")
    return _decode(rows[0])


def list_hooks(catalog: "Catalog", *, model: str | None = None) -> list[dict[str, Any]]:
    sql, args = "SELECT * FROM hooks", []
    if model is not None:
        sql, args = sql + " WHERE model IS ? OR model IS NULL", [model]
    return [_decode(r) for r in catalog.query(sql + " ORDER BY id", args)]


def remove_hook(catalog: "Catalog", hook_id: int, *, who: str) -> dict[str, Any]:
    from relman.catalog import integrity
    from relman.catalog.catalog import utcnow

    with catalog.transaction():
        hook = get_hook(catalog, hook_id)
        catalog.conn.execute("DELETE FROM hooks WHERE id = ?", [hook["id"]])
        integrity.commit_event(catalog.db, at=utcnow(), actor=who, kind="hook-remove", model=hook["model"], version=None,
                               payload={"hook": hook["id"], "event": hook["event"], "what": describe(hook)})
    return hook


def tamper_problem(catalog: "Catalog", hook_id: int) -> str | None:
    """Why hook `hook_id`'s row cannot be trusted (it differs from what its audit event
    committed, or no event committed it), or None when it is intact."""
    from relman.catalog import integrity

    cur = catalog.conn.execute("SELECT * FROM main.hooks WHERE id = ?", [int(hook_id)])
    values = cur.fetchone()
    if values is None:
        return None
    row = dict(zip([d[0] for d in cur.description], values))
    key = integrity.row_key("hooks", row)
    last = integrity.committed_records(catalog.conn, only={("hooks", key)}).get(("hooks", key))
    if last is None or last[1] is None:
        return f"hook {hook_id} was not added through relman (no audit event commits it)"
    if integrity.row_hash("hooks", row) != last[1].get("h"):
        return f"hook {hook_id} was changed outside relman after event {last[0]}"
    return None


# -- firing ---------------------------------------------------------------------------------------
def matching(catalog: "Catalog", event: str, model: str | None, to_phase: str | None = None) -> list[dict[str, Any]]:
    """The hooks an `event` on `model` (moving to `to_phase`) triggers, oldest first."""
    rows = catalog.query("SELECT * FROM hooks WHERE event = ? AND (model IS NULL OR model IS ?)"
                         " AND (to_phase IS NULL OR to_phase IS ?) ORDER BY id", [event, model, to_phase])
    return [_decode(r) for r in rows]


def fire(catalog: "Catalog", event: str, payload: Mapping[str, Any], *, model: str | None,
         to_phase: str | None = None, who: str | None = None) -> dict[str, Any]:
    """Queue a `hook` job for every hook `event` triggers; call it after the transition's
    transaction has ended. Never raises: what went wrong is returned (`hooks_error`), since the
    transition it follows stands either way. Returns {"hook_jobs": [...], "hooks_refused": [...]}
    (only the keys that have something)."""
    import sqlite3

    from relman.jobs.queue import enqueue

    out: dict[str, Any] = {}
    try:
        if not catalog.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'hooks'").fetchone():
            return out
        hooks = matching(catalog, event, model, to_phase)
        if not hooks:
            return out
        body = {"event": event, "catalog": str(catalog.root), "test": False, **dict(payload)}
        jobs, refused = [], []
        for hook in hooks:
            problem = tamper_problem(catalog, hook["id"])
            if problem:
                refused.append(f"{problem}; not run")
                continue
            job = enqueue(catalog, JOB_KIND, {"hook_id": hook["id"], "event": event, "payload": {**body,
                          "hook": hook["id"]}}, device="cpu", actor=who)
            jobs.append({"hook": hook["id"], "job": job, "what": describe(hook)})
        if jobs:
            out["hook_jobs"] = jobs
        if refused:
            out["hooks_refused"] = refused
    except (RelmanError, sqlite3.Error) as e:
        out["hooks_error"] = f"hooks for {event} not queued: {e}"
    return out


def queue_test(catalog: "Catalog", hook_id: int, *, who: str | None = None) -> int:
    """Queue a run of hook `hook_id` with a sample payload (`"test": true`); returns the job id."""
    from relman.jobs.queue import enqueue

    hook = get_hook(catalog, hook_id)
    problem = tamper_problem(catalog, hook["id"])
    if problem:
        raise IntegrityError(f"{problem}; refusing to run it")
    payload = {"event": hook["event"], "catalog": str(catalog.root), "test": True, "hook": hook["id"],
               "model": hook["model"], "version": None, "to": hook["to_phase"]}
    return enqueue(catalog, JOB_KIND, {"hook_id": hook["id"], "event": hook["event"], "payload": payload},
                   device="cpu", actor=who)


# -- the job ----------------------------------------------------------------------------------------
def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        if os.name != "nt":
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except (ProcessLookupError, PermissionError):
        pass


def _copy_to_log(ctx: "JobContext", label: str, path: Path) -> str:
    """Append (at most LOG_CAP_BYTES of) a captured stream to the job's log; returns its last line."""
    size = path.stat().st_size if path.exists() else 0
    with open(path, "rb") as f:
        data = f.read(LOG_CAP_BYTES)
    text = data.decode("utf-8", errors="replace")
    more = f" (first {LOG_CAP_BYTES} of {size} bytes)" if size > LOG_CAP_BYTES else ""
    ctx.log("hook %s%s:%s", label, more, ("\n" + text.rstrip("\n")) if text else " (empty)")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1].strip()[:200] if lines else ""


def run_program(argv: Sequence[str], payload: bytes, timeout_s: float, ctx: "JobContext",
                env_extra: Mapping[str, str]) -> dict[str, Any]:
    """Run `argv` (no shell) with `payload` on stdin, in its own process group, stdout and stderr
    to files in the job's scratch folder (then into the job's log). Raises HookError on a non-zero
    exit or the timeout."""
    out_path, err_path = ctx.workdir / "hook.stdout", ctx.workdir / "hook.stderr"
    env = {**os.environ, **env_extra}
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        try:
            proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=out, stderr=err, shell=False,
                                    cwd=str(ctx.workdir), env=env, close_fds=True,
                                    start_new_session=os.name != "nt")
        except OSError as e:
            raise HookError(f"could not start {argv[0]}: {e.strerror or e}") from None
        ctx.log("hook process %d: %s", proc.pid, " ".join(argv))
        timed_out = False
        try:
            proc.communicate(payload, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            proc.wait()
        finally:
            _kill_group(proc)  # anything it left running in its group
    _copy_to_log(ctx, "stdout", out_path)
    last_err = _copy_to_log(ctx, "stderr", err_path)
    if timed_out:
        raise HookError(f"program {Path(argv[0]).name} did not finish within {timeout_s:g} s (killed)",
                        job_cause="timeout")
    if proc.returncode != 0:
        tail = f": {last_err}" if last_err else ""
        raise HookError(f"program {Path(argv[0]).name} exited with code {proc.returncode}{tail}", job_cause="bad_input")
    return {"exit_code": 0}


def post_json(url: str, payload: bytes, timeout_s: float, *, allow_remote: bool, event: str) -> dict[str, Any]:
    """POST `payload` to `url` (checked again here), no proxies, no redirects. Raises HookError
    on an HTTP error status, a refused connection or the timeout."""
    import socket
    import urllib.error
    import urllib.request

    from relman import __version__

    check_url(url, allow_remote=allow_remote)
    req = urllib.request.Request(url, data=payload, method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": f"relman/{__version__}",
                                          "X-Relman-Event": event})
    class NoRedirect(urllib.request.HTTPRedirectHandler):  # a loopback hook must not be sent elsewhere
        def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
            raise HookError(f"the hook URL answered {code} redirecting to {newurl}; redirects are not followed",
                            job_cause="bad_input")

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect())
    try:
        with opener.open(req, timeout=timeout_s) as resp:
            status = int(resp.status)
            answer = resp.read(4096).decode("utf-8", errors="replace")
    except urllib.error.HTTPError as e:
        raise HookError(f"POST {url} answered HTTP {e.code} {e.reason}", job_cause="bad_input") from None
    except (socket.timeout, TimeoutError):
        raise HookError(f"POST {url} got no answer within {timeout_s:g} s", job_cause="timeout") from None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise HookError(f"POST {url} got no answer within {timeout_s:g} s", job_cause="timeout") from None
        raise HookError(f"POST {url} failed: {reason}", job_cause="bad_input") from None
    return {"http_status": status, "answer": answer[:200]}


def _record_run(catalog: "Catalog", hook: Mapping[str, Any], params: Mapping[str, Any], job_id: int | None,
                outcome: Mapping[str, Any], actor: str | None) -> None:
    from relman.catalog import integrity
    from relman.catalog.catalog import current_user, utcnow

    payload = params.get("payload") or {}
    with catalog.transaction():
        integrity.commit_event(catalog.db, at=utcnow(), actor=actor or current_user(), kind=RUN_EVENT,
                               model=payload.get("model"), version=payload.get("version"),
                               payload={"hook": hook["id"], "event": params.get("event"), "job": job_id,
                                        "what": describe(hook), "test": bool(payload.get("test")), **dict(outcome)})


def run_hook_job(params: dict[str, Any], ctx: "JobContext") -> dict[str, Any]:
    """The `hook` job: check the hook's row, run it, record a `hook-run` event either way; a
    failure raises (the job fails with its typed cause, the transition it followed stands)."""
    hook_id = int(params["hook_id"])
    try:
        hook = get_hook(ctx.catalog, hook_id)
    except NotFound:
        raise HookError(f"hook {hook_id} was removed before it ran") from None
    problem = tamper_problem(ctx.catalog, hook_id)
    if problem:
        _record_run(ctx.catalog, hook, params, ctx.job_id, {"ok": False, "error": f"{problem}; not run"}, ctx.actor)
        raise IntegrityError(f"{problem}; not run")
    payload = params.get("payload") or {}
    body = json.dumps(payload, sort_keys=True, default=str).encode("utf-8")
    timeout = check_timeout(hook["timeout_s"])
    ctx.progress(0.1, f"hook {hook_id}: {describe(hook)[:60]}")
    try:
        if hook["action"] == "run":
            env = {"RELMAN_HOOK_EVENT": str(params.get("event")), "RELMAN_HOOK_ID": str(hook_id),
                   "RELMAN_CATALOG": str(ctx.catalog.root)}
            result = run_program(hook["argv"], body, timeout, ctx, env)
        else:
            result = post_json(hook["url"], body, timeout, allow_remote=hook["allow_remote"],
                               event=str(params.get("event")))
            ctx.log("hook POST answered HTTP %s: %s", result["http_status"], result["answer"])
    except HookError as e:
        _record_run(ctx.catalog, hook, params, ctx.job_id,
                    {"ok": False, "error": str(e), "cause": e.job_cause}, ctx.actor)
        raise
    _record_run(ctx.catalog, hook, params, ctx.job_id, {"ok": True, **result}, ctx.actor)
    ctx.progress(1.0, f"hook {hook_id} ran", check_cancel=False)
    return {"hook": hook_id, "event": params.get("event"), **result}


# -- waiting (the CLI reports each hook's outcome) ----------------------------------------------------
def wait_for_hooks(catalog: "Catalog", jobs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Wait for the given hook jobs (driving the queue here if no runner does, like `--wait`),
    bounded by the hooks' own timeouts; returns one line of outcome per hook job."""
    from relman.errors import JobError
    from relman.jobs.wait import wait_for_jobs

    items = list(jobs)
    if not items:
        return []
    ids = [int(j["job"]) for j in items]
    rows_t = catalog.query(f"SELECT timeout_s FROM hooks WHERE id IN ({', '.join('?' * len(items))})",
                           [int(j["hook"]) for j in items])
    budget = sum(float(r["timeout_s"]) for r in rows_t) + 60.0
    try:
        rows = {r["id"]: r for r in wait_for_jobs(catalog, ids, progress=False, include_spawned=False,
                                                  timeout=budget)}
    except JobError as e:
        return [{"hook": j["hook"], "job": j["job"], "ok": False, "line": str(e)} for j in items]
    out = []
    for j in items:
        r = rows.get(int(j["job"]), {})
        ok = r.get("status") == "succeeded"
        why = r.get("error") or r.get("status") or "?"
        out.append({"hook": j["hook"], "job": j["job"], "ok": ok,
                    "line": f"hook {j['hook']} ({j['what']}): " + ("ok" if ok else
                            f"FAILED ({r.get('cause') or 'unknown cause'}): {why}")
                    + f" [job {j['job']}]"})
    return out
