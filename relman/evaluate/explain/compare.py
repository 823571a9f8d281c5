"""Comparing attributions: of a child with its parent (same examples, same method), and with
the planted truth in tests. Plain numpy, no model needed.

- `rank_correlation`: Spearman's rho, average ranks for ties; NaN when either side is constant.
- `topk_overlap`: the share of the k largest magnitudes both sides agree on.
- `divergence`: 1 - rho (1 when undefined), the flip list's sort key.

Which features and which values (`MEASURES`, issue 27):

- `"model"` (the default): Spearman of the *signed* attributions over the features that are not
  inert (inputs equal to the baseline, which every model scores 0: see `attribute`). Rank
  agreement of magnitudes over all features is dominated by the input: on 8 x 8 digits with a
  black baseline a trained ViT agreed with a re-initialised copy of itself at 0.84, as well as
  with its INT8 child. Leaving out the inert features removes the part fixed by the input;
  keeping the sign removes the part fixed by |input - baseline| (a random model's gradients
  push either way, a faithful child's the same way as its parent's). Attributions below 1 % of
  the pair's scale (the larger explained score or attribution of the two) count as 0 (ties):
  their order is numerical noise, and on a model that rests on one planted token the noise of
  the other tokens would otherwise decide the rank correlation. When one side finds nothing
  above that and the other does, they agree on nothing (0); when neither does, there is no
  order to agree on (NaN, counted as `undefined` by the suite and left out of the mean).
  Top-k overlap is taken over the same features.
- `"magnitude-all"`: the measure before issue 27 (magnitudes, every feature), kept so the
  model-randomisation check can show what it misses.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

TOP_K = 5
NEGLIGIBLE = 0.01
MEASURES = ("model", "magnitude-all")
DEFAULT_MEASURE = "model"


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (numpy only: the GUI calls this too)."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return (starts + (counts + 1) / 2.0)[inverse]


def rank_correlation(a: Sequence[float], b: Sequence[float], *, signed: bool = False) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if not signed:
        a, b = np.abs(a), np.abs(b)
    if a.shape != b.shape:
        raise ValueError(f"attributions of different lengths ({len(a)} vs {len(b)}) cannot be compared")
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    ra, rb = _ranks(a), _ranks(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def topk_overlap(a: Sequence[float], b: Sequence[float], k: int = TOP_K) -> float:
    a, b = np.abs(np.asarray(a, dtype=np.float64)), np.abs(np.asarray(b, dtype=np.float64))
    k = min(k, len(a))
    if k == 0:
        return float("nan")
    ta = set(np.argsort(-a, kind="stable")[:k].tolist())
    tb = set(np.argsort(-b, kind="stable")[:k].tolist())
    return len(ta & tb) / k


def scores_of(example: dict[str, Any]) -> np.ndarray:
    return np.array([f["score"] for f in example["features"]], dtype=np.float64)


def informative(*examples: dict[str, Any]) -> np.ndarray:
    """Indices of the features no side marks inert (input equal to the baseline)."""
    n = len(examples[0]["features"])
    inert: set[int] = set()
    for e in examples:
        inert |= {int(j) for j in e.get("inert") or []}
    return np.array([j for j in range(n) if j not in inert], dtype=np.int64)


def agreement(a: dict[str, Any], b: dict[str, Any], measure: str = DEFAULT_MEASURE,
              k: int = TOP_K) -> tuple[float, float]:
    """(rho, top-k overlap) of two examples' attributions under `measure`."""
    if measure not in MEASURES:
        raise ValueError(f"unknown agreement measure '{measure}' (use {', '.join(MEASURES)})")
    sa, sb = scores_of(a), scores_of(b)
    if measure == "magnitude-all":
        return rank_correlation(sa, sb), topk_overlap(sa, sb, k)
    keep = informative(a, b)
    sa, sb = sa[keep], sb[keep]
    # attention rollout is a share of the flow, not in the explained score's units
    units = not (a.get("flow") or b.get("flow"))
    scale = max(_scale(sa, a.get("score") if units else None), _scale(sb, b.get("score") if units else None))
    sa = np.where(np.abs(sa) < NEGLIGIBLE * scale, 0.0, sa)
    sb = np.where(np.abs(sb) < NEGLIGIBLE * scale, 0.0, sb)
    flat_a, flat_b = len(sa) < 2 or np.ptp(sa) == 0, len(sb) < 2 or np.ptp(sb) == 0
    if flat_a and flat_b:  # neither finds a feature that matters: no order to agree on
        return float("nan"), float("nan")
    if flat_a or flat_b:  # one finds what matters, the other finds nothing: no agreement
        return 0.0, 0.0
    return rank_correlation(sa, sb, signed=True), topk_overlap(sa, sb, k)


def _scale(scores: np.ndarray, explained: Any) -> float:
    """An explanation's size: its largest attribution or its explained score, whichever is larger."""
    top = float(np.abs(scores).max()) if len(scores) else 0.0
    return max(top, abs(float(explained)) if isinstance(explained, (int, float)) else 0.0)


def compare_examples(child: list[dict[str, Any]], parent: list[dict[str, Any]], k: int = TOP_K,
                     measure: str = DEFAULT_MEASURE) -> list[dict[str, Any]]:
    """Per example (matched by index): rho, top-k overlap (under `measure`), whether the
    prediction flipped."""
    by_index = {e["index"]: e for e in parent}
    out = []
    for c in child:
        p = by_index.get(c["index"])
        if p is None:
            continue
        sc, sp = scores_of(c), scores_of(p)
        if len(sc) != len(sp):
            raise ValueError(f"example {c['index']}: the versions split it into different features "
                             f"({len(sc)} vs {len(sp)}), so their attributions cannot be compared")
        rho, top = agreement(c, p, measure, k)
        out.append({"index": c["index"], "rho": rho, "topk": top,
                    "flipped": c.get("prediction") != p.get("prediction"),
                    "divergence": 1.0 if np.isnan(rho) else 1.0 - rho,
                    "child_prediction": c.get("prediction"), "parent_prediction": p.get("prediction"),
                    "child_confidence": c.get("confidence"), "parent_confidence": p.get("confidence")})
    return out


def flip_list(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The examples whose prediction changed, most divergent attribution first."""
    return sorted((r for r in rows if r["flipped"]), key=lambda r: (-r["divergence"], r["index"]))


def nanmean(values: Sequence[float]) -> float | None:
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if len(arr) else None
