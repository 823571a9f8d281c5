"""Latency as a ratio to the model's current production version, from stored paired ratios.

Why: the latency suite stores `latency_p50_ratio_vs_parent` (child ÷ parent, timed in the same
process in interleaved rounds, with a 95 % bootstrap interval in its context) and, when the
model had a production version at the time, `latency_p50_ratio_vs_production`. Each
version's ratio to *its own parent* is not comparable across versions (a grandchild's 0.9 is
relative to a different model than a child's 0.9), and absolute milliseconds taken at
different moments on a shared machine are not comparable either. What a release decision
needs is "how fast is this, relative to what runs now".

How: every stored paired ratio is an edge between two versions (the measured one and its
`reference`, from the metric's context; a `vs_parent` ratio without one names the first
lineage parent). A breadth-first walk from the model's current production version gives each
reachable version the product of the ratios along the fewest hops. One hop is a direct
paired measurement against production (shown as "measured"); more hops are *chained*: the
interval is then combined in log space as the root sum of squares of each hop's log-distances
to its bounds, which assumes the hops were measured independently (they were: separate jobs)
and is approximate — the tooltip and axis label say "chained" wherever that was done.
Walking an edge backwards (the reference's ratio to the measured one) inverts the ratio and
swaps its bounds. No Qt, no torch: the snapshot calls this once per catalog change.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from relman.ui.snapshot import Edge, VersionRow

RATIO_KEY = "latency_ratio_vs_production"  # derived (not stored): the Compare view's default latency axis
STORED_RATIOS = ("latency_p50_ratio_vs_production", "latency_p50_ratio_vs_parent")
TITLE = "latency p50 ÷ production's (paired ratio)"


@dataclass(frozen=True)
class RatioEstimate:
    """A version's latency ÷ its model's production latency, with a 95 % interval."""

    value: float
    lower: float
    upper: float
    path: tuple[str, ...]  # refs from the version to production; each step is one paired measurement

    @property
    def hops(self) -> int:
        return max(0, len(self.path) - 1)

    @property
    def chained(self) -> bool:
        return self.hops > 1

    def describe(self) -> str:
        """One line for a tooltip: how the figure was obtained."""
        if self.hops == 0:
            return "production itself (1 by definition)"
        if not self.chained:
            return f"measured paired against {self.path[-1]}"
        return (f"chained over {self.hops} paired measurements ({' → '.join(self.path)}); "
                "interval combined in log space, assuming independent runs")


@dataclass(frozen=True)
class _Hop:
    log_ratio: float  # log(from / to)
    down: float  # log-distance to the lower bound (>= 0)
    up: float  # log-distance to the upper bound (>= 0)


def _hop(value: float, interval: tuple[float, float] | None) -> _Hop | None:
    if not value or value <= 0 or not math.isfinite(value):
        return None
    lo, hi = interval if interval else (value, value)
    lo, hi = (lo if lo and lo > 0 else value), (hi if hi and hi > 0 else value)
    lv = math.log(value)
    return _Hop(lv, max(0.0, lv - math.log(min(lo, value))), max(0.0, math.log(max(hi, value)) - lv))


def ratio_edges(versions: Iterable["VersionRow"], edges: Iterable["Edge"]) -> dict[int, list[tuple[int, _Hop]]]:
    """Undirected graph of paired measurements: node id → [(neighbour id, hop from node to neighbour)]."""
    versions = list(versions)
    by_ref = {v.ref: v.id for v in versions}
    first_parent: dict[int, int] = {}
    for e in sorted(edges, key=lambda e: e.position):
        first_parent.setdefault(e.child_id, e.parent_id)
    graph: dict[int, list[tuple[int, _Hop]]] = {}
    for v in versions:
        for key in STORED_RATIOS:
            if key not in v.metrics:
                continue
            ref = v.metric_refs.get(key)
            other = by_ref.get(ref) if ref else (first_parent.get(v.id) if key.endswith("_parent") else None)
            hop = _hop(v.metrics[key], v.intervals.get(key))
            if other is None or other == v.id or hop is None:
                continue
            graph.setdefault(v.id, []).append((other, hop))
            graph.setdefault(other, []).append((v.id, _Hop(-hop.log_ratio, hop.up, hop.down)))
    return graph


def ratios_vs_production(versions: list["VersionRow"], edges: list["Edge"]) -> dict[int, RatioEstimate]:
    """Each version reachable through paired measurements from its model's current production
    version → its latency ratio to that version (see the module docstring)."""
    graph = ratio_edges(versions, edges)
    by_id = {v.id: v for v in versions}
    out: dict[int, RatioEstimate] = {}
    productions: dict[str, "VersionRow"] = {}
    for v in versions:
        if v.phase == "production" and (v.model not in productions or v.created_at > productions[v.model].created_at):
            productions[v.model] = v
    for model, prod in productions.items():
        # (log ratio to production, squared log-distances down/up, path back to production)
        seen: dict[int, tuple[float, float, float, tuple[str, ...]]] = {prod.id: (0.0, 0.0, 0.0, (prod.ref,))}
        queue = deque([prod.id])
        while queue:
            node = queue.popleft()
            lr, d2, u2, path = seen[node]
            for other, hop in graph.get(node, []):
                if other in seen or other not in by_id or by_id[other].model != model:
                    continue
                # other / prod = (other / node) * (node / prod); the hop stored is node → other
                seen[other] = (lr - hop.log_ratio, d2 + hop.up ** 2, u2 + hop.down ** 2, (by_id[other].ref,) + path)
                queue.append(other)
        if len(seen) < 2:
            continue  # nothing measured against production: no axis rather than a lone 1.0
        for vid, (lr, d2, u2, path) in seen.items():
            out[vid] = RatioEstimate(math.exp(lr), math.exp(lr - math.sqrt(d2)), math.exp(lr + math.sqrt(u2)), path)
    return out
