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
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from relman.ui.snapshot import Edge, VersionRow

RATIO_KEY = "latency_ratio_vs_production"  # derived (not stored): the Compare view's default latency axis
STORED_RATIOS = ("latency_p50_ratio_vs_production", "latency_p50_ratio_vs_parent")
TITLE = "latency p50 ÷ production's (paired ratio)"


class RatioEstimate:
    """A version's latency ÷ its model's production latency, with a 95 % interval. The path
    back to production is kept as a link to the previous step (a 10,000-version catalog does
    not copy 10,000 tuples of refs) and spelled out only when a tooltip asks."""

    __slots__ = ("value", "lower", "upper", "ref", "hops", "previous")

    def __init__(self, value: float, lower: float, upper: float, ref: str, hops: int,
                 previous: "RatioEstimate | None") -> None:
        self.value, self.lower, self.upper = value, lower, upper
        self.ref, self.hops, self.previous = ref, hops, previous

    @property
    def path(self) -> tuple[str, ...]:
        """Refs from the version to production; each step is one paired measurement."""
        out: list[str] = []
        step: RatioEstimate | None = self
        while step is not None:
            out.append(step.ref)
            step = step.previous
        return tuple(out)

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


# A hop between two versions: (log(from / to), log-distance down to the lower bound, up to the
# upper bound), both distances >= 0. Plain tuples: a 10,000-version catalog has ~10,000 of them.
_Hop = tuple[float, float, float]


def _hop(value: float, interval: tuple[float, float] | None) -> _Hop | None:
    if not value or value <= 0 or not math.isfinite(value):
        return None
    lo, hi = interval if interval else (value, value)
    lo, hi = (lo if lo and lo > 0 else value), (hi if hi and hi > 0 else value)
    lv = math.log(value)
    return (lv, max(0.0, lv - math.log(min(lo, value))), max(0.0, math.log(max(hi, value)) - lv))


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
            graph.setdefault(other, []).append((v.id, (-hop[0], hop[2], hop[1])))
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
        # per reached version: (log ratio to production, squared log-distances down / up, estimate)
        start = RatioEstimate(1.0, 1.0, 1.0, prod.ref, 0, None)
        seen: dict[int, tuple[float, float, float, RatioEstimate]] = {prod.id: (0.0, 0.0, 0.0, start)}
        queue = deque([prod.id])
        while queue:
            node = queue.popleft()
            lr, d2, u2, est = seen[node]
            for other, (log_ratio, down, up) in graph.get(node, ()):
                if other in seen:
                    continue
                row = by_id.get(other)
                if row is None or row.model != model:
                    continue
                # other / prod = (other / node) * (node / prod); the hop is node → other
                olr, od2, ou2 = lr - log_ratio, d2 + up * up, u2 + down * down
                seen[other] = (olr, od2, ou2, RatioEstimate(math.exp(olr), math.exp(olr - math.sqrt(od2)),
                                                            math.exp(olr + math.sqrt(ou2)), row.ref, est.hops + 1,
                                                            est))
                queue.append(other)
        if len(seen) < 2:
            continue  # nothing measured against production: no axis rather than a lone 1.0
        for vid, (_lr, _d2, _u2, est) in seen.items():
            out[vid] = est
    return out
