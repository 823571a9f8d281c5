"""Built-in job kinds that exercise the real plumbing (real worker process, real catalog).

They exist for tests, benchmarks and for checking an installation (`relman queue noop
--wait`). `write_version` walks through a job's whole life: scratch files, staged blobs, one
result transaction. Tests stop them at named hold points (`relman.context.hold_here`, the one
hold mechanism): "sleep.end", "write_version.<start|staged|in-commit|after-commit>" and
"progress_burst.start", then cancel, kill -9 or fail the worker exactly there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relman.context import CatalogWork, WorkContext, hold_here

if TYPE_CHECKING:
    from relman.jobs.context import JobContext

# The hold points of `write_version`, in order (each named "write_version.<point>").
WRITE_POINTS = ("start", "staged", "in-commit", "after-commit")


def noop(params: dict[str, Any], ctx: WorkContext) -> dict[str, Any]:
    """Does nothing: measures the plumbing's own overhead."""
    ctx.progress(1.0, "done")
    return {"device": ctx.device}


def sleep(params: dict[str, Any], ctx: "JobContext") -> dict[str, Any]:
    """Sleep `seconds` in `steps`, reporting progress and honouring cancel between steps.

    `ignore_cancel` keeps reporting but never stops by itself (the runner must terminate it);
    at the end it passes hold point "sleep.end" (cancellable unless `ignore_cancel`);
    `ignore_sigterm` also ignores SIGTERM (only SIGKILL stops it); `spawn_child` starts a
    child process first, to check that nothing outlives a cancelled job; `curve` reports
    two live curves (train_loss, eval_loss), a point of each per step."""
    seconds = float(params.get("seconds", 1.0))
    steps = max(1, int(params.get("steps", 10)))
    ignore_cancel = bool(params.get("ignore_cancel", False))
    if params.get("ignore_sigterm"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = None
    if params.get("spawn_child"):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        ctx.log("started child process %d", child.pid)
        ctx.progress(0.0, f"child {child.pid}", check_cancel=False)
        ctx.flush()
    for i in range(steps):
        time.sleep(seconds / steps)
        ctx.progress((i + 1) / steps, f"step {i + 1}/{steps}", check_cancel=not ignore_cancel)
        if params.get("curve"):  # a live curve, as a training job draws one (the GUI's stress test)
            ctx.point("train_loss", i, 1.0 / (i + 1))
            ctx.point("eval_loss", i, 1.2 / (i + 1))
    hold_here("sleep.end", ctx, cancellable=not ignore_cancel)
    if child is not None:
        child.kill()
        child.wait()
    return {"slept": seconds, "steps": steps, "device": ctx.device}


def fail(params: dict[str, Any], ctx: WorkContext) -> None:
    """Reports some progress, then raises (with a multi-line message, to check that only the
    first line lands in the row). `error` picks what is raised, for the typed causes
    (relman.jobs.causes): "runtime" (default: a bug), "relman" (a RelmanError: bad input),
    "memory" (MemoryError), "disk_full" (OSError ENOSPC)."""
    import errno

    from relman.errors import RelmanError

    ctx.progress(0.5, "about to fail")
    message = params.get("message", "this job fails on purpose\n(second line: only in the log)")
    kind = params.get("error", "runtime")
    if kind == "relman":
        raise RelmanError(message)
    if kind == "memory":
        raise MemoryError(message)
    if kind == "disk_full":
        raise OSError(errno.ENOSPC, "No space left on device")
    raise RuntimeError(message)


def _reach(ctx: CatalogWork, point: str, fraction: float) -> None:
    """Report reaching `point` (outside the result transaction: nobody else could see it), then
    pass its hold point."""
    if not ctx.catalog.conn.in_transaction:
        ctx.progress(fraction, f"at {point}")
    hold_here(f"write_version.{point}", ctx)


def write_version(params: dict[str, Any], ctx: CatalogWork) -> dict[str, Any]:
    """Write `files` random files, stage them as blobs, and commit them as a new version of
    `model` in one transaction (with the job's result id), passing the hold points of
    WRITE_POINTS on the way."""
    model = str(params.get("model", "jobtest"))
    n = int(params.get("files", 2))
    size = int(params.get("size", 4096))
    _reach(ctx, "start", 0.1)
    files: dict[str, Path] = {}
    for i in range(n):
        f = ctx.workdir / f"part-{i}.bin"
        f.write_bytes(os.urandom(size))
        files[f"part-{i}.bin"] = f
    with ctx.catalog.staged_blobs(ctx.owner) as stage:
        for f in files.values():
            stage.put(f)
    _reach(ctx, "staged", 0.5)
    with ctx.catalog.transaction():
        v = ctx.catalog.add_version(model, files, format="raw", recipe={"name": "write_version"},
                                    owner=ctx.owner, job_id=ctx.job_id, event_kind="job-result", actor=ctx.actor)
        _reach(ctx, "in-commit", 0.9)
    _reach(ctx, "after-commit", 0.95)
    return {"version": v.ref, "version_id": v.id}


def device_info(params: dict[str, Any], ctx: WorkContext) -> dict[str, Any]:
    """Computes on `ctx.device` and reports where the tensor really lived."""
    import torch

    t = torch.arange(8, dtype=torch.float32, device=ctx.device) * 2
    out: dict[str, Any] = {"device": str(t.device), "sum": float(t.sum().item()),
                           "cuda_available": torch.cuda.is_available(), "threads": torch.get_num_threads()}
    if t.device.type == "cuda":
        out["name"] = torch.cuda.get_device_name(t.device)
    ctx.progress(1.0, f"computed on {t.device}")
    return out


def spawn(params: dict[str, Any], ctx: CatalogWork) -> dict[str, Any]:
    """Queues follow-up jobs (like a compression queueing evaluations of its result)."""
    ids = [ctx.queue_job(c["kind"], c.get("params", {}), device=c.get("device", "cpu"))
           for c in params.get("children", [])]
    ctx.progress(1.0, f"queued {len(ids)} job(s)")
    return {"children": ids}


def progress_burst(params: dict[str, Any], ctx: "JobContext") -> dict[str, Any]:
    """Writes progress to the catalog as fast as it can for `seconds` (no rate limit), to
    measure how many writes per second the catalog takes from concurrent workers. A benchmark
    starts all workers together by holding them at "progress_burst.start"."""
    seconds = float(params.get("seconds", 2.0))
    hold_here("progress_burst.start", ctx, cancellable=False)
    writes = 0
    t0 = time.monotonic()
    while (elapsed := time.monotonic() - t0) < seconds:
        ctx.progress(min(0.99, elapsed / seconds), f"write {writes}", check_cancel=False)
        ctx.flush()
        writes += 1
    ctx.progress(1.0, f"{writes} writes")
    return {"writes": writes, "seconds": time.monotonic() - t0}
