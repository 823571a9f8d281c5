"""The persistent job queue: a job is a row in the catalog's `jobs` table.

Queueing, cancelling and retrying are short transactions with their audit event, safe to run
from the GUI, the CLI or a worker at the same time as a runner. Nothing here starts
processes or imports torch; the runner (`relman.jobs.runner`) turns queued rows into workers.

This module is the one writer of the `jobs` table (and its `job_points` curves) outside the
catalog itself: the runner, the Ray runner, the worker and a job's context change a row only
through the functions below (`start_attempt`, `set_pid`, `start_by_hand`, `take_over`,
`heartbeat`, `set_executor`, `report_progress`, `add_points`, `finish`...), so what a write
may touch, and which writes an audit event commits (relman.catalog.integrity), is decided
here. (`Catalog.add_version` links a job's result version in its own transaction.)

Status life cycle::

    queued ──claim──▶ running ──▶ succeeded | failed | cancelled
       └──cancel──▶ cancelled          failed/cancelled ──retry──▶ queued
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from relman.errors import JobError, NotFound

if TYPE_CHECKING:
    from relman.catalog import Catalog

QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
ACTIVE = (QUEUED, RUNNING)
FINISHED = (SUCCEEDED, FAILED, CANCELLED)

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda:\d+)$")


def _now() -> str:
    from relman.catalog.catalog import utcnow

    return utcnow()


def _user(actor: str | None) -> str:
    from relman.catalog.catalog import current_user

    return actor or current_user()


def normalize_device(device: str | None) -> str:
    """`auto`, `cpu` or `cuda:N` (`cuda` alone means `cuda:0`); anything else is refused."""
    text = (device or "auto").strip().lower()
    if text == "cuda":
        text = "cuda:0"
    if not _DEVICE_RE.match(text):
        raise JobError(f"device '{device}' is not one of: auto, cpu, cuda:N (e.g. cuda:0)")
    return text


def log_path_for(catalog: "Catalog", job_id: int):
    return catalog.logs_dir / f"{job_id}.log"


def workdir_for(catalog: "Catalog", job_id: int):
    """The job's scratch folder; removed when the job ends, however it ends."""
    return catalog.tmp_dir / f"job-{job_id}"


# Called with (job id, kind, where it runs in words) after each job is queued: the CLI prints the
# line, so every command that queues work says where it will run (relman.cli).
ANNOUNCE: list[Callable[[int, str, str], None]] = []


def where_it_runs(catalog: "Catalog", kind: str) -> str:
    """"runs locally" or "runs on Ray at ADDR": the catalog's executor setting, for the kinds a Ray
    executor takes (the others run as local processes beside it)."""
    from relman.jobs.ray_executor import REMOTE_KINDS, SETTING_ADDRESS

    address = catalog.get_setting(SETTING_ADDRESS) or os.environ.get("RELMAN_RAY_ADDRESS")
    return f"runs on Ray at {address}" if address and kind in REMOTE_KINDS else "runs locally"


