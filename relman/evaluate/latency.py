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
(non-zero means the figure shared the machine). Queued latency jobs run in an exclusive slot
(the runner starts nothing else on their device), so this is normally 0.

Paired timing. When the version has a parent and/or its model has a production version (the
evaluate job loads them as comparators, option `paired`, default on), each configuration is
timed for all of them in the same process, in interleaved rounds: each round times
`calls_per_round` calls of every model back to back, the order rotating from round to round
(so neither model always runs first, after the other has warmed the caches), with the same
prepared inputs, threads and warm-up. A round's ratio is median(child calls) / median(other
calls); the stored `latency_p50_ratio_vs_parent` / `latency_p50_ratio_vs_production` is the
median over rounds, with a 95 % percentile-bootstrap interval over rounds in its context
(`interval`). Whatever slows the machine during a round slows both models, so the ratio is
stable where absolute times are not. The child's absolute figures come from the same timed
calls. Each model gets at least `min_samples` timed calls per configuration unless
`time_budget_s` runs out first; the context then says `bounded_by: time_budget_s`.
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


CALLS_PER_ROUND = 10
MIN_ROUNDS = 5


def other_running_jobs(env: SuiteEnv) -> int | None:
    """How many other jobs the catalog shows running now (None outside a queued job)."""
    ids = other_job_ids(env)
    return None if ids is None else len(ids)


def other_job_ids(env: SuiteEnv) -> list[int] | None:
    """Ids of the other jobs the catalog shows running now (None outside a queued job). CPU
    jobs share the machine, so a latency figure taken beside them is recorded as such."""
    ctx = env.ctx
    if ctx is None or getattr(ctx, "job_id", None) is None:
        return None
    return [int(r[0]) for r in ctx.catalog.conn.execute(
        "SELECT id FROM jobs WHERE status = 'running' AND id != ? ORDER BY id", [ctx.job_id])]


