"""Fairness suite: does the version serve every group of the dataset equally well?

Needs a dataset with labels and a group column. Metrics (suite "fairness"):
- per group g: `accuracy/<g>`, `selection_rate/<g>` (share of rows predicted as the positive
  class), `count/<g>`;
- `fairness_gap`: the largest difference of per-group accuracy;
- `selection_rate_gap`: the largest difference of per-group selection rate;
- `demographic_parity_diff` and `equalized_odds_diff`: Fairlearn's
  demographic_parity_difference / equalized_odds_difference on the binarised problem
  "is it the positive class?".
The positive class is `positive_label` (a label name), by default the second label of a binary
model; a multi-class model without one gets the accuracy figures only (the binary
differences would be arbitrary). Context: positive_label, groups, batch_size.
"""

from __future__ import annotations

import numpy as np

from relman.catalog import Metric
from relman.errors import EvaluationError
from relman.evaluate.env import SuiteEnv

SUITE = "fairness"


def run(env: SuiteEnv) -> list[Metric]:
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

    runner = env.runner()
    ds = env.eval_data(SUITE, labels=True, groups=True)
    y = runner.model_labels_for(ds)
    bs = env.eval_batch_size
    pred = runner.predict_dataset(ds, bs, on_batch=lambda d, n: env.progress(d / n, f"fairness {d}/{n}"))
    pred = pred.argmax(axis=1)
    names = runner.label_names
    pos_name = str(env.options.get("positive_label") or "")
    if pos_name:
        if pos_name not in names:
            raise EvaluationError(f"positive_label '{pos_name}' is not a label of the model "
                                  f"(labels: {', '.join(names)})")
        positive: int | None = names.index(pos_name)
    elif len(names) == 2:
        positive, pos_name = 1, names[1]
    else:
        positive = None
    groups = np.asarray([str(g) for g in ds.groups], dtype=object)
    uniq = sorted(set(groups.tolist()))
    ctx = {"batch_size": bs, "positive_label": pos_name or None, "groups": uniq}
    out: list[Metric] = []
    accs, rates = {}, {}
    for g in uniq:
        m = groups == g
        accs[g] = float(np.mean(pred[m] == y[m]))
        out.append(env.metric(SUITE, f"accuracy/{g}", accs[g], **ctx))
        out.append(env.metric(SUITE, f"count/{g}", int(m.sum()), **ctx))
        if positive is not None:
            rates[g] = float(np.mean(pred[m] == positive))
            out.append(env.metric(SUITE, f"selection_rate/{g}", rates[g], **ctx))
    out.append(env.metric(SUITE, "fairness_gap", max(accs.values()) - min(accs.values()), **ctx))
    if positive is not None:
        yb, pb = (y == positive).astype(int), (pred == positive).astype(int)
        out.append(env.metric(SUITE, "selection_rate_gap", max(rates.values()) - min(rates.values()), **ctx))
        out.append(env.metric(SUITE, "demographic_parity_diff",
                              demographic_parity_difference(yb, pb, sensitive_features=groups), **ctx))
        out.append(env.metric(SUITE, "equalized_odds_diff",
                              equalized_odds_difference(yb, pb, sensitive_features=groups), **ctx))
    return out
