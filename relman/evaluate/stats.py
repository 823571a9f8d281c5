"""Intervals for the numbers relman stores: how sure is a figure, and is a child really different.

Small, dependency-light (numpy only) and deterministic (seeded resampling), so the same data
always gives the same interval and a test can check the method against a planted signal.

- `wilson`: 95 % interval of a proportion (accuracy, agreement), good at 0 and 1 and small n.
- `bootstrap_median_ratio`: paired timing — per-round ratios child/parent, their median and a
  percentile-bootstrap interval over rounds (rounds are the independent unit: each round times
  both models back to back, so slow phases of the machine hit both and cancel in the ratio).
- `paired_proportion_delta`: child minus reference accuracy on the same examples, with the
  McNemar exact p-value and an Agresti–Min adjusted Wald interval (add ½ to each cell of the
  2×2 table), which keeps its coverage when discordant pairs are few.
- `paired_bootstrap_delta`: child minus reference of any per-example score (mean) or of a
  statistic of the labels (macro-F1), resampling the same example indices for both.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

Z95 = 1.959963984540054
RESAMPLES = 2000
SEED = 20240611


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of successes / n (n = 0 gives the vacuous [0, 1])."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _percentile_ci(stats: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    alpha = (1 - level) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


def bootstrap_median_ratio(ratios: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> dict[str, float]:
    """Median of per-round ratios with a 95 % percentile-bootstrap interval over rounds."""
    r = np.asarray(ratios, dtype=np.float64)
    if r.size == 0:
        raise ValueError("no rounds to summarise")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, r.size, size=(resamples, r.size))
    meds = np.median(r[idx], axis=1)
    lo, hi = _percentile_ci(meds)
    return {"value": float(np.median(r)), "lower": lo, "upper": hi, "rounds": int(r.size)}


def mcnemar_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b and c discordant pairs (binomial, p = ½)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return min(1.0, 2 * tail)


def paired_proportion_delta(child_ok: np.ndarray, ref_ok: np.ndarray, z: float = Z95) -> dict[str, float]:
    """Child minus reference share correct on the same examples (booleans per example)."""
    child_ok = np.asarray(child_ok, dtype=bool)
    ref_ok = np.asarray(ref_ok, dtype=bool)
    if child_ok.shape != ref_ok.shape:
        raise ValueError("paired comparison needs the same examples for both models")
    n = int(child_ok.size)
    b = int(np.sum(ref_ok & ~child_ok))  # the reference right, the child wrong
    c = int(np.sum(~ref_ok & child_ok))  # the child right, the reference wrong
    delta = (c - b) / n if n else 0.0
    # Agresti-Min: ½ added to each of the four cells, then the Wald interval of the difference
    na, b2, c2 = n + 2.0, b + 0.5, c + 0.5
    d2 = (c2 - b2) / na
    var = ((b2 + c2) - (c2 - b2) ** 2 / na) / na ** 2
    half = z * math.sqrt(max(var, 0.0))
    return {"value": delta, "lower": max(-1.0, d2 - half), "upper": min(1.0, d2 + half), "n": n,
            "child_only_wrong": b, "child_only_right": c, "mcnemar_p": mcnemar_p(b, c),
            "method": "McNemar exact p; Agresti-Min adjusted Wald interval"}


def paired_bootstrap_delta(child: np.ndarray, ref: np.ndarray,
                           statistic: Callable[[np.ndarray], np.ndarray] | None = None,
                           resamples: int = RESAMPLES, seed: int = SEED) -> dict[str, float]:
    """statistic(child) - statistic(ref) over the same resampled examples.

    `statistic` maps an index matrix (resamples × n) to one value per row, given the data
    through a closure; by default the mean of the per-example scores."""
    child = np.asarray(child, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if child.shape != ref.shape:
        raise ValueError("paired comparison needs the same examples for both models")
    n = child.shape[0]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    if statistic is None:
        diff = child - ref
        point = float(diff.mean())
        boots = diff[idx].mean(axis=1)
    else:
        point = float(statistic(child, np.arange(n)[None, :])[0] - statistic(ref, np.arange(n)[None, :])[0])
        boots = statistic(child, idx) - statistic(ref, idx)
    lo, hi = _percentile_ci(boots)
    return {"value": point, "lower": lo, "upper": hi, "n": int(n), "method": f"paired bootstrap ({resamples})"}


def bootstrap_mean(scores: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float]:
    """95 % interval of the mean of per-example scores (cosine, NLL)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    boots = s[rng.integers(0, s.size, size=(resamples, s.size))].mean(axis=1)
    return _percentile_ci(boots)


def macro_f1_rows(y_true: np.ndarray, y_pred: np.ndarray, idx: np.ndarray, n_classes: int) -> np.ndarray:
    """Macro-F1 (over the classes present in labels or predictions of each resample, like
    scikit-learn) for every row of the index matrix `idx` — vectorised, for bootstraps."""
    yt, yp = y_true[idx], y_pred[idx]
    rows = idx.shape[0]
    out = np.empty(rows)
    k = n_classes
    for r in range(rows):
        t, p = yt[r], yp[r]
        tp = np.bincount(t[t == p], minlength=k).astype(np.float64)
        pred = np.bincount(p, minlength=k).astype(np.float64)
        true = np.bincount(t, minlength=k).astype(np.float64)
        denom = pred + true
        present = denom > 0
        f1 = np.where(present, 2 * tp / np.where(present, denom, 1), 0.0)
        out[r] = f1[present].mean() if present.any() else 0.0
    return out


def macro_f1_ci(y_true: np.ndarray, y_pred: np.ndarray, resamples: int = 1000, seed: int = SEED) -> tuple[float, float]:
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    k = int(max(y_true.max(initial=0), y_pred.max(initial=0))) + 1
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, y_true.size, size=(resamples, y_true.size))
    return _percentile_ci(macro_f1_rows(y_true, y_pred, idx, k))


def macro_f1_delta(y_true: np.ndarray, child_pred: np.ndarray, ref_pred: np.ndarray, resamples: int = 1000,
                   seed: int = SEED) -> dict[str, float]:
    """Paired bootstrap of macro-F1(child) - macro-F1(reference) on the same examples."""
    y_true = np.asarray(y_true, dtype=np.int64)
    child_pred, ref_pred = np.asarray(child_pred, dtype=np.int64), np.asarray(ref_pred, dtype=np.int64)
    k = int(max(y_true.max(initial=0), child_pred.max(initial=0), ref_pred.max(initial=0))) + 1
    n = y_true.size
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    full = np.arange(n)[None, :]
    point = float(macro_f1_rows(y_true, child_pred, full, k)[0] - macro_f1_rows(y_true, ref_pred, full, k)[0])
    boots = macro_f1_rows(y_true, child_pred, idx, k) - macro_f1_rows(y_true, ref_pred, idx, k)
    lo, hi = _percentile_ci(boots)
    return {"value": point, "lower": lo, "upper": hi, "n": int(n), "method": f"paired bootstrap ({resamples})"}
