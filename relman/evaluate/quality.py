"""Quality suite: how well the version does its task on labelled data.

Metrics (suite "quality"):
- classification: `accuracy`, `macro_f1` (macro over the classes present in labels or
  predictions, as scikit-learn does by default), and per class `precision/<label>`,
  `recall/<label>`, `f1/<label>`, `support/<label>`;
- causal LM: `perplexity` = exp(mean next-token NLL over all non-padding tokens), `loss` (that
  mean NLL in nats/token), `tokens`, and `bits_per_byte` = summed NLL / (ln 2 x UTF-8 bytes of
  the scored tokens' text; comparable across tokenizers, unlike perplexity), `bytes`;
  (row classifiers and causal LMs scored here from per-example results, other tasks — e.g.
  entity F1 of a tagger — by the task's adapter, `Runner.quality`);
- always: `eval_samples` and `eval_throughput_sps` (rows per second through preprocessing and
  inference, the figure benchmarks/bench_eval.py compares with a raw loop).
Context: batch_size (the eval batch size), seq_len "dynamic" (padded to the longest row,
truncated to the model's limit).

Uncertainty: `accuracy` carries a 95 % Wilson interval, `macro_f1` a bootstrap interval,
`loss` / `perplexity` a bootstrap interval over rows (context `interval`). When the version
has a parent, or its model a production version, those run on the very same rows in the same
job and the differences are stored paired: `accuracy_delta_vs_parent` / `_vs_production`
(child − reference, McNemar exact p and an Agresti–Min interval), `macro_f1_delta_vs_…`
(paired bootstrap), and for causal LMs `loss_delta_vs_…` (paired bootstrap over rows). A
negative accuracy delta is a drop. Gates read the bounds as `accuracy_delta_vs_production.lower`.
"""

from __future__ import annotations

import time

import numpy as np

from relman.catalog import Metric
from relman.evaluate.env import SuiteEnv
from relman.tasks.scores import classification_report

__all__ = ["run", "classification_report"]

SUITE = "quality"


