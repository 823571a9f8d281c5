"""The `mc` suite: multiple-choice accuracy of a causal LM by log-likelihood, as lm-eval scores it.

For each item (an `mcq` dataset: OpenCompass mcq JSONL or an lm-eval `multiple_choice` task)
every choice is scored as the summed log-probability of its continuation `delimiter + choice`
given the context, tokenised the way lm-evaluation-harness's HFLM does (`_encode_pair`: trailing
spaces of the context move to the continuation; the continuation's tokens are those of
`context + continuation` after the context's; special tokens as the tokenizer adds them by
default, as lm-eval 0.4.13 does (`add_bos_token=None`); an empty context is the EOS token; the input is cut on the left to the model's context length). Then, with lm-eval's
definitions:

- `mc_acc`: the highest log-likelihood is the gold choice;
- `mc_acc_norm`: the highest log-likelihood per character of the choice (`len(choice)`) is.

Both carry a 95 % Wilson interval; `mc_chance` is the mean of 1 / choices. With a parent or a
production version the same items are scored by each in the same job and the differences are
stored paired: `mc_acc_delta_vs_parent` / `_vs_production` (and `mc_acc_norm_delta_vs_…`),
child − reference with McNemar's exact p and an Agresti–Min interval, so a gate can refuse a
child whose interval lies below zero. Logits come through the version's runner, so ONNX and
torch versions are scored by the same code.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from relman.catalog import Metric
from relman.errors import EvaluationError
from relman.evaluate.env import SuiteEnv

SUITE = "mc"


def _encode_pair(tok: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tok(context + continuation)["input_ids"]
    ctx = tok(context)["input_ids"] if context else []
    return list(ctx), list(whole[len(ctx):])


def _max_length(runner: Any) -> int:
    cfg = runner.config or {}
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        if cfg.get(key):
            return int(cfg[key])
    return 2048


def requests(runner: Any, items: list[dict[str, Any]]) -> list[tuple[int, list[int], list[int]]]:
    """(item index, input ids, continuation ids) for every choice of every item, in order."""
    tok = runner.preprocessor
    eos = tok.eos_token_id if tok.eos_token_id is not None else 0
    limit = _max_length(runner)
    out = []
    for i, it in enumerate(items):
        delim = it.get("delimiter", " ")
        for choice in it["choices"]:
            ctx, cont = _encode_pair(tok, it["context"], f"{delim}{choice}")
            if not ctx:
                ctx = [eos]
            if not cont:
                raise EvaluationError(f"item {i + 1}: choice {choice!r} encodes to no tokens")
            ids = (ctx + cont)[-(limit + 1):][:-1]
            out.append((i, ids, cont[-len(ids):] if len(cont) > len(ids) else cont))
    return out


def loglikelihoods(runner: Any, items: list[dict[str, Any]], batch_rows: int,
                   progress: Any = None) -> list[np.ndarray]:
    """Per item, the summed log-likelihood of each choice's continuation (float64 log-softmax of
    the continuation positions only)."""
    reqs = requests(runner, items)
    tok = runner.preprocessor
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    lls = np.empty(len(reqs), dtype=np.float64)
    order = sorted(range(len(reqs)), key=lambda k: -len(reqs[k][1]))  # similar lengths share a batch
    for start in range(0, len(order), batch_rows):
        chunk = order[start:start + batch_rows]
        width = max(len(reqs[k][1]) for k in chunk)
        ids = np.full((len(chunk), width), pad, dtype=np.int64)
        mask = np.zeros((len(chunk), width), dtype=np.int64)
        for r, k in enumerate(chunk):
            row = reqs[k][1]
            ids[r, :len(row)] = row
            mask[r, :len(row)] = 1
        logits = runner.backend.run(runner.backend.to_native({"input_ids": ids, "attention_mask": mask}))
        for r, k in enumerate(chunk):
            _, row, cont = reqs[k]
            n = len(cont)
            z = logits[r, len(row) - n:len(row)].astype(np.float64)
            z -= z.max(axis=-1, keepdims=True)
            logp = z[np.arange(n), np.asarray(cont, dtype=np.int64)] - np.log(np.exp(z).sum(axis=-1))
            lls[k] = float(logp.sum())
        if progress is not None:
            progress(min(start + batch_rows, len(order)), len(order))
    out, pos = [], 0
    for it in items:
        out.append(lls[pos:pos + len(it["choices"])])
        pos += len(it["choices"])
    return out


def score(lls: list[np.ndarray], items: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """acc and acc_norm per item (lm-eval: argmax of ll, argmax of ll / len(choice))."""
    acc = np.empty(len(items), dtype=bool)
    norm = np.empty(len(items), dtype=bool)
    for i, (ll, it) in enumerate(zip(lls, items)):
        lengths = np.array([float(len(c)) for c in it["choices"]])
        acc[i] = int(np.argmax(ll)) == it["gold"]
        norm[i] = int(np.argmax(ll / np.maximum(lengths, 1.0))) == it["gold"]
    return acc, norm


def mcq_items(env: SuiteEnv, suite: str) -> tuple[Any, list[dict[str, Any]]]:
    ds = env.eval_data(suite)
    if ds.kind != "mcq" or ds.items is None:
        raise EvaluationError(f"suite '{suite}' needs multiple-choice items (a dataset of format mcq or an "
                              f"lm-eval multiple_choice task), but dataset '{ds.name}' holds {ds.kind} data")
    return ds, ds.items


def run(env: SuiteEnv) -> list[Metric]:
    from relman.evaluate import stats

    runner = env.runner()
    _, items = mcq_items(env, SUITE)
    rows = max(1, env.eval_batch_size)
    lls = loglikelihoods(runner, items, rows, lambda d, t: env.progress(0.8 * d / t, f"mc {d}/{t}"))
    acc, norm = score(lls, items)
    n = len(items)
    chance = float(np.mean([1.0 / len(it["choices"]) for it in items]))
    ctx = {"n": n, "interval_level": 0.95, "method": "Wilson", "scoring": "lm-eval loglikelihood"}
    out = [
        env.metric(SUITE, "mc_acc", float(acc.mean()), **ctx, interval=list(stats.wilson(float(acc.sum()), n))),
        env.metric(SUITE, "mc_acc_norm", float(norm.mean()), **ctx, interval=list(stats.wilson(float(norm.sum()), n)),
                   normalisation="log-likelihood per character of the choice"),
        env.metric(SUITE, "mc_chance", chance, n=n),
        env.metric(SUITE, "mc_items", float(n)),
    ]
    others = env.comparators() if env.options.get("paired", True) else []
    for k, cmp in enumerate(others):
        r_lls = loglikelihoods(cmp.runner, items, rows)
        env.progress(0.8 + 0.2 * (k + 1) / len(others), f"mc vs {'/'.join(cmp.scopes)}")
        r_acc, r_norm = score(r_lls, items)
        for name, mine, theirs in (("mc_acc", acc, r_acc), ("mc_acc_norm", norm, r_norm)):
            d = stats.paired_proportion_delta(mine, theirs)
            for scope in cmp.scopes:
                out.append(env.metric(SUITE, f"{name}_delta_vs_{scope}", d["value"], paired=True, reference=cmp.ref,
                                      interval=[d["lower"], d["upper"]], interval_level=0.95, n=d["n"],
                                      method=d["method"], mcnemar_p=d["mcnemar_p"],
                                      reference_value=float(theirs.mean()),
                                      child_only_wrong=d["child_only_wrong"], child_only_right=d["child_only_right"]))
    return out