def enqueue(catalog: "Catalog", kind: str, params: Mapping[str, Any] | None = None, *, device: str = "auto",
            actor: str | None = None, parent_job_id: int | None = None) -> int:
    """Queue a job of a registered kind; returns its id. The row and its 'job-queued' audit
    event commit together. Nothing is imported or started here. The row's message says where
    the job will run (the Jobs view and `relman jobs` show it), and `ANNOUNCE` hears of it."""
    from relman.catalog import integrity
    from relman.jobs.kinds import JOB_KINDS

    if kind not in JOB_KINDS:
        raise JobError(f"unknown job kind '{kind}' (known: {', '.join(sorted(JOB_KINDS))})")
    params = dict(params or {})
    try:
        params_text = json.dumps(params, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise JobError(f"parameters of a '{kind}' job must be plain JSON values ({e})") from None
    device = normalize_device(device)
    actor = _user(actor)
    where = where_it_runs(catalog, kind)
    with catalog.transaction():
        if parent_job_id is not None and not catalog.conn.execute(
                "SELECT 1 FROM jobs WHERE id = ?", [parent_job_id]).fetchone():
            raise NotFound(f"no job with id {parent_job_id} (given as parent job)")
        cur = catalog.conn.execute(
            "INSERT INTO jobs (kind, params, status, device, created_at, created_by, parent_job_id, message)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [kind, params_text, QUEUED, device, _now(), actor, parent_job_id, f"queued; {where}"])
        job_id = int(cur.lastrowid)
        catalog.conn.execute("UPDATE jobs SET log_path = ? WHERE id = ?", [str(log_path_for(catalog, job_id)), job_id])
        integrity.commit_event(catalog.db, at=_now(), actor=actor, kind="job-queued", model=None, version=None,
                               payload={"job": job_id, "kind": kind, "device": device, "params": params,
                                        "parent_job": parent_job_id})
    for announce in ANNOUNCE:
        announce(job_id, kind, where)
    return job_id


def _decode(row: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["params"] = json.loads(out.get("params") or "{}")
    out["result"] = json.loads(out["result"]) if out.get("result") else None
    out["cause_evidence"] = json.loads(out["cause_evidence"]) if out.get("cause_evidence") else None
    return out


def get_job(catalog: "Catalog", job_id: int) -> dict[str, Any]:
    """The job row as a dict (params and result decoded from JSON)."""
    if not -(2**63) <= int(job_id) < 2**63:  # SQLite cannot even compare it: no such job
        raise NotFound(f"no job with id {job_id}")
    rows = catalog.query("SELECT * FROM jobs WHERE id = ?", [int(job_id)])
    if not rows:
        raise NotFound(f"no job with id {job_id}")
    return _decode(rows[0])


def list_jobs(catalog: "Catalog", *, statuses: Iterable[str] | None = None, kind: str | None = None,
              limit: int | None = None, ids: Iterable[int] | None = None) -> list[dict[str, Any]]:
    """Jobs, newest first, optionally filtered by status, kind or ids."""
    sql = "SELECT * FROM jobs"
    where: list[str] = []
    params: list[Any] = []
    if statuses:
        statuses = list(statuses)
        bad = [s for s in statuses if s not in STATUSES]
        if bad:
            raise JobError(f"unknown job status '{bad[0]}' (known: {', '.join(STATUSES)})")
        where.append(f"status IN ({', '.join('?' * len(statuses))})")
        params += statuses
    if kind:
        where.append("kind = ?")
        params.append(kind)
    if ids is not None:
        ids = [int(i) for i in ids]
        where.append(f"id IN ({', '.join('?' * len(ids)) or 'NULL'})")
        params += ids
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC"
    if limit:
        sql += f" LIMIT {int(limit)}"
    return [_decode(r) for r in catalog.query(sql, params)]


def spawned_jobs(catalog: "Catalog", job_ids: Iterable[int]) -> list[int]:
    """`job_ids` plus every job queued by them, transitively (through parent_job_id)."""
    seen: list[int] = []
    frontier = [int(j) for j in job_ids]
    while frontier:
        new = [j for j in frontier if j not in seen]
        seen += new
        if not new:
            break
        marks = ", ".join("?" * len(new))
        frontier = [r[0] for r in catalog.conn.execute(
            f"SELECT id FROM jobs WHERE parent_job_id IN ({marks}) ORDER BY id", new)]
    return seen


def request_cancel(catalog: "Catalog", job_id: int, *, actor: str | None = None) -> str:
    """Cancel a job: a queued one ends at once; a running one gets the flag, which the job
    honours at its next step (the runner terminates it after the grace period).
    Returns the status after the request."""
    from relman.catalog import integrity

    actor = _user(actor)
    with catalog.transaction():
        row = catalog.conn.execute("SELECT status, cancel_requested FROM jobs WHERE id = ?", [job_id]).fetchone()
        if row is None:
            raise NotFound(f"no job with id {job_id}")
        status, already = row
        if status in FINISHED:
            raise JobError(f"job {job_id} has already {status}; nothing to cancel")
        now = _now()
        if status == QUEUED:
            catalog.conn.execute(
                "UPDATE jobs SET status = ?, cancel_requested = 1, cancel_requested_at = ?, finished_at = ?,"
                " message = 'cancelled before it started' WHERE id = ? AND status = ?",
                [CANCELLED, now, now, job_id, QUEUED])
            new_status = CANCELLED
        else:
            if already:
                return RUNNING
            catalog.conn.execute(
                "UPDATE jobs SET cancel_requested = 1, cancel_requested_at = ? WHERE id = ?", [now, job_id])
            new_status = RUNNING
        integrity.commit_event(catalog.db, at=now, actor=actor, kind="job-cancel", model=None, version=None,
                               payload={"job": job_id, "was": status})
    return new_status


def retry(catalog: "Catalog", job_id: int, *, actor: str | None = None) -> int:
    """Queue a failed or cancelled job again (same id, kind, params and device). Returns the
    number of attempts made so far. A version an earlier attempt committed stays linked
    (`result_version_id`), so the retry adopts it instead of storing a duplicate."""
    from relman.catalog import integrity

    actor = _user(actor)
    with catalog.transaction():
        row = catalog.conn.execute("SELECT status, attempts FROM jobs WHERE id = ?", [job_id]).fetchone()
        if row is None:
            raise NotFound(f"no job with id {job_id}")
        status, attempts = row
        if status not in (FAILED, CANCELLED):
            raise JobError(f"job {job_id} is {status}; only failed or cancelled jobs can be retried")
        catalog.conn.execute(
            "UPDATE jobs SET status = ?, progress = 0, message = '', error = NULL, result = NULL, pid = NULL,"
            " cause = NULL, cause_evidence = NULL,"
            " heartbeat_at = NULL, device_used = NULL, started_at = NULL, finished_at = NULL,"
            " cancel_requested = 0, cancel_requested_at = NULL WHERE id = ?",
            [QUEUED, job_id])
        integrity.commit_event(catalog.db, at=_now(), actor=actor, kind="job-retry", model=None, version=None,
                               payload={"job": job_id, "was": status, "attempts": attempts})
    return int(attempts)


def finish(catalog: "Catalog", job_id: int, status: str, *, error: str | None = None, message: str | None = None,
           result: Mapping[str, Any] | None = None, from_status: str = RUNNING, cause: str | None = None,
           evidence: Mapping[str, Any] | None = None) -> bool:
    """Move a running (or, with `from_status`, a queued) job to a final status, with its audit
    event. Returns False when the job was no longer in `from_status` (someone else already
    decided its outcome). A failed job records its typed `cause` (relman.jobs.causes; `bug` when
    the caller names none) and the `evidence` it rests on; a cancelled one `cancelled`."""
    from relman.catalog import integrity
    from relman.jobs import causes

    assert status in FINISHED, status
    if status == FAILED and cause is None:
        cause = causes.BUG
    if status == CANCELLED:
        cause = causes.CANCELLED
    assert cause is None or cause in causes.CAUSES, cause
    now = _now()
    with catalog.transaction():
        sets = ["status = ?", "finished_at = ?", "error = ?", "cause = ?", "cause_evidence = ?"]
        args: list[Any] = [status, now, error, cause if status != SUCCEEDED else None,
                           json.dumps(dict(evidence), default=str, sort_keys=True) if evidence else None]
        if message is not None:
            sets.append("message = ?")
            args.append(message)
        if status == SUCCEEDED:
            sets += ["progress = 1", "result = ?"]
            args.append(json.dumps(dict(result or {}), default=str, sort_keys=True))
        cur = catalog.conn.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id = ? AND status = ?",
                                   args + [job_id, from_status])
        if cur.rowcount != 1:
            return False
        row = catalog.conn.execute("SELECT kind, result_version_id, created_by FROM jobs WHERE id = ?",
                                   [job_id]).fetchone()
        integrity.commit_event(catalog.db, at=now, actor=row[2], kind=f"job-{status}", model=None, version=None,
                               payload={"job": job_id, "kind": row[0], "error": error, "result_version_id": row[1],
                                        **({"cause": cause} if status == FAILED else {})})
    return True


# -- the runner's, the worker's and a job's own writes --------------------------------------------
def start_attempt(catalog: "Catalog", job_id: int, *, device: str, executor: str, message: str,
                  at: str | None = None) -> bool:
    """A runner takes a queued job for a new attempt (queued -> running on `device`, progress
    reset, `executor` 'local' or 'ray'). False when it was no longer queued (cancelled, or
    taken by another runner). Runs in the caller's transaction when there is one."""
    now = at or _now()
    with catalog.transaction():
        cur = catalog.conn.execute(
            "UPDATE jobs SET status = ?, device_used = ?, started_at = ?, heartbeat_at = ?, pid = NULL,"
            " attempts = attempts + 1, progress = 0, message = ?, finished_at = NULL,"
            " executor = ? WHERE id = ? AND status = ?", [RUNNING, device, now, now, message, executor, job_id, QUEUED])
        return cur.rowcount == 1


def set_pid(catalog: "Catalog", job_id: int, pid: int) -> None:
    """Name the worker process of a running job, unless the worker named itself first."""
    with catalog.transaction():
        catalog.conn.execute("UPDATE jobs SET pid = ? WHERE id = ? AND status = ? AND pid IS NULL",
                             [pid, job_id, RUNNING])


def start_by_hand(catalog: "Catalog", job_id: int, *, device: str, pid: int, at: str | None = None) -> None:
    """A worker started by hand on a queued job claims it itself (queued -> running)."""
    now = at or _now()
    with catalog.transaction():
        catalog.conn.execute(
            "UPDATE jobs SET status = 'running', device_used = ?, started_at = ?, attempts = attempts + 1,"
            " pid = ?, heartbeat_at = ? WHERE id = ?", [device, now, pid, now, job_id])


def take_over(catalog: "Catalog", job_id: int, *, pid: int, at: str | None = None) -> None:
    """The worker the runner started for a running job names its process and beats once."""
    with catalog.transaction():
        catalog.conn.execute("UPDATE jobs SET pid = ?, heartbeat_at = ? WHERE id = ?", [pid, at or _now(), job_id])


def heartbeat(conn: Any, job_id: int, at: str | None = None) -> None:
    """A running job is alive (its worker's heartbeat thread, or the Ray runner relaying a
    remote beat). `conn` is a catalog's connection or the heartbeat thread's own sqlite3
    connection: a beat is one autocommitted statement and touches nothing an event commits."""
    conn.execute("UPDATE jobs SET heartbeat_at = ? WHERE id = ? AND status = ?", [at or _now(), job_id, RUNNING])


def set_executor(catalog: "Catalog", job_id: int, executor: str, *, only_if: str | None = None) -> None:
    """Where a job runs ('local', 'ray', 'ray:<node>'); with `only_if`, only while it still
    reads that (a late start report must not overwrite a settled node)."""
    with catalog.transaction():
        if only_if is None:
            catalog.conn.execute("UPDATE jobs SET executor = ? WHERE id = ?", [executor, job_id])
        else:
            catalog.conn.execute("UPDATE jobs SET executor = ? WHERE id = ? AND executor = ?",
                                 [executor, job_id, only_if])


def report_progress(catalog: "Catalog", job_id: int, fraction: float, message: str, *,
                    heartbeat_at: str | None = None, only_running: bool = False) -> None:
    """A job's progress bar and message (`heartbeat_at` also counts as a beat). `only_running`
    for reports relayed after the fact (Ray): a settled job keeps its final state."""
    sets, args = "progress = ?, message = ?", list[Any]([fraction, message])
    if heartbeat_at is not None:
        sets += ", heartbeat_at = ?"
        args.append(heartbeat_at)
    where, wargs = "id = ?", list[Any]([job_id])
    if only_running:
        where += " AND status = ?"
        wargs.append(RUNNING)
    with catalog.transaction():
        catalog.conn.execute(f"UPDATE jobs SET {sets} WHERE {where}", args + wargs)


def add_points(catalog: "Catalog", points: Iterable[tuple[int, str, float, float]]) -> None:
    """Points of jobs' live curves: (job id, series, step, value) each (the GUI's loss plot),
    stamped with the job's current attempt (a retry starts its curves anew)."""
    points = list(points)
    if points:
        with catalog.transaction():
            catalog.conn.executemany(
                "INSERT INTO job_points (job_id, series, step, value, attempt)"
                " VALUES (?, ?, ?, ?, (SELECT attempts FROM jobs WHERE id = ?1))", points)


def elapsed_seconds(job: Mapping[str, Any], now: datetime | None = None) -> float | None:
    """Seconds a job has run (until now while running)."""
    from datetime import timezone

    if not job.get("started_at"):
        return None
    start = datetime.fromisoformat(job["started_at"])
    end = datetime.fromisoformat(job["finished_at"]) if job.get("finished_at") else (now or datetime.now(timezone.utc))
    return max(0.0, (end - start).total_seconds())
