"""The `fair-threshold` recipe: per-group decision thresholds fitted with Fairlearn.

Fairlearn's `ThresholdOptimizer` (post-processing, Hardt et al. 2016) picks, for each group of
a dataset's group column, the threshold(s) on the parent's score that maximise an objective
(accuracy) under a fairness constraint (demographic parity by default). It needs nothing from
the model but its scores, so it applies to any binary classifier relman can run (PyTorch,
ONNX, INT8, LoRA): the parent's softmax probability of the positive label is fed to it as a
one-column feature through `ScoreColumn`, a pass-through estimator.

The child stores no weights: `relman_postprocessor.json` (the fitted thresholds as data, the
pin of the parent by manifest sha256) and `postprocess.py`, a stdlib reader of it
(relman.modelio.postprocessor, which also applies it in every suite). The price Fairlearn
states (fairlearn#818) is that the group attribute is needed at prediction time; the rule,
the card and every refusal say so.

Fitting uses the dataset's `fit_split` (train) when it has splits, so the child's evaluation
on its test split is out of sample; a dataset without splits is fitted on all its rows (and
the record says so). Refused with one line, before the parent is run: no dataset, no group
column, no labels, no rows in the split, a parent that is not a binary classifier, groups
with one label only (Fairlearn cannot place a threshold there).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from relman.compress.registry import ModelSource, RecipeOutput
from relman.errors import RecipeError

if TYPE_CHECKING:
    from relman.context import WorkContext
    from relman.data.dataset import Dataset

NAME = "fair-threshold"


def _fit_rows(ctx: "WorkContext", params: dict[str, Any]) -> tuple["Dataset", str]:
    name = params.get("dataset") or ""
    if not name:
        raise RecipeError(f"{NAME} needs a labelled dataset with a group column (--dataset NAME or -p dataset=NAME)")
    ds = ctx.dataset(name)
    if not ds.has_groups:
        raise RecipeError(f"{NAME} needs a group column, but dataset '{ds.name}' has none (register it with a "
                          "group column, e.g. --map group_col=COLUMN)")
    if ds.labels is None:
        raise RecipeError(f"{NAME} needs labels, but dataset '{ds.name}' has none")
    split = str(params.get("fit_split") or "train")
    if ds.split is None:
        return ds, "all rows (the dataset has no splits)"
    sub = ds.subset(split)
    if len(sub) == 0:
        raise RecipeError(f"dataset '{ds.name}' has no rows in split '{split}' to fit the thresholds on")
    return sub, split


def score_column() -> Any:
    """A scikit-learn estimator whose prediction is its one input column: the parent's score."""
    from sklearn.base import BaseEstimator

    class ScoreColumn(BaseEstimator):  # type: ignore[misc]
        def fit(self, X: Any, y: Any = None) -> "ScoreColumn":
            return self

        def predict(self, X: Any) -> np.ndarray:
            return np.asarray(X, dtype=np.float64)[:, 0]

        def __sklearn_is_fitted__(self) -> bool:
            return True

    return ScoreColumn()


