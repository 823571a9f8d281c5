"""Latency suite: how long one inference call takes, at each batch size and sequence length.

Method (what trustworthy benchmarks do): inputs are prepared and moved to the device before
timing, so only inference is timed; `warmup` runs are discarded; then runs are timed one by
one until `min_samples` (default 200, enough for a stable p95/p99) or the `time_budget_s`
is spent; thread counts are set and recorded; on CUDA each run is bracketed by CUDA events and
synchronised, so asynchronous kernel launches are not mistaken for finished work. Each version
is measured in its own worker process (one evaluate job per version).

Metrics (suite "latency"), for the first batch size and sequence length under plain names —
`latency_p50_ms`, `latency_p90_ms`, `latency_p95_ms`, `latency_p99_ms`, `latency_mean_ms`,
`latency_std_ms`, `throughput_sps` (rows per second = batch size / mean latency) — and for
every other configuration with a suffix: `latency_p50_ms@b8` (image models), or
`latency_p50_ms@b8s128` (text models). Context: batch_size, seq_len, samples, warmup,
timer ("perf_counter" or "cuda_events"), whether the inputs came from the dataset, and —
in a queued job — `concurrent_jobs`, the most other jobs seen running around the measurement
(non-zero means the figure shared the machine; for comparisons run the queue with one CPU
slot, `relman jobs run --cpu-slots 1`).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from relman.catalog import Metric
from relman.evaluate.env import SuiteEnv

SUITE = "latency"
PERCENTILES = (50, 90, 95, 99)


def time_calls(call: Callable[[], Any], *, warmup: int, min_samples: int, time_budget_s: float,
               cuda: bool = False) -> np.ndarray:
    """Milliseconds of each timed call, after `warmup` discarded calls."""
    for _ in range(warmup):
        call()
    samples: list[float] = []
    deadline = time.perf_counter() + time_budget_s
    if cuda:
        import torch

        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        while len(samples) < min_samples and (time.perf_counter() < deadline or len(samples) < 5):
            start.record()
            call()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
    else:
        perf = time.perf_counter_ns
        while len(samples) < min_samples and (time.perf_counter() < deadline or len(samples) < 5):
            t0 = perf()
            call()
            samples.append((perf() - t0) / 1e6)
    return np.asarray(samples, dtype=np.float64)


def summarize(ms: np.ndarray, batch_size: int) -> dict[str, float]:
    out = {f"latency_p{p}_ms": float(np.percentile(ms, p)) for p in PERCENTILES}
    out["latency_mean_ms"] = float(ms.mean())
    out["latency_std_ms"] = float(ms.std())
    out["throughput_sps"] = batch_size * 1000.0 / float(ms.mean())
    return out


def other_running_jobs(env: SuiteEnv) -> int | None:
    """How many other jobs the catalog shows running now (None outside a queued job). CPU jobs
    share the machine, so a latency figure taken beside them is recorded as such."""
    ctx = env.ctx
    if ctx is None or getattr(ctx, "job_id", None) is None:
        return None
    row = ctx.catalog.conn.execute("SELECT COUNT(*) FROM jobs WHERE status = 'running' AND id != ?",
                                   [ctx.job_id]).fetchone()
    return int(row[0])


def configurations(env: SuiteEnv, text: bool) -> list[tuple[int, int | None]]:
    seqs = env.seq_lens if text else [None]
    return [(b, s) for b in env.batch_sizes for s in seqs]


def run(env: SuiteEnv) -> list[Metric]:
    runner = env.runner()
    text = runner.spec.modality == "text"
    configs = configurations(env, text)
    warmup = int(env.options.get("warmup", 10))
    min_samples = int(env.options.get("min_samples", 200))
    budget = float(env.options.get("time_budget_s", 20.0))
    cuda = env.device.startswith("cuda") and runner.fmt != "onnx"
    if env.dataset is not None:
        runner.check_dataset(env.dataset)
    out: list[Metric] = []
    for i, (bs, seq) in enumerate(configs):
        if env.dataset is not None:
            batch = runner.prepare(env.dataset.take(np.arange(bs) % len(env.dataset)), seq)
        else:
            batch = runner.prepare_synthetic(bs, seq)
        run_once = lambda: runner.backend.run(batch.native)  # noqa: E731
        before = other_running_jobs(env)
        ms = time_calls(run_once, warmup=warmup, min_samples=min_samples, time_budget_s=budget, cuda=cuda)
        after = other_running_jobs(env)
        used_seq = int(batch.host["input_ids"].shape[1]) if "input_ids" in batch.host else None
        suffix = "" if i == 0 else (f"@b{bs}s{used_seq}" if text else f"@b{bs}")
        ctx = {"batch_size": bs, "seq_len": used_seq, "samples": int(len(ms)), "warmup": warmup,
               "timer": "cuda_events" if cuda else "perf_counter", "inputs": "dataset" if env.dataset else "synthetic"}
        if before is not None:
            ctx["concurrent_jobs"] = max(before, after or 0)
        for name, value in summarize(ms, bs).items():
            out.append(env.metric(SUITE, name + suffix, value, uses_data=env.dataset is not None, **ctx))
        env.progress((i + 1) / len(configs), f"latency b{bs}" + (f" s{used_seq}" if text else ""))
    return out
