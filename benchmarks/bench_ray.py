"""The Ray executor against local worker processes (issue 16).
Run: `.venv/bin/python benchmarks/bench_ray.py [--n 10] [--evals 20]` (needs `relman[ray]`).

1. Latency of a `noop` job, queue → succeeded, run one after another (runner ticking every
   10 ms): local worker process vs a Ray task on a private loopback instance.
2. Throughput of N small evaluation jobs (the `size` and `latency` suites of a tiny BERT at
   batch 1, 20 timed calls) on a simulated two-node cluster (`ray.cluster_utils.Cluster`, 1 CPU
   per node) vs the local runner with 2 CPU slots: wall time for all of them.
3. Bytes shipped per job with a cold node cache (first evaluation of a version on a node) and a
   warm one (the next evaluation of the same version there).

Everything runs on this one machine: the simulated nodes share its cores, so (2) measures the
executor's overhead, not a speed-up. Prints the figures with the machine's load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relman.catalog import open_catalog  # noqa: E402
from relman.jobs.queue import FINISHED, enqueue, get_job  # noqa: E402
from relman.jobs.runner import Runner  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def drive(runner: Runner, cat, ids: list[int], timeout: float = 900.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        runner.tick()
        rows = cat.conn.execute(f"SELECT status FROM jobs WHERE id IN ({','.join('?' * len(ids))})", ids).fetchall()
        if all(r[0] in FINISHED for r in rows):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"jobs {ids} did not finish")
        time.sleep(0.01)


def noop_latency(root: Path, n: int, executor=None) -> list[float]:
    cat = open_catalog(root)
    out = []
    with Runner(cat, cpu_slots=2, executor=executor) as runner:
        for _ in range(n):
            t0 = time.perf_counter()
            job_id = enqueue(cat, "noop", device="cpu")
            drive(runner, cat, [job_id])
            out.append(time.perf_counter() - t0)
            assert get_job(cat, job_id)["status"] == "succeeded"
            while runner.workers:
                runner.tick()
                time.sleep(0.01)
    return out


def tiny_model_catalog(root: Path):
    from relman.app.models import import_model
    from relman.modelio import tiny

    cat = open_catalog(root)
    v = import_model(cat, tiny.tiny_bert_classifier(root.parent / f"{root.name}-bert"), "bert")
    return cat, v


def eval_throughput(root: Path, n: int, executor=None) -> tuple[float, list[dict]]:
    from relman.app.evaluate import queue_evaluation

    cat, v = tiny_model_catalog(root)
    ids: list[int] = []
    t0 = time.perf_counter()
    with Runner(cat, cpu_slots=2, executor=executor) as runner:
        for _ in range(n):
            ids += queue_evaluation(cat, [v.ref], suites=["size", "latency"], device="cpu",
                                    batch_sizes=[1], options={"min_samples": 20, "warmup": 2})
        drive(runner, cat, ids)
    wall = time.perf_counter() - t0
    jobs = [get_job(cat, i) for i in ids]
    assert all(j["status"] == "succeeded" for j in jobs), [j["error"] for j in jobs]
    return wall, jobs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--evals", type=int, default=20)
    args = ap.parse_args()
    import ray
    from ray.cluster_utils import Cluster

    from relman.jobs.ray_executor import RayExecutor

    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()}")
    tmp = Path(tempfile.mkdtemp(prefix="relman-bench-ray-"))
    os.environ["RELMAN_RAY_CACHE"] = str(tmp / "cache")
    env = {"env_vars": {"PYTHONPATH": str(REPO), "RELMAN_RAY_CACHE": str(tmp / "cache")}}

    local = noop_latency(tmp / "noop-local", args.n)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=env)
    remote = noop_latency(tmp / "noop-ray", args.n, RayExecutor("local"))
    ray.shutdown()
    print(f"noop queue→succeeded, median of {args.n}: local {statistics.median(local) * 1000:.0f} ms, "
          f"ray {statistics.median(remote) * 1000:.0f} ms (ratio {statistics.median(remote) / statistics.median(local):.2f})")

    wall_local, _ = eval_throughput(tmp / "eval-local", args.evals)
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.add_node(num_cpus=1)
    ray.init(address=c.address, log_to_driver=False, runtime_env=env)
    c.wait_for_nodes()
    wall_ray, jobs = eval_throughput(tmp / "eval-ray", args.evals, RayExecutor(c.address))
    ray.shutdown()
    c.shutdown()
    print(f"{args.evals} evaluations (size + latency, tiny BERT): local 2 slots {wall_local:.1f} s "
          f"({args.evals / wall_local:.2f} jobs/s), two simulated Ray nodes {wall_ray:.1f} s "
          f"({args.evals / wall_ray:.2f} jobs/s)")
    per_node: dict[str, list[dict]] = {}
    for j in jobs:
        per_node.setdefault(j["result"]["ray"]["node"], []).append(j["result"]["ray"])
    for node, rs in sorted(per_node.items()):
        cold = rs[0]["bytes_fetched"]
        warm = [r["bytes_fetched"] for r in rs[1:]]
        print(f"node {node[:28]}…: {len(rs)} jobs; bytes shipped cold {cold}, warm max {max(warm) if warm else '-'}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