def fit_thresholds(scores: np.ndarray, y: np.ndarray, groups: np.ndarray, constraint: str, objective: str,
                   grid_size: int) -> dict[str, dict[str, Any]]:
    """Fairlearn's per-group interpolation, as plain data (see relman.modelio.postprocessor)."""
    from fairlearn.postprocessing import ThresholdOptimizer

    for g in sorted(set(groups.tolist())):
        if len(set(y[groups == g].tolist())) < 2:
            raise RecipeError(f"group {g!r} has rows of one label only, so no threshold can be fitted for it")
    opt = ThresholdOptimizer(estimator=score_column(), constraints=constraint, objective=objective,
                             prefit=True, predict_method="predict", grid_size=grid_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt.fit(scores.reshape(-1, 1), y, sensitive_features=groups)
    out: dict[str, dict[str, Any]] = {}
    for g, r in opt.interpolated_thresholder_.interpolation_dict.items():
        rule: dict[str, Any] = {"p0": float(r.p0), "p1": float(r.p1)}
        for i in (0, 1):
            op = getattr(r, f"operation{i}")
            rule[f"operation{i}"] = {"operator": op.operator, "threshold": float(op.threshold)}
        if "p_ignore" in r:
            rule["p_ignore"], rule["prediction_constant"] = float(r.p_ignore), float(r.prediction_constant)
        out[str(g)] = rule
    return out


def run(sources: list[ModelSource], params: dict[str, Any], ctx: "WorkContext") -> RecipeOutput:
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

    from relman.catalog import Metric
    from relman.modelio import postprocessor as pp
    from relman.tasks import open_runner

    src = sources[0]
    fit_ds, fit_split = _fit_rows(ctx, params)  # refusals first, before the parent is loaded
    ctx.progress(0.05, f"{NAME}: scoring {len(fit_ds)} rows with {src.version.ref}")
    runner = open_runner(src.folder, src.format, src.task, "cpu" if not ctx.device.startswith("cuda") else ctx.device)
    runner.check_dataset(fit_ds)
    names = runner.label_names
    if len(names) != 2:
        raise RecipeError(f"{NAME} needs a binary classifier; {src.version.ref} predicts {len(names)} labels")
    pos_name = str(params.get("positive_label") or names[1])
    if pos_name not in names:
        raise RecipeError(f"positive_label '{pos_name}' is not a label of {src.version.ref} ({', '.join(names)})")
    pos = names.index(pos_name)
    y = (runner.model_labels_for(fit_ds) == pos).astype(int)
    logits = runner.predict_dataset(fit_ds, int(params["batch_size"]),
                                    on_batch=lambda d, n: ctx.progress(0.05 + 0.7 * d / n, f"{NAME}: scoring {d}/{n}"))
    scores = pp.softmax_positive(logits, pos)
    groups = np.asarray([str(g) for g in list(fit_ds.groups if fit_ds.groups is not None else [])], dtype=np.object_)
    ctx.progress(0.8, f"{NAME}: fitting thresholds ({params['constraint']})")
    fitted = fit_thresholds(scores, y, groups, str(params["constraint"]), str(params["objective"]),
                            int(params["grid_size"]))
    v = src.version
    rule = {"kind": pp.KIND, "format_version": pp.RULE_VERSION, "task": v.task, "labels": names,
            "positive_index": pos, "positive_label": pos_name, "seed": int(params["seed"]),
            "score": "softmax probability of positive_label from the parent's logits",
            "group_attribute": "needed at prediction time: each row's value of the dataset's group column",
            "constraint": params["constraint"], "objective": params["objective"], "groups": fitted,
            "fitted_on": {"dataset": fit_ds.name, "dataset_sha256": fit_ds.sha256, "split": fit_split,
                          "rows": len(fit_ds)},
            "parent": {"version_id": v.id, "ref": v.ref, "manifest_sha256": v.manifest_sha256,
                       "format": v.format, "task": v.task}}
    pp.check_rule(rule, NAME)
    out = Path(ctx.workdir) / "fair-threshold"
    out.mkdir(parents=True, exist_ok=True)
    (out / pp.RULE).write_text(json.dumps(rule, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (out / pp.READER).write_text(pp.READER_SOURCE, encoding="utf-8")
    # the fit split, before and after (in sample; the evaluation measures it out of sample)
    uniforms = np.asarray([pp.row_uniform(rule["seed"], k) for k in pp.row_keys(fit_ds)])
    after = pp.decide(rule, logits, groups, uniforms)
    before = (logits.argmax(axis=1) == pos).astype(int)
    context = {"dataset": fit_ds.name, "split": fit_split, "rows": len(fit_ds), "constraint": params["constraint"]}
    metrics = [
        Metric("compress", "fit_demographic_parity_diff_before",
               float(demographic_parity_difference(y, before, sensitive_features=groups)), context),
        Metric("compress", "fit_demographic_parity_diff_after",
               float(demographic_parity_difference(y, after, sensitive_features=groups)), context),
        Metric("compress", "fit_equalized_odds_diff_after",
               float(equalized_odds_difference(y, after, sensitive_features=groups)), context),
        Metric("compress", "fit_accuracy_before", float(np.mean(before == y)), context),
        Metric("compress", "fit_accuracy_after", float(np.mean(after == y)), context),
    ]
    meta = {"postprocessor": {"kind": pp.KIND, "parent": v.ref, "groups": sorted(fitted),
                              "constraint": params["constraint"], "positive_label": pos_name,
                              "needs_group_attribute": True}}
    return RecipeOutput(folder=out, format=pp.FORMAT, params=v.params, dtype=v.dtype, meta=meta, metrics=metrics)