def _lm_rows(runner, ds, bs: int, progress, byte_counts: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the summed next-token NLL and the number of scored tokens (and, into
    `byte_counts` when given, the UTF-8 bytes of the scored tokens' text, for bits per byte)."""
    sums: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    done = 0
    for batch in runner.batches(ds, bs):
        losses = runner.token_losses(batch, runner.predict(batch))
        sums.append(np.nansum(losses, axis=1))
        counts.append(np.sum(~np.isnan(losses), axis=1))
        if byte_counts is not None:
            byte_counts.extend(_scored_bytes(runner, batch))
        done += batch.size
        if progress is not None:
            progress(done, len(ds))
    return np.concatenate(sums), np.concatenate(counts).astype(np.float64)


def _scored_bytes(runner, batch) -> list[int]:
    """UTF-8 bytes of the text of each row's scored tokens (every real token but the first, which
    has no context): the denominator of bits per byte, which is comparable across tokenizers."""
    ids, mask = batch.host["input_ids"], batch.host["attention_mask"].astype(bool)
    out = []
    for row, m in zip(ids, mask):
        real = row[m]
        out.append(len(runner.preprocessor.decode(real[1:].tolist()).encode("utf-8")) if len(real) > 1 else 0)
    return out


def _ratio_stat(sums: np.ndarray, counts: np.ndarray):
    """Token-weighted mean NLL of the resampled rows (index matrix → one value per row)."""
    def stat(_unused: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return sums[idx].sum(axis=1) / np.maximum(counts[idx].sum(axis=1), 1)
    return stat


def _to_child_space(ref_names: list[str], child_names: list[str], ref_pred: np.ndarray) -> np.ndarray | None:
    """The reference's predicted class indices in the child's label indices (by name), or
    None when the label sets differ."""
    if ref_names == child_names:
        return ref_pred
    index = {n: i for i, n in enumerate(child_names)}
    if not all(n in index for n in ref_names):
        return None
    return np.array([index[n] for n in ref_names], dtype=np.int64)[ref_pred]


def run(env: SuiteEnv) -> list[Metric]:
    """The task's quality measure, with intervals and paired deltas where the suite knows the
    per-example scores (row classifiers, causal LMs); other tasks use `Runner.quality`."""
    from relman.evaluate import stats
    from relman.tasks.base import Runner

    runner = env.runner()
    ds = env.eval_data(SUITE, labels=runner.spec.labels != "none")
    bs = env.eval_batch_size
    t0 = time.perf_counter()
    report_progress = lambda done, total: env.progress(done / total, f"quality {done}/{total}")  # noqa: E731
    extra: dict[str, dict] = {}
    paired: list[tuple[str, float | None, dict]] = []
    others = env.comparators() if env.options.get("paired", True) else []
    if runner.task == "causal-lm" and hasattr(runner, "token_losses"):
        nbytes: list[int] = []
        sums, counts = _lm_rows(runner, ds, bs, report_progress, nbytes)
        elapsed = time.perf_counter() - t0
        mean = float(sums.sum() / max(counts.sum(), 1))
        rng = np.random.default_rng(stats.SEED)
        idx = rng.integers(0, len(sums), size=(1000, len(sums)))
        boots = _ratio_stat(sums, counts)(None, idx)
        lo, hi = float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))
        values = {"perplexity": float(np.exp(mean)), "loss": mean, "tokens": float(counts.sum())}
        extra["loss"] = {"interval": [lo, hi], "interval_level": 0.95}
        extra["perplexity"] = {"interval": [float(np.exp(lo)), float(np.exp(hi))], "interval_level": 0.95}
        byte_arr = np.asarray(nbytes, dtype=np.float64)
        if byte_arr.sum() > 0:
            bpb_boots = _ratio_stat(sums, byte_arr)(None, idx) / np.log(2)
            values["bits_per_byte"] = float(sums.sum() / byte_arr.sum() / np.log(2))
            values["bytes"] = float(byte_arr.sum())
            extra["bits_per_byte"] = {"interval": [float(np.quantile(bpb_boots, 0.025)),
                                                   float(np.quantile(bpb_boots, 0.975))], "interval_level": 0.95,
                                      "definition": "sum of next-token NLL (nats) / (ln 2 x UTF-8 bytes of the "
                                                    "scored tokens)"}
        for cmp in others:
            r_sums, r_counts = _lm_rows(cmp.runner, ds, bs, None)
            if not np.array_equal(r_counts, counts):  # another tokenizer: rows are not scored alike
                continue
            child_stat, ref_stat = _ratio_stat(sums, counts), _ratio_stat(r_sums, r_counts)
            full = np.arange(len(sums))[None, :]
            diff = child_stat(None, idx) - ref_stat(None, idx)  # the same resampled rows for both
            d = {"value": float(child_stat(None, full)[0] - ref_stat(None, full)[0]),
                 "lower": float(np.quantile(diff, 0.025)), "upper": float(np.quantile(diff, 0.975)),
                 "n": len(sums), "method": "paired bootstrap over rows (1000)"}
            for scope in cmp.scopes:
                paired.append((f"loss_delta_vs_{scope}", d["value"], {**_interval(d), "reference": cmp.ref}))
    elif runner.spec.classifies_rows and type(runner).quality is Runner.quality:
        y_true = runner.model_labels_for(ds)
        logits = runner.predict_dataset(ds, bs, on_batch=report_progress)
        elapsed = time.perf_counter() - t0
        y_pred = logits.argmax(axis=1)
        values = classification_report(y_true, y_pred, runner.label_names)
        n = len(y_true)
        extra["accuracy"] = {"interval": list(stats.wilson(float(np.sum(y_true == y_pred)), n)),
                             "interval_level": 0.95, "n": n, "method": "Wilson"}
        extra["macro_f1"] = {"interval": list(stats.macro_f1_ci(y_true, y_pred)), "interval_level": 0.95,
                             "n": n, "method": "bootstrap (1000)"}
        for cmp in others:
            r_true = cmp.runner.model_labels_for(ds)
            r_pred = cmp.runner.predict_dataset(ds, bs).argmax(axis=1)
            acc = stats.paired_proportion_delta(y_pred == y_true, r_pred == r_true)
            mapped = _to_child_space(cmp.runner.label_names, runner.label_names, r_pred)
            f1 = stats.macro_f1_delta(y_true, y_pred, mapped) if mapped is not None else None
            for scope in cmp.scopes:
                paired.append((f"accuracy_delta_vs_{scope}", acc["value"], {
                    **_interval(acc), "reference": cmp.ref, "reference_accuracy": float(np.mean(r_pred == r_true)),
                    "mcnemar_p": acc["mcnemar_p"], "child_only_wrong": acc["child_only_wrong"],
                    "child_only_right": acc["child_only_right"]}))
                if f1 is not None:
                    paired.append((f"macro_f1_delta_vs_{scope}", f1["value"], {**_interval(f1), "reference": cmp.ref}))
    else:  # the adapter's own measure (e.g. entity F1 of a tagger); no per-example pairing yet
        values = runner.quality(ds, bs, on_batch=report_progress)
        elapsed = time.perf_counter() - t0
    values["eval_samples"] = float(len(ds))
    values["eval_throughput_sps"] = len(ds) / elapsed if elapsed > 0 else None
    out = [env.metric(SUITE, k, v, batch_size=bs, seq_len="dynamic", **extra.get(k, {})) for k, v in values.items()]
    out += [env.metric(SUITE, name, v, batch_size=bs, seq_len="dynamic", paired=True, **ctx)
            for name, v, ctx in paired]
    return out


def _interval(d: dict) -> dict:
    return {"interval": [float(d["lower"]), float(d["upper"])], "interval_level": 0.95, "n": d.get("n"),
            "method": d.get("method")}
