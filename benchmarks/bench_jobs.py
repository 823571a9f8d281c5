"""Overhead of the job plumbing (issue 3). Run: `.venv/bin/python benchmarks/bench_jobs.py [--n 15]`.

1. Queue → success of a `noop` job (runner ticking every 10 ms, as the GUI's timer or
   `--wait` would): median and spread over N jobs run one after another, split into
   "queued until the runner claimed it" and "worker process start-up + run + exit record".
2. Catalog writes per second while 4 workers report progress as fast as they can
   (`progress_burst`, no rate limit), and how long the runner's `tick()` and a GUI-style
   jobs query take meanwhile (the GUI calls both from its event loop).
3. The same 4 workers at the normal, rate-limited progress interval: the write rate the
   plumbing actually produces.

Prints the figures; real processes on a real catalog in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relman.catalog import open_catalog  # noqa: E402
from relman.context import HOLD_ENV, HOLD_RELEASE_ENV, held_message  # noqa: E402
from relman.jobs.queue import FINISHED, enqueue, get_job  # noqa: E402
from relman.jobs.runner import Runner  # noqa: E402


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def secs(a: str, b: str) -> float:
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()


def bench_noop(root: Path, n: int) -> dict[str, float]:
    cat = open_catalog(root / "noop")
    totals, claims, runs = [], [], []
    with Runner(cat, cpu_slots=2) as runner:
        for _ in range(n):
            t0 = time.perf_counter()
            job_id = enqueue(cat, "noop", device="cpu")
            while True:
                runner.tick()
                row = cat.conn.execute("SELECT status FROM jobs WHERE id = ?", [job_id]).fetchone()
                if row[0] in FINISHED:
                    break
                time.sleep(0.01)
            totals.append(time.perf_counter() - t0)
            job = get_job(cat, job_id)
            assert job["status"] == "succeeded", job
            claims.append(secs(job["created_at"], job["started_at"]))
            runs.append(secs(job["started_at"], job["finished_at"]))
            while runner.workers:  # let the process exit before the next one, as in real use
                runner.tick()
                time.sleep(0.005)
    cat.close()
    return {"median_s": statistics.median(totals), "p90_s": pct(totals, 0.9), "min_s": min(totals),
            "claim_median_s": statistics.median(claims), "worker_median_s": statistics.median(runs)}


def bench_writes(root: Path, seconds: float, burst: bool) -> dict[str, float]:
    cat = open_catalog(root / ("burst" if burst else "steady"))
    go = root / f"go-{'burst' if burst else 'steady'}"
    kind, params = (("progress_burst", {"seconds": seconds}) if burst
                    else ("sleep", {"seconds": seconds, "steps": int(seconds * 100)}))
    ids = [enqueue(cat, kind, params, device="cpu") for _ in range(4)]
    tick_ms, query_ms = [], []
    # burst workers wait at hold point "progress_burst.start" (relman.context.hold_here) until
    # all four are up, then start together; workers inherit the variables from this process
    saved = {k: os.environ.get(k) for k in (HOLD_ENV, HOLD_RELEASE_ENV)}
    os.environ.update({HOLD_ENV: "progress_burst.start", HOLD_RELEASE_ENV: str(go)})
    try:
        with Runner(cat, cpu_slots=4) as runner:
            runner.tick()
            ready = (lambda j: get_job(cat, j)["message"] == held_message("progress_burst.start")) if burst \
                else (lambda j: get_job(cat, j)["pid"])
            while not all(ready(j) for j in ids):  # all four workers up
                runner.tick()
                time.sleep(0.01)
            if not burst:
                time.sleep(0.5)  # as before: the steady workers settle into their loops
            go.touch()
            t0 = time.perf_counter()
            while True:
                a = time.perf_counter()
                runner.tick()
                b = time.perf_counter()
                rows = cat.query("SELECT id, status, progress, message FROM jobs ORDER BY id DESC LIMIT 100")
                c = time.perf_counter()
                tick_ms.append(1000 * (b - a))
                query_ms.append(1000 * (c - b))
                if all(r["status"] in FINISHED for r in rows) and not runner.workers:
                    break
                time.sleep(0.02)
            wall = time.perf_counter() - t0
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    jobs = [get_job(cat, j) for j in ids]
    assert all(j["status"] == "succeeded" for j in jobs), [j["error"] for j in jobs]
    out = {"tick_p50_ms": statistics.median(tick_ms), "tick_p95_ms": pct(tick_ms, 0.95),
           "query_p95_ms": pct(query_ms, 0.95)}
    if burst:
        writes = sum(j["result"]["writes"] for j in jobs)
        dur = max(j["result"]["seconds"] for j in jobs)
        out.update(writes=writes, writes_per_s=writes / dur, per_worker_per_s=writes / dur / 4)
    else:
        out.update(wall_s=wall)
    cat.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=15, help="noop jobs to time")
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds each progress worker runs")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, python {sys.version.split()[0]}, "
          f"{sys.platform}, bytecode cache {'off' if sys.dont_write_bytecode else 'on'}")
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp:
        root = Path(tmp)
        r = bench_noop(root, args.n)
        print(f"queue -> noop succeeded ({args.n} jobs, one at a time): median {r['median_s'] * 1000:.0f} ms, "
              f"p90 {r['p90_s'] * 1000:.0f} ms, min {r['min_s'] * 1000:.0f} ms "
              f"(queued->claimed median {r['claim_median_s'] * 1000:.0f} ms, "
              f"worker start+run+record median {r['worker_median_s'] * 1000:.0f} ms)")
        w = bench_writes(root, args.seconds, burst=True)
        print(f"4 workers writing progress unthrottled for {args.seconds:.0f} s: {w['writes']} writes, "
              f"{w['writes_per_s']:.0f} catalog writes/s in total ({w['per_worker_per_s']:.0f}/s per worker); "
              f"meanwhile runner.tick() p50 {w['tick_p50_ms']:.1f} ms / p95 {w['tick_p95_ms']:.1f} ms, "
              f"jobs-table query p95 {w['query_p95_ms']:.2f} ms")
        s = bench_writes(root, args.seconds, burst=False)
        print(f"4 workers at the normal progress rate (every {0.25 * 1000:.0f} ms + 1 s heartbeat): "
              f"runner.tick() p50 {s['tick_p50_ms']:.1f} ms / p95 {s['tick_p95_ms']:.1f} ms, "
              f"jobs-table query p95 {s['query_p95_ms']:.2f} ms")


if __name__ == "__main__":
    main()
