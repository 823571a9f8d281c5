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

Causal LMs also get generation figures (option `generation`, default on): time to first token
and decode tokens per second, paired the same way; see `relman.evaluate.generation_latency`.

Paired timing. When the version has a parent and/or its model has a production version (the
evaluate job loads them as comparators, option `paired`, default on), each configuration is
timed for all of them in the same process, in interleaved rounds: a round is `calls_per_round`
steps, each step times one call of every model back to back, the order rotating from step to
step (so neither model always runs first, right after the other has filled the caches), with
the same prepared inputs, threads and warm-up. A round's ratio is median(child calls) / median(other
calls); the stored `latency_p50_ratio_vs_parent` / `latency_p50_ratio_vs_production` is the
median over rounds, with a 95 % percentile-bootstrap interval over rounds in its context
(`interval`). Whatever slows the machine for a few milliseconds slows both models alike, so
the ratio is stable where absolute times are not. When every model runs single-threaded on
the CPU, each call's thread CPU time is read as well, and calls during which the thread was
descheduled (another process had the core: wall time well above CPU time) are left out of the
ratio — on an overloaded machine those are most of the noise; the context records their share
(`descheduled_share`). Absolute figures keep every call. The child's absolute figures come from the same timed
calls. Each model gets at least `min_samples` timed calls per configuration unless
`time_budget_s` runs out first; the context then says `bounded_by: time_budget_s`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
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
    return ctx.catalog.running_job_ids(exclude=ctx.job_id)


@dataclass
class Rounds:
    """Per model: wall-clock ms of every timed call [rounds × calls], and which calls ran
    undisturbed (the timing thread was not descheduled; all True where that cannot be told)."""

    wall: list[np.ndarray]
    clean: list[np.ndarray]
    bounded: bool
    checks_descheduling: bool

    @property
    def rounds(self) -> int:
        return int(self.wall[0].shape[0])

    def descheduled_share(self, k: int) -> float:
        return float(1.0 - self.clean[k].mean())


