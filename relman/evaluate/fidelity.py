"""Fidelity suite: how closely a version reproduces its parent (e.g. a compressed child vs the
model it came from). Needs no labels — any text / images of the right kind will do.

Metrics (suite "fidelity"), all comparing the version against the parent on the same rows:
- classification: `agreement` (share of rows with the same top-1 class), `kl_div` (mean over
  rows of KL(parent || version) of the softmax distributions, in nats);
- causal LM: the same two per next-token position over non-padding tokens;
- feature extraction: `cosine` (mean cosine similarity of the normalised embeddings) and
  `cosine_min` (the worst row).
- always: `fidelity`, the one number gates use whatever the task — the agreement where the
  adapter measures one (classification, causal LM, tagging), else the mean cosine.
Context: `parent` (its ref), batch_size, seq_len "dynamic"; agreement and fidelity carry a
95 % Wilson interval, cosine a bootstrap interval over rows (`interval`).
"""

from __future__ import annotations

import numpy as np

from relman.catalog import Metric
from relman.errors import EvaluationError
from relman.evaluate.env import SuiteEnv
from relman.tasks.scores import agreement_and_kl

__all__ = ["run", "agreement_and_kl"]

SUITE = "fidelity"


def run(env: SuiteEnv) -> list[Metric]:
    """Both versions on the same rows, batch by batch; the adapter compares their outputs
    (`Runner.fidelity`) and says which figures summarise the comparison."""
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
    parts: dict[str, list[np.ndarray]] = {}
    done = 0
    for start in range(0, len(ds), bs):
        rows = ds.take(np.arange(start, min(start + bs, len(ds))))
        b_child, b_parent = runner.prepare(rows), parent.prepare(rows)
        out_c, out_p = runner.predict(b_child), parent.predict(b_parent)
        if out_c.shape != out_p.shape:
            raise EvaluationError(f"{env.model.ref} and its parent {env.parent.ref} give outputs of different "
                                  f"shapes ({out_c.shape} vs {out_p.shape}), so they cannot be compared")
        for name, values in runner.fidelity(b_child, out_c, out_p).items():
            parts.setdefault(name, []).append(np.asarray(values))
        done += len(rows)
        env.progress(done / len(ds), f"fidelity {done}/{len(ds)}")
    ctx = {"parent": env.parent.ref, "batch_size": bs, "seq_len": "dynamic"}
    joined = {name: np.concatenate(v) for name, v in parts.items()}
    summary = runner.summarise_fidelity(joined)
    intervals: dict[str, dict] = {}
    if "agreement" in joined:
        agree = joined["agreement"].astype(bool)
        intervals["agreement"] = {"interval": list(stats.wilson(float(agree.sum()), int(agree.size))),
                                  "interval_level": 0.95, "n": int(agree.size), "method": "Wilson"}
    if "cosine" in joined:
        intervals["cosine"] = {"interval": list(stats.bootstrap_mean(joined["cosine"])), "interval_level": 0.95,
                               "n": int(joined["cosine"].size), "method": "bootstrap (2000)"}
    out = [env.metric(SUITE, name, value, **ctx, **intervals.get(name, {})) for name, value in summary.items()]
    main = next((n for n in ("agreement", "cosine") if n in summary), None)
    if main is not None:
        out.append(env.metric(SUITE, "fidelity", summary[main], **ctx, **intervals.get(main, {}), measure=main))
    return out
