"""Quality suite: how well the version does its task on labelled data.

Metrics (suite "quality"):
- classification: `accuracy`, `macro_f1` (macro over the classes present in labels or
  predictions, as scikit-learn does by default), and per class `precision/<label>`,
  `recall/<label>`, `f1/<label>`, `support/<label>`;
- causal LM: `perplexity` = exp(mean next-token NLL over all non-padding tokens), `loss` (that
  mean NLL in nats/token), `tokens`;
- always: `eval_samples` and `eval_throughput_sps` (rows per second through preprocessing and
  inference, the figure benchmarks/bench_eval.py compares with a raw loop).
Context: batch_size (the eval batch size), seq_len "dynamic" (padded to the longest row,
truncated to the model's limit).
"""

from __future__ import annotations

import time

import numpy as np

from relman.catalog import Metric
from relman.evaluate.env import SuiteEnv

SUITE = "quality"


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, label_names: list[str]) -> dict[str, float]:
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    out = {"accuracy": float(np.mean(y_true == y_pred)),
           "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0))}
    present = sorted(set(np.unique(y_true).tolist()) | set(np.unique(y_pred).tolist()))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=present, zero_division=0)
    for i, label in enumerate(present):
        name = label_names[label] if label < len(label_names) else str(label)
        out[f"precision/{name}"] = float(p[i])
        out[f"recall/{name}"] = float(r[i])
        out[f"f1/{name}"] = float(f[i])
        out[f"support/{name}"] = float(s[i])
    return out


def run(env: SuiteEnv) -> list[Metric]:
    runner = env.runner()
    ds = env.eval_data(SUITE, labels=runner.task != "causal-lm")
    bs = env.eval_batch_size
    t0 = time.perf_counter()
    report_progress = lambda done, total: env.progress(done / total, f"quality {done}/{total}")  # noqa: E731
    if runner.task == "causal-lm":
        nll_sum, count = 0.0, 0
        done = 0
        for batch in runner.batches(ds, bs):
            losses = runner.token_losses(batch, runner.predict(batch))
            nll_sum += float(np.nansum(losses))
            count += int(np.sum(~np.isnan(losses)))
            done += batch.size
            report_progress(done, len(ds))
        elapsed = time.perf_counter() - t0
        mean = nll_sum / max(count, 1)
        values = {"perplexity": float(np.exp(mean)), "loss": mean, "tokens": float(count)}
    else:
        y_true = runner.model_labels_for(ds)
        logits = runner.predict_dataset(ds, bs, on_batch=report_progress)
        elapsed = time.perf_counter() - t0
        values = classification_report(y_true, logits.argmax(axis=1), runner.label_names)
    values["eval_samples"] = float(len(ds))
    values["eval_throughput_sps"] = len(ds) / elapsed if elapsed > 0 else None
    return [env.metric(SUITE, k, v, batch_size=bs, seq_len="dynamic") for k, v in values.items()]