def interleaved_rounds(calls: list[Callable[[], Any]], *, warmup: int, min_samples: int, time_budget_s: float,
                       calls_per_round: int = CALLS_PER_ROUND, cuda: bool = False, single_thread: bool = False,
                       between_rounds: Callable[[], Any] | None = None) -> Rounds:
    """Time several models in rounds of `calls_per_round` steps; each step times one call of
    every model back to back, the order rotating from step to step (so no model always runs
    first, right after another has filled the caches). Whatever disturbs the machine for a
    few milliseconds disturbs all of them alike.

    With `single_thread` (CPU inference on the calling thread) each call's thread CPU time is
    read too: a call whose wall time exceeds it by more than 5 % (and 50 µs) was descheduled —
    another process had the core — and is marked unclean, so ratios can leave it out. Rounds
    continue until `min_samples` / `calls_per_round` rounds have at least one clean call of
    every model, or `time_budget_s` is spent (after at least MIN_ROUNDS rounds)."""
    m = len(calls)
    for call in calls:
        for _ in range(warmup):
            call()
    timed = [_timer(call, cuda, single_thread) for call in calls]
    walls: list[list[np.ndarray]] = [[] for _ in range(m)]
    cleans: list[list[np.ndarray]] = [[] for _ in range(m)]
    need_rounds = max(MIN_ROUNDS, -(-min_samples // calls_per_round))
    deadline = time.perf_counter() + time_budget_s
    good = r = step = 0
    while good < need_rounds and (time.perf_counter() < deadline or r < MIN_ROUNDS):
        wall = np.empty((m, calls_per_round))
        cpu = np.empty((m, calls_per_round))
        for i in range(calls_per_round):
            for j in range(m):
                k = (step + j) % m
                wall[k, i], cpu[k, i] = timed[k]()
            step += 1
        clean = (wall - cpu <= np.maximum(0.05, 0.05 * wall)) if single_thread else np.ones_like(wall, dtype=bool)
        for k in range(m):
            walls[k].append(wall[k])
            cleans[k].append(clean[k])
        good += int(np.all(clean.sum(axis=1) >= 1))
        r += 1
        if between_rounds is not None:
            between_rounds()
    return Rounds([np.stack(w) for w in walls], [np.stack(c) for c in cleans], good < need_rounds, single_thread)


def _timer(call: Callable[[], Any], cuda: bool, cpu_clock: bool) -> Callable[[], tuple[float, float]]:
    """A function timing one call of `call`: (wall ms, thread CPU ms — or the wall ms again
    where the CPU time does not tell whether the thread was descheduled)."""
    if cuda:
        import torch

        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def timed() -> tuple[float, float]:
            start.record()
            call()
            end.record()
            end.synchronize()
            ms = float(start.elapsed_time(end))
            return ms, ms
        torch.cuda.synchronize()
        return timed
    perf, thread = time.perf_counter_ns, time.thread_time_ns

    def timed_cpu() -> tuple[float, float]:
        c0 = thread()
        t0 = perf()
        call()
        t1 = perf()
        c1 = thread()
        return (t1 - t0) / 1e6, ((c1 - c0) / 1e6 if cpu_clock else (t1 - t0) / 1e6)
    return timed_cpu


def round_ratios(child: np.ndarray, other: np.ndarray, child_clean: np.ndarray | None = None,
                 other_clean: np.ndarray | None = None) -> np.ndarray:
    """Per round: median of the child's calls / median of the other model's calls, over the
    undisturbed calls only (rounds without one of either are left out)."""
    if child_clean is None or other_clean is None:
        return np.median(child, axis=1) / np.median(other, axis=1)
    out = []
    for r in range(child.shape[0]):
        c, o = child[r][child_clean[r]], other[r][other_clean[r]]
        if c.size and o.size:
            out.append(float(np.median(c) / np.median(o)))
    return np.asarray(out)


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
    text = runner.spec.modality == "text"
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

        def watch(seen: set[int] = seen, loads: list[float] = loads) -> None:  # bound: defined per loop pass
            ids = other_job_ids(env)
            if ids:
                seen.update(ids)
            loads.append(_load1())

        watch()
        per_round = max(3, min(CALLS_PER_ROUND, min_samples // MIN_ROUNDS))
        use_cuda = cuda and all(c.runner.fmt != "onnx" for c in others)
        # descheduled calls only matter to ratios: unpaired timing keeps exactly min_samples calls
        single = bool(others) and not use_cuda and all(
            _threads_of(r) == 1 for r in [runner] + [c.runner for c in others])
        timing = interleaved_rounds(calls, warmup=warmup, min_samples=min_samples, time_budget_s=budget,
                                    calls_per_round=per_round, cuda=use_cuda, single_thread=single,
                                    between_rounds=watch)
        rounds, bounded = timing.wall, timing.bounded
        ms = rounds[0].ravel()
        used_seq = int(batch.host["input_ids"].shape[1]) if "input_ids" in batch.host else None
        suffix = "" if i == 0 else (f"@b{bs}s{used_seq}" if text else f"@b{bs}")
        ctx: dict[str, Any] = {
            "batch_size": bs, "seq_len": used_seq, "samples": int(len(ms)), "warmup": warmup,
            "timer": "cuda_events" if cuda else "perf_counter", "inputs": "dataset" if env.dataset else "synthetic",
            "rounds": int(rounds[0].shape[0]), "calls_per_round": int(rounds[0].shape[1]),
            "paired_with": [c.ref for c in others]}
        if single:  # share of the calls during which another process had the core
            ctx["descheduled_share"] = round(timing.descheduled_share(0), 4)
        if bounded:
            ctx["bounded_by"] = "time_budget_s"
        if env.ctx is not None and getattr(env.ctx, "job_id", None) is not None:
            ctx["other_jobs"] = sorted(seen)
            ctx["concurrent_jobs"] = len(seen)
        ctx["load_avg_1m"] = max(loads) if loads else _load1()
        for name, value in summarize(ms, bs).items():
            out.append(env.metric(SUITE, name + suffix, value, uses_data=env.dataset is not None, **ctx))
        for k, cmp in enumerate(others, start=1):
            per_round_ratio = round_ratios(rounds[0], rounds[k], timing.clean[0], timing.clean[k])
            if per_round_ratio.size == 0:  # every round disturbed: no ratio rather than a wrong one
                continue
            ratio = bootstrap_median_ratio(per_round_ratio)
            for scope in cmp.scopes:
                out.append(env.metric(
                    SUITE, f"latency_p50_ratio_vs_{scope}{suffix}", ratio["value"],
                    uses_data=env.dataset is not None, **ctx, interval=[ratio["lower"], ratio["upper"]],
                    interval_level=0.95, reference=cmp.ref, reference_p50_ms=float(np.median(rounds[k])),
                    ratio_rounds=int(per_round_ratio.size),
                    method="median over interleaved rounds of child/reference round medians"
                           + (" of undisturbed calls (thread not descheduled)" if single else "")
                           + "; percentile bootstrap over rounds (2000)"))
        env.progress((i + 1) / len(configs), f"latency b{bs}" + (f" s{used_seq}" if text else ""))
    if runner.spec.causal and env.options.get("generation", True):
        out += _generation(env, runner, others)
    return out


def _generation(env: SuiteEnv, runner: Any, others: list[Any]) -> list[Metric]:
    """Time to first token and decode tokens/s, paired (relman.evaluate.generation_latency)."""
    from relman.evaluate.generation_latency import run_generation

    env.progress(0.99, "generation: time to first token, tokens/s")
    base: dict[str, Any] = {"paired_with": [c.ref for c in others], "timer": "perf_counter",
                            "inputs": "dataset" if env.dataset else "synthetic", "load_avg_1m": _load1()}
    ids = other_job_ids(env)
    if ids is not None:
        base["other_jobs"], base["concurrent_jobs"] = ids, len(ids)
    return run_generation(env, runner, others, base)


def _threads_of(runner: Any) -> int | None:
    return getattr(getattr(runner, "backend", None), "threads", None)


def _load1() -> float:
    import os

    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):  # Windows
        return -1.0
