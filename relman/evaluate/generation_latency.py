"""Generation timing for causal LMs, part of the latency suite: time to first token and decode
tokens per second, paired against the parent / production like the per-call latency ratios.

Why a separate measurement: a causal LM's per-call latency (one whole-sequence forward pass)
says nothing about the KV cache, which is what generation spends its time in. So each model
(the version and its comparators, loaded once in this job, same threads) greedily generates
`generate_tokens` new tokens (EOS ignored, so every call is the same length) after each of
`generation_prompts` prompts of `prompt_tokens` tokens — the same token ids for every model.
A round times one generation of every model per prompt, the order rotating from step to step,
as `latency.interleaved_rounds` does; a round's ratio is median(child) / median(other) over
its calls. Stored (suite "latency"):

- `ttft_p50_ms`, `ttft_mean_ms`: time from the call to the first new token (the prompt's
  forward pass plus one pick);
- `decode_tokens_per_s`: median over calls of (new tokens - 1) / (time after the first);
- `generate_tokens_per_s`: median of new tokens / whole call time;
- `ttft_ratio_vs_<scope>` (child / other; below 1 is faster) and
  `decode_tokens_per_s_ratio_vs_<scope>` (child / other; above 1 is faster): the median over
  rounds with a 95 % percentile-bootstrap interval over rounds in the context.

The context names each model's engine ("torch", "relman-onnx-kv", "onnxruntime-genai",
"relman-onnx-recompute"), so a figure from the recompute fallback is never read as the cached
loop's.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from relman.catalog import Metric
from relman.evaluate.env import SuiteEnv

SUITE = "latency"
MIN_ROUNDS = 5


def prompt_ids(runner: Any, env: SuiteEnv, n: int, length: int) -> list[list[int]]:
    """`n` prompts of `length` tokens: the dataset's texts when one is given (each cut or
    repeated to the length), else random ids from the vocabulary (seeded)."""
    out: list[list[int]] = []
    if env.dataset is not None and env.dataset.texts:
        tok = runner.preprocessor
        for text in list(env.dataset.texts)[:n]:
            ids = [int(t) for t in tok(text)["input_ids"]] or [0]
            out.append((ids * (length // len(ids) + 1))[:length])
    while len(out) < n:
        ids = runner.synthetic_inputs(1, length, seed=100 + len(out))["input_ids"][0]
        out.append([int(t) for t in ids])
    return out


def run_generation(env: SuiteEnv, runner: Any, others: list[Any], base: dict[str, Any]) -> list[Metric]:
    """The generation metrics of `runner`'s version and its ratios against `others`
    (latency.Comparator), with `base` (the suite's context: threads, load ...) added."""
    from relman.evaluate.stats import bootstrap_median_ratio
    from relman.tasks.generators import open_generator

    opts = env.options
    new_tokens = int(opts.get("generate_tokens", 16))
    n_prompts = int(opts.get("generation_prompts", 2))
    seq = next((s for s in env.seq_lens if s), None)
    length = int(opts.get("prompt_tokens") or seq or 32)
    rounds_wanted = max(MIN_ROUNDS, int(opts.get("generation_rounds", 10)))
    budget = float(opts.get("generation_budget_s", opts.get("time_budget_s", 20.0)))
    runners = [runner] + [c.runner for c in others]
    gens = [open_generator(r.folder, r.fmt, device=r.device, threads=r.threads, backend=r.backend) for r in runners]
    prompts = prompt_ids(runner, env, n_prompts, length)
    m = len(gens)
    for g in gens:
        g.generate(prompts[0], new_tokens, True)  # warm-up: allocations, lazy initialisation
    ttft: list[list[list[float]]] = [[] for _ in range(m)]  # model -> round -> call
    decode: list[list[list[float]]] = [[] for _ in range(m)]
    whole: list[list[list[float]]] = [[] for _ in range(m)]
    deadline = time.perf_counter() + budget
    r = step = 0
    while r < rounds_wanted and (time.perf_counter() < deadline or r < MIN_ROUNDS):
        for k in range(m):
            ttft[k].append([])
            decode[k].append([])
            whole[k].append([])
        for p in prompts:
            for j in range(m):
                k = (step + j) % m
                ids, first, total, _ = gens[k].generate(p, new_tokens, True)
                ttft[k][r].append(first * 1000.0)
                decode[k][r].append((len(ids) - 1) / (total - first) if len(ids) > 1 and total > first else np.nan)
                whole[k][r].append(len(ids) / total if total > 0 else np.nan)
            step += 1
        r += 1
    ctx = {**base, "prompt_tokens": length, "new_tokens": new_tokens, "prompts": len(prompts), "rounds": r,
           "calls": r * len(prompts), "engine": gens[0].engine, "eos": "ignored (fixed length)"}
    if r < rounds_wanted:
        ctx["bounded_by"] = "generation_budget_s"
    t0, d0, w0 = (np.asarray(x[0], dtype=np.float64) for x in (ttft, decode, whole))
    uses = env.dataset is not None
    out = [env.metric(SUITE, "ttft_p50_ms", float(np.median(t0)), uses_data=uses, **ctx),
           env.metric(SUITE, "ttft_mean_ms", float(t0.mean()), uses_data=uses, **ctx),
           env.metric(SUITE, "decode_tokens_per_s", float(np.nanmedian(d0)), uses_data=uses, **ctx),
           env.metric(SUITE, "generate_tokens_per_s", float(np.nanmedian(w0)), uses_data=uses, **ctx)]
    for k, cmp in enumerate(others, start=1):
        tk, dk = np.asarray(ttft[k], dtype=np.float64), np.asarray(decode[k], dtype=np.float64)
        pairs = (("ttft_ratio", np.median(t0, axis=1) / np.median(tk, axis=1), float(np.median(tk))),
                 ("decode_tokens_per_s_ratio", np.nanmedian(d0, axis=1) / np.nanmedian(dk, axis=1),
                  float(np.nanmedian(dk))))
        for name, per_round, reference_value in pairs:
            per_round = per_round[np.isfinite(per_round)]
            if per_round.size == 0:
                continue
            ratio = bootstrap_median_ratio(per_round)
            for scope in cmp.scopes:
                out.append(env.metric(
                    SUITE, f"{name}_vs_{scope}", ratio["value"], uses_data=uses, **ctx,
                    interval=[ratio["lower"], ratio["upper"]], interval_level=0.95, reference=cmp.ref,
                    reference_engine=gens[k].engine, reference_value=reference_value,
                    ratio_rounds=int(per_round.size),
                    method="median over interleaved rounds of child/reference round medians; "
                           "percentile bootstrap over rounds (2000)"))
    return out
