"""Comparing attributions: of a child with its parent (same examples, same method), and with
the planted truth in tests. Plain numpy, no model needed.

- `rank_correlation`: Spearman's rho of the attribution *magnitudes* (what a feature matters,
  whichever way it pushes), average ranks for ties; NaN when either side is constant.
- `topk_overlap`: the share of the k largest magnitudes both sides agree on.
- `divergence`: 1 - rho (1 when undefined), the flip list's sort key.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

TOP_K = 5


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (numpy only: the GUI calls this too)."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return (starts + (counts + 1) / 2.0)[inverse]


def rank_correlation(a: Sequence[float], b: Sequence[float]) -> float:
    a, b = np.abs(np.asarray(a, dtype=np.float64)), np.abs(np.asarray(b, dtype=np.float64))
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


def compare_examples(child: list[dict[str, Any]], parent: list[dict[str, Any]], k: int = TOP_K) -> list[dict[str, Any]]:
    """Per example (matched by index): rho, top-k overlap, whether the prediction flipped."""
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
        rho = rank_correlation(sc, sp)
        out.append({"index": c["index"], "rho": rho, "topk": topk_overlap(sc, sp, k),
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
