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

Intervals: the three gaps carry a 95 % percentile-bootstrap interval over rows (1000
resamples, seeded). Before / after: for each version the job compares with (its parent, the
model's production version) the suite also stores `<gap>_delta_vs_<scope>` = this version's gap
minus the reference's on the same rows, with a paired bootstrap interval (the same resampled
rows for both), and the reference's own gap and interval in the context — so a mitigation
(the `fair-threshold` recipe) shows the gap before (parent) and after (child) side by side.
"""

from __future__ import annotations

import warnings

import numpy as np

from relman.catalog import Metric
from relman.errors import EvaluationError
from relman.evaluate import stats
from relman.evaluate.env import SuiteEnv

SUITE = "fairness"
RESAMPLES = 1000
GAPS = ("fairness_gap", "demographic_parity_diff", "equalized_odds_diff")


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
    idx = np.random.default_rng(stats.SEED).integers(0, len(y), size=(RESAMPLES, len(y)))
    boots = _gaps(pred, y, positive, groups, uniq, idx)
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
    out.append(env.metric(SUITE, "fairness_gap", max(accs.values()) - min(accs.values()), **ctx,
                          **_ci(boots["fairness_gap"])))
    if positive is not None:
        yb, pb = (y == positive).astype(int), (pred == positive).astype(int)
        out.append(env.metric(SUITE, "selection_rate_gap", max(rates.values()) - min(rates.values()), **ctx))
        out.append(env.metric(SUITE, "demographic_parity_diff",
                              demographic_parity_difference(yb, pb, sensitive_features=groups), **ctx,
                              **_ci(boots["demographic_parity_diff"])))
        out.append(env.metric(SUITE, "equalized_odds_diff",
                              equalized_odds_difference(yb, pb, sensitive_features=groups), **ctx,
                              **_ci(boots["equalized_odds_diff"])))
    full = np.arange(len(y))[None, :]
    mine = _gaps(pred, y, positive, groups, uniq, full)
    for cmp in env.comparators() if env.options.get("paired", True) else []:
        ref_names = cmp.runner.label_names
        if positive is not None and pos_name not in ref_names:
            continue  # the reference has no such label: no paired gap
        r_pos = ref_names.index(pos_name) if positive is not None else None
        r_y = cmp.runner.model_labels_for(ds)
        r_pred = cmp.runner.predict_dataset(ds, bs).argmax(axis=1)
        r_boots = _gaps(r_pred, r_y, r_pos, groups, uniq, idx)
        r_full = _gaps(r_pred, r_y, r_pos, groups, uniq, full)
        for name in GAPS:
            if name not in mine:
                continue
            diff = boots[name] - r_boots[name]
            for scope in cmp.scopes:
                out.append(env.metric(
                    SUITE, f"{name}_delta_vs_{scope}", float(mine[name][0] - r_full[name][0]), **ctx, paired=True,
                    reference=cmp.ref, reference_value=float(r_full[name][0]), **_ci(diff),
                    reference_interval=_ci(r_boots[name])["interval"]))
    return out


def _ci(values: np.ndarray) -> dict:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {}
    return {"interval": [float(np.quantile(finite, 0.025)), float(np.quantile(finite, 0.975))],
            "interval_level": 0.95, "method": f"bootstrap over rows ({RESAMPLES})"}


def _gaps(pred: np.ndarray, y: np.ndarray, positive: int | None, groups: np.ndarray, uniq: list[str],
          idx: np.ndarray) -> dict[str, np.ndarray]:
    """The gaps on each row resample (`idx`: resamples x rows): accuracy gap and, with a
    positive class, demographic parity and equalized odds differences (Fairlearn's definitions:
    largest between-group difference of selection rate; of true and false positive rates)."""
    ok = (pred == y).astype(np.float64)

    def rate(values: np.ndarray, among: np.ndarray) -> np.ndarray:
        """Per resample and group: mean of `values` over the rows of the group in `among`."""
        cols = []
        for g in uniq:
            m = ((groups == g) & among).astype(np.float64)
            n = m[idx].sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                cols.append((values * m)[idx].sum(axis=1) / n)
        return np.stack(cols, axis=1)

    def spread(r: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmax(r, axis=1) - np.nanmin(r, axis=1)

    everyone = np.ones(len(y), dtype=bool)
    out = {"fairness_gap": spread(rate(ok, everyone))}
    if positive is not None:
        pbf, yb = (pred == positive).astype(np.float64), y == positive
        out["demographic_parity_diff"] = spread(rate(pbf, everyone))
        out["equalized_odds_diff"] = np.maximum(spread(rate(pbf, yb)), spread(rate(pbf, ~yb)))
    return out
