"""Quality suite: how well the version does its task on labelled data.

Metrics (suite "quality"):
- classification: `accuracy`, `macro_f1` (macro over the classes present in labels or
  predictions, as scikit-learn does by default), and per class `precision/<label>`,
  `recall/<label>`, `f1/<label>`, `support/<label>`;
- causal LM: `perplexity` = exp(mean next-token NLL over all non-padding tokens), `loss` (that
  mean NLL in nats/token), `tokens`;
  (each computed by the task's adapter, `Runner.quality`);
- always: `eval_samples` and `eval_throughput_sps` (rows per second through preprocessing and
  inference, the figure benchmarks/bench_eval.py compares with a raw loop).
Context: batch_size (the eval batch size), seq_len "dynamic" (padded to the longest row,
truncated to the model's limit).
"""

from __future__ import annotations

import time

from relman.catalog import Metric
from relman.evaluate.env import SuiteEnv
from relman.tasks.scores import classification_report

__all__ = ["run", "classification_report"]

SUITE = "quality"


def run(env: SuiteEnv) -> list[Metric]:
    """The adapter's own quality measure (`Runner.quality`), timed through preprocessing."""
    runner = env.runner()
    ds = env.eval_data(SUITE, labels=runner.spec.labels != "none")
    bs = env.eval_batch_size
    t0 = time.perf_counter()
    report_progress = lambda done, total: env.progress(done / total, f"quality {done}/{total}")  # noqa: E731
    values = runner.quality(ds, bs, on_batch=report_progress)
    elapsed = time.perf_counter() - t0
    values["eval_samples"] = float(len(ds))
    values["eval_throughput_sps"] = len(ds) / elapsed if elapsed > 0 else None
    return [env.metric(SUITE, k, v, batch_size=bs, seq_len="dynamic") for k, v in values.items()]
