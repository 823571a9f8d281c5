"""What runs inside a Ray task: one relman job, away from the catalog's machine.

The task gets the job's spec (kind, params, device, the catalog snapshot of
`relman.jobs.remote_catalog`) and the ObjectRefs of the blobs the job reads, keyed by sha256.
It keeps a blob cache per node, laid out like the catalog's store: a blob already there (an
earlier job on this node used it) is not fetched again, so a blob crosses the network once per
node; a fetched blob is re-hashed before it is used. Then it calls the job kind's own
`run(params, ctx)` with a `RemoteContext` whose progress, loss points, log lines, heartbeats and
cancel flag travel through the runner's channel actor, and returns the recorded writes for the
runner to commit. The catalog's SQLite file is never opened here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from relman.jobs.context import JobContext

JOB_PLACEHOLDER_BASE = -1_000_000_000  # ids handed out for follow-up jobs until the runner queues them
HEARTBEAT_S = 1.0


def cache_root() -> Path:
    """This machine's relman folder for Ray tasks (blob cache and scratch)."""
    base = os.environ.get("RELMAN_RAY_CACHE")
    return Path(base) if base else Path(tempfile.gettempdir()) / "relman-ray-cache"


def node_cache(node_id: str) -> Path:
    """The node's blob cache. Keyed by node id, so simulated nodes on one machine keep theirs apart."""
    return cache_root() / node_id[:16] / "objects"


class RemoteContext(JobContext):
    """A JobContext whose job-table traffic goes through the runner's channel actor."""

    def __init__(self, catalog: Any, channel: Any, *, job_id: int, device: str, workdir: Path,
                 actor: str | None) -> None:
        super().__init__(catalog, job_id=job_id, device=device, workdir=workdir, actor=actor)
        self.channel = channel

    def flush(self) -> None:
        if self._pending_progress is None and not self._points:
            return
        progress = self._pending_progress
        points = [(s, st, v) for _, s, st, v in self._points]
        self.channel.report.remote(self.job_id, progress, points)
        self._pending_progress = None
        self._points = []
        self._last_progress_write = time.monotonic()

    @property
    def cancelled(self) -> bool:
        import ray

        if self._cancelled:
            return True
        now = time.monotonic()
        if now - self._last_cancel_poll >= 0.25:
            self._last_cancel_poll = now
            try:
                self._cancelled = bool(ray.get(self.channel.is_cancelled.remote(self.job_id), timeout=10))
            except Exception:  # the channel is gone: the runner will cancel the task itself
                pass
        return self._cancelled

    def queue_job(self, kind: str, params: dict[str, Any] | None = None, *, device: str = "auto") -> int:
        intents = self.catalog.intents
        placeholder = JOB_PLACEHOLDER_BASE - len(intents)
        intents.append({"op": "queue_job", "kind": kind, "params": dict(params or {}), "device": device,
                        "placeholder": placeholder})
        return placeholder

    def log(self, message: str, *args: Any) -> None:
        text = message % args if args else message
        self.logger.info(text)
        self.channel.log.remote(self.job_id, text)


def _fetch_blobs(cache: Path, refs: dict[str, Any]) -> tuple[list[str], int]:
    """Put every blob the job reads into the node cache; returns (fetched shas, bytes fetched)."""
    import ray

    from relman.catalog.store import BlobStore
    from relman.errors import IntegrityError

    store = BlobStore(cache)
    store.ensure()
    fetched: list[str] = []
    nbytes = 0
    for sha, ref in sorted(refs.items()):
        if store.has(sha):
            continue
        data = ray.get(ref)
        got, size, _ = store.put_bytes(data)
        if got != sha:
            store.remove(got)
            raise IntegrityError(f"blob {sha[:12]} arrived damaged (its content hashes to {got[:12]})")
        fetched.append(sha)
        nbytes += size
    return fetched, nbytes


def _threads(device: str, num_cpus: float) -> None:
    n = max(1, int(num_cpus))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RELMAN_TORCH_THREADS"):
        os.environ[var] = str(n)


def run_job(spec: dict[str, Any], blob_refs: list[dict[str, Any]], channel: Any) -> dict[str, Any]:
    """The body of the Ray task (wrapped by `relman.jobs.ray_executor`). `blob_refs` is a
    one-element list so Ray hands us the refs instead of fetching every blob up front."""
    import ray

    from relman.errors import JobCancelled
    from relman.jobs import kinds
    from relman.jobs.remote_catalog import open_snapshot

    job_id = int(spec["job_id"])
    os.environ.update(spec.get("hold") or {})  # a test's hold points (a fresh process per job)
    node_id = ray.get_runtime_context().get_node_id()
    ip = ray.util.get_node_ip_address()
    channel.started.remote(job_id, ip, node_id, os.getpid())
    cache = node_cache(node_id)
    t0 = time.monotonic()
    fetched, nbytes = _fetch_blobs(cache, blob_refs[0])
    scratch = cache.parent / "jobs" / f"{job_id}-{uuid.uuid4().hex[:8]}"
    scratch.mkdir(parents=True)
    (scratch / "objects").symlink_to(cache, target_is_directory=True)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            channel.beat.remote(job_id)

    hb = threading.Thread(target=beat, name=f"relman-heartbeat-{job_id}", daemon=True)
    hb.start()
    catalog = open_snapshot(spec["snapshot"], scratch)
    _threads(spec["device"], spec.get("num_cpus", 1))
    ctx = RemoteContext(catalog, channel, job_id=job_id, device=spec["device"], workdir=scratch / "work",
                        actor=spec.get("actor"))
    status, result = "succeeded", None
    try:
        if spec["device"].startswith("cuda"):
            import torch

            torch.cuda.set_device(0)  # Ray exposes the GPU it granted as device 0
        result = kinds.resolve(spec["kind"])(spec["params"], ctx)
        ctx.flush()
    except JobCancelled as e:
        status, result = "cancelled", {"message": str(e) or "cancelled"}
    finally:
        stop.set()
        ctx.flush()
        catalog.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return {"status": status, "result": result, "intents": catalog.intents, "message": ctx.last_progress[1],
            "node": f"{ip}/{node_id}", "cpus": ray.get_runtime_context().get_assigned_resources().get("CPU"),
            "blobs_fetched": fetched, "bytes_fetched": nbytes,
            "blobs_needed": len(blob_refs[0]), "seconds": round(time.monotonic() - t0, 3)}
