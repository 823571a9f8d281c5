"""The runner's side of the Ray executor: claim and submit, then settle what the tasks report.

Kept beside `relman.jobs.runner` (which calls `launch_remote` and `pump` only when it has a
remote executor) so the local-process runner reads as before.
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Any

from relman.jobs import causes, queue

if TYPE_CHECKING:
    from relman.jobs.runner import Runner


def launch_remote(runner: "Runner", job: dict[str, Any], report: dict[str, list[int]]) -> bool:
    """Claim a queued job and submit it to the cluster, when the cluster has room for it."""
    from relman.catalog.catalog import utcnow

    ex = runner.remote
    device = ex.device_for(job["device"])
    if device is None:
        queue.finish(runner.catalog, job["id"], queue.FAILED, from_status=queue.QUEUED,
                     error=f"the Ray cluster at {ex.address} has no GPU for a {job['device']} job",
                     cause=causes.BAD_INPUT, evidence={"executor": "ray", "device": job["device"]})
        report["ended"].append(job["id"])
        return False
    exclusive = runner._exclusive(job["kind"], job["params"]) and not device.startswith("cuda")
    cpus = ex.node_cpus() if exclusive else 1  # a timing job takes its node whole (see ray_executor)
    if not ex.has_room(device, cpus, exclusive):
        return False
    now = utcnow()
    if not queue.start_attempt(runner.catalog, job["id"], device=device, executor="ray", message="submitted to Ray",
                               at=now):
        return False
    row = queue.get_job(runner.catalog, job["id"])
    try:
        ex.submit(runner.catalog, row, device, threads=cpus, exclusive=exclusive)
    except Exception as e:  # the cluster went away between ticks, a blob is unreadable ...
        from relman.jobs.worker import one_line

        queue.finish(runner.catalog, job["id"], queue.FAILED, error=f"could not submit to Ray: {one_line(e)}",
                     cause=causes.NODE_LOST, evidence={"executor": "ray", "exception": type(e).__name__})
        report["ended"].append(job["id"])
        return False
    alone = f", alone on its node ({cpus} CPUs)" if exclusive else ""
    _log(runner, job["id"], f"=== attempt {row['attempts']}: submitted to Ray at {ex.address} on {device}{alone} ===")
    report["started"].append(job["id"])
    return True


def _log(runner: "Runner", job_id: int, *lines: str) -> None:
    path = queue.log_path_for(runner.catalog, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for line in lines:
            f.write(line.rstrip("\n") + "\n")


def pump(runner: "Runner", report: dict[str, list[int]]) -> None:
    """Write the remote jobs' progress into the catalog and settle the jobs whose task ended."""
    from relman.catalog.catalog import utcnow

    ex = runner.remote
    cat = runner.catalog
    ex.waiting_exclusive = False  # decided again by this tick's launches, oldest first
    updates = ex.drain()
    if updates:
        now = utcnow()
        with cat.transaction():
            for job_id, u in updates.items():
                if u["started"]:
                    ip, node_id, pid = u["started"]
                    # The report can arrive after the task's result was settled: name the node anyway.
                    queue.set_executor(cat, job_id, f"ray:{ip}/{node_id}", only_if="ray")
                if u["progress"] is not None:
                    fraction, message = u["progress"]
                    queue.report_progress(cat, job_id, fraction, message, only_running=True)
                if u["beat"]:
                    queue.heartbeat(cat.conn, job_id, now)
                if u["points"]:
                    queue.add_points(cat, [(job_id, s, st, v) for s, st, v in u["points"]])
        for job_id, u in updates.items():
            if u["started"]:
                ip, node_id, pid = u["started"]
                _log(runner, job_id, f"running on Ray node {ip}/{node_id}, pid {pid}")
            if u["log"]:
                _log(runner, job_id, *u["log"])
    for job_id, out, failure in ex.finished():
        _settle(runner, job_id, out, failure)
        report["ended"].append(job_id)


def _settle(runner: "Runner", job_id: int, out: dict[str, Any] | None, failure: str | None) -> None:
    from relman.jobs.remote_catalog import IdMap, replay
    from relman.jobs.worker import one_line

    cat = runner.catalog
    scratch = queue.workdir_for(cat, job_id)
    try:
        if failure is not None:
            asked = cat.conn.execute("SELECT cancel_requested FROM jobs WHERE id = ?", [job_id]).fetchone()
            if asked and asked[0]:
                queue.finish(cat, job_id, queue.CANCELLED, message="cancelled (Ray task stopped)")
            else:
                _log(runner, job_id, f"relman runner: job {job_id} failed on Ray: {failure}")
                row = cat.conn.execute("SELECT executor, heartbeat_at, attempts FROM jobs WHERE id = ?",
                                       [job_id]).fetchone()
                node = (row[0] or "ray").partition(":")[2] if row else ""
                queue.finish(cat, job_id, queue.FAILED, error=failure, cause=causes.from_ray_failure(failure),
                             evidence={"executor": "ray", "node": node or None,
                                       "last_heartbeat": row[1] if row else None,
                                       "attempt": row[2] if row else None})
            return
        assert out is not None
        _log(runner, job_id, f"ray task ended {out['status']} on {out['node']} after {out['seconds']} s; "
                             f"blobs fetched {len(out['blobs_fetched'])}/{out['blobs_needed']} "
                             f"({out['bytes_fetched']} bytes)")
        # the task's own word on where it ran (its start report may still be in flight)
        queue.set_executor(cat, job_id, f"ray:{out['node']}")
        if out["status"] == "cancelled":
            queue.finish(cat, job_id, queue.CANCELLED, message=(out["result"] or {}).get("message", "cancelled"))
            return
        ids = IdMap()
        placeholders: dict[int, int] = {}
        try:
            writes = [i for i in out["intents"] if i["op"] != "queue_job"]
            replay(cat, writes, job_id=job_id, scratch=scratch, ids=ids)
            for intent in out["intents"]:
                if intent["op"] == "queue_job":
                    placeholders[intent["placeholder"]] = queue.enqueue(
                        cat, intent["kind"], ids.remap(intent["params"]), device=intent["device"],
                        actor=None, parent_job_id=job_id)
        except Exception as e:
            _log(runner, job_id, f"relman runner: committing the result of job {job_id} failed: {e!r}")
            queue.finish(cat, job_id, queue.FAILED, error=f"committing the Ray task's result failed: {one_line(e)}")
            return
        result = _swap_placeholders(ids.remap(out["result"] if isinstance(out["result"], dict)
                                              else {"value": out["result"]} if out["result"] is not None else {}),
                                    placeholders)
        result["ray"] = {"node": out["node"], "cpus": out.get("cpus"), "blobs_fetched": len(out["blobs_fetched"]),
                         "blobs_needed": out["blobs_needed"], "bytes_fetched": out["bytes_fetched"]}
        queue.finish(cat, job_id, queue.SUCCEEDED, result=result, message=out.get("message") or "done")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        cat.release_pending(f"job:{job_id}")


def _swap_placeholders(obj: Any, placeholders: dict[int, int]) -> Any:
    if isinstance(obj, dict):
        return {k: _swap_placeholders(v, placeholders) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_swap_placeholders(v, placeholders) for v in obj]
    if isinstance(obj, int) and not isinstance(obj, bool):
        return placeholders.get(obj, obj)
    return obj