def interleaved_rounds(calls: list[Callable[[], Any]], *, warmup: int, min_samples: int, time_budget_s: float,
                       calls_per_round: int = CALLS_PER_ROUND, cuda: bool = False,
                       between_rounds: Callable[[], Any] | None = None) -> tuple[list[np.ndarray], bool]:
    """Time several models in rounds: per round `calls_per_round` calls of each, in an order
    that rotates every round. Returns ([rounds × calls] ms per model, whether the time budget
    cut it short of `min_samples` calls per model)."""
    m = len(calls)
    for call in calls:
        for _ in range(warmup):
            call()
    timers = [_timer(call, cuda) for call in calls]
    per_model: list[list[np.ndarray]] = [[] for _ in range(m)]
    need_rounds = max(MIN_ROUNDS, -(-min_samples // calls_per_round))
    deadline = time.perf_counter() + time_budget_s
    r = 0
    while r < need_rounds and (time.perf_counter() < deadline or r < MIN_ROUNDS):
        order = [(r + j) % m for j in range(m)]
        if (r // m) % 2 == 1:
            order.reverse()
        for k in order:
            per_model[k].append(timers[k](calls_per_round))
        r += 1
        if between_rounds is not None:
            between_rounds()
    bounded = r < need_rounds
    return [np.stack(rounds) for rounds in per_model], bounded


def _timer(call: Callable[[], Any], cuda: bool) -> Callable[[int], np.ndarray]:
    if cuda:
        import torch

        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def timed(n: int) -> np.ndarray:
            out = np.empty(n)
            torch.cuda.synchronize()
            for i in range(n):
                start.record()
                call()
                end.record()
                end.synchronize()
                out[i] = start.elapsed_time(end)
            return out
        return timed
    perf = time.perf_counter_ns

    def timed_cpu(n: int) -> np.ndarray:
        out = np.empty(n)
        for i in range(n):
            t0 = perf()
            call()
            out[i] = (perf() - t0) / 1e6
        return out
    return timed_cpu


def round_ratios(child: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Per round: median of the child's calls / median of the other model's calls."""
    return np.median(child, axis=1) / np.median(other, axis=1)


def configurations(env: SuiteEnv, text: bool) -> list[tuple[int, int | None]]:
    seqs = env.seq_lens if text else [None]
    return [(b, s) for b in env.batch_sizes for s in seqs]


def _batch(runner: Any, env: SuiteEnv, bs: int, seq: int | None) -> Any:
    if env.dataset is not None:
        return runner.prepare(env.dataset.take(np.arange(bs) % len(env.dataset)), seq)
    return runner.prepare_synthetic(bs, seq)


def run(env: SuiteEnv) -> list[Metric]:
    from relman.evaluate.stats import bootstrap_median_ratio

    runner = env.runner()
    text = runner.task != "image-classification"
    configs = configurations(env, text)
    warmup = int(env.options.get("warmup", 10))
    min_samples = int(env.options.get("min_samples", 200))
    budget = float(env.options.get("time_budget_s", 20.0))
    cuda = env.device.startswith("cuda") and runner.fmt != "onnx"
    if env.dataset is not None:
        runner.check_dataset(env.dataset)
    others = env.comparators() if env.options.get("paired", True) else {}
    out: list[Metric] = []
    for i, (bs, seq) in enumerate(configs):
        batch = _batch(runner, env, bs, seq)
        calls = [lambda b=batch: runner.backend.run(b.native)]
        for cmp in others:
            ob = _batch(cmp.runner, env, bs, seq)
            calls.append(lambda o=cmp.runner, b=ob: o.backend.run(b.native))
        seen: set[int] = set()
        loads: list[float] = []

        def watch() -> None:
            ids = other_job_ids(env)
            if ids:
                seen.update(ids)
            loads.append(_load1())

        watch()
        per_round = max(1, min(CALLS_PER_ROUND, min_samples // MIN_ROUNDS))
        rounds, bounded = interleaved_rounds(calls, warmup=warmup, min_samples=min_samples, time_budget_s=budget,
                                             calls_per_round=per_round,
                                             cuda=cuda and all(c.runner.fmt != "onnx" for c in others),
                                             between_rounds=watch)
        ms = rounds[0].ravel()
        used_seq = int(batch.host["input_ids"].shape[1]) if "input_ids" in batch.host else None
        suffix = "" if i == 0 else (f"@b{bs}s{used_seq}" if text else f"@b{bs}")
        ctx: dict[str, Any] = {
            "batch_size": bs, "seq_len": used_seq, "samples": int(len(ms)), "warmup": warmup,
            "timer": "cuda_events" if cuda else "perf_counter", "inputs": "dataset" if env.dataset else "synthetic",
            "rounds": int(rounds[0].shape[0]), "calls_per_round": int(rounds[0].shape[1]),
            "paired_with": [c.ref for c in others]}
        if bounded:
            ctx["bounded_by"] = "time_budget_s"
        if env.ctx is not None and getattr(env.ctx, "job_id", None) is not None:
            ctx["other_jobs"] = sorted(seen)
            ctx["concurrent_jobs"] = len(seen)
        ctx["load_avg_1m"] = max(loads) if loads else _load1()
        for name, value in summarize(ms, bs).items():
            out.append(env.metric(SUITE, name + suffix, value, uses_data=env.dataset is not None, **ctx))
        for k, cmp in enumerate(others, start=1):
            ratio = bootstrap_median_ratio(round_ratios(rounds[0], rounds[k]))
            for scope in cmp.scopes:
                out.append(env.metric(
                    SUITE, f"latency_p50_ratio_vs_{scope}{suffix}", ratio["value"],
                    uses_data=env.dataset is not None, **ctx, interval=[ratio["lower"], ratio["upper"]],
                    interval_level=0.95, reference=cmp.ref, reference_p50_ms=float(np.median(rounds[k])),
                    method="median over interleaved rounds of child/reference round medians; "
                           "percentile bootstrap over rounds (2000)"))
        env.progress((i + 1) / len(configs), f"latency b{bs}" + (f" s{used_seq}" if text else ""))
    return out


def _load1() -> float:
    import os

    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):  # Windows
        return -1.0
