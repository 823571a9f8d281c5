"""Fidelity suite: how closely a version reproduces its parent (e.g. a compressed child vs the
model it came from). Needs no labels — any text / images of the right kind will do.

Metrics (suite "fidelity"), all comparing the version against the parent on the same rows:
- classification: `agreement` (share of rows with the same top-1 class), `kl_div` (mean over
  rows of KL(parent || version) of the softmax distributions, in nats);
- causal LM: the same two per next-token position over non-padding tokens;
- feature extraction: `cosine` (mean cosine similarity of the normalised embeddings) and
  `cosine_min` (the worst row).
- always: `fidelity`, the one number gates use whatever the task — the agreement
  (classification, causal LM) or the mean cosine (feature extraction).
Context: `parent` (its ref), batch_size, seq_len "dynamic"; agreement and fidelity carry a
95 % Wilson interval, cosine a bootstrap interval over rows (`interval`).
"""

from __future__ import annotations

import numpy as np

from relman.catalog import Metric
from relman.errors import EvaluationError
from relman.evaluate.env import SuiteEnv
from relman.tasks.causal_lm import log_softmax

SUITE = "fidelity"


def agreement_and_kl(parent_logits: np.ndarray, child_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row top-1 agreement (bool) and KL(parent || child), over the last axis."""
    lp = log_softmax(parent_logits.astype(np.float64))
    lc = log_softmax(child_logits.astype(np.float64))
    kl = np.sum(np.exp(lp) * (lp - lc), axis=-1)
    return parent_logits.argmax(-1) == child_logits.argmax(-1), kl


def run(env: SuiteEnv) -> list[Metric]:
    from relman.evaluate import stats

    if env.parent is None:
        raise EvaluationError(f"fidelity compares {env.model.ref} with a parent version, but it has none "
                              "(give one with --parent)")
    if env.parent.task != env.model.task:
        raise EvaluationError(f"fidelity needs the parent to do the same task: {env.parent.ref} is "
                              f"{env.parent.task}, {env.model.ref} is {env.model.task}")
    runner = env.runner()
    ds = env.eval_data(SUITE)
    parent = env.runner_for(env.parent)
    bs = env.eval_batch_size
    agree: list[np.ndarray] = []
    kls: list[np.ndarray] = []
    cos: list[np.ndarray] = []
    done = 0
    for start in range(0, len(ds), bs):
        rows = ds.take(np.arange(start, min(start + bs, len(ds))))
        b_child, b_parent = runner.prepare(rows), parent.prepare(rows)
        out_c, out_p = runner.predict(b_child), parent.predict(b_parent)
        if out_c.shape != out_p.shape:
            raise EvaluationError(f"{env.model.ref} and its parent {env.parent.ref} give outputs of different "
                                  f"shapes ({out_c.shape} vs {out_p.shape}), so they cannot be compared")
        if runner.task == "feature-extraction":
            cos.append(np.sum(out_c * out_p, axis=1))
        elif runner.task == "causal-lm":
            mask = runner.target_mask(b_child)
            a, k = agreement_and_kl(out_p[:, :-1], out_c[:, :-1])
            agree.append(a[mask])
            kls.append(k[mask])
        else:
            a, k = agreement_and_kl(out_p, out_c)
            agree.append(a)
            kls.append(k)
        done += len(rows)
        env.progress(done / len(ds), f"fidelity {done}/{len(ds)}")
    ctx = {"parent": env.parent.ref, "batch_size": bs, "seq_len": "dynamic"}
    if runner.task == "feature-extraction":
        c = np.concatenate(cos)
        ci = {"interval": list(stats.bootstrap_mean(c)), "interval_level": 0.95, "n": int(c.size),
              "method": "bootstrap (2000)"}
        return [env.metric(SUITE, "cosine", float(c.mean()), **ctx, **ci),
                env.metric(SUITE, "cosine_min", float(c.min()), **ctx),
                env.metric(SUITE, "fidelity", float(c.mean()), **ctx, **ci, measure="cosine")]
    a_all, k_all = np.concatenate(agree), np.concatenate(kls)
    ci = {"interval": list(stats.wilson(float(a_all.sum()), int(a_all.size))), "interval_level": 0.95,
          "n": int(a_all.size), "method": "Wilson"}
    return [env.metric(SUITE, "agreement", float(a_all.mean()), **ctx, **ci),
            env.metric(SUITE, "kl_div", float(k_all.mean()), **ctx),
            env.metric(SUITE, "fidelity", float(a_all.mean()), **ctx, **ci, measure="agreement")]
