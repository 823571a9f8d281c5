"""What the GUI shows, read from the catalog in a few cheap queries (no Qt, no torch).

Why a snapshot: every view (table, board, plots, lineage) reads the same plain rows, built
with one query per table instead of one per version, so a 10,000-version catalog opens in
well under a second. `catalog_token` / `jobs_token` are single aggregate queries the GUI's
poll timer compares, so views are rebuilt only when something actually changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

from relman.catalog import Catalog
from relman.catalog import semver

PHASE_ORDER = ("draft", "candidate", "staging", "production", "retired", "rejected")
BOARD_PHASES = ("draft", "candidate", "staging", "production", "retired")

# Metrics shown as table columns / card lines when present, in this order; others follow.
PREFERRED_METRICS = (
    "accuracy", "f1_macro", "f1", "latency_p95_ms", "latency_p50_ms", "size_mb", "peak_memory_mb",
    "fidelity_agreement", "fairness_gap", "robustness_drop", "perplexity",
)
def lower_is_better(metric: str) -> bool:
    """Direction of a metric for Pareto fronts and deltas, as declared once where it is measured
    (the suites' `metrics`, the recipes' RECIPE_METRICS); undeclared metrics count as higher-better."""
    from relman.compress.registry import metric_direction

    if metric in ("deployable_size_mb", "latency_ratio_vs_production"):  # derived here (VersionRow.value): smaller is better, as size_mb
        return True
    return metric_direction(metric) is False


def recipe_label(recipe: dict[str, Any]) -> str:
    """A short name for the recipe that made a version ('' for imports)."""
    if not recipe:
        return ""
    for key in ("name", "recipe", "kind"):
        value = recipe.get(key)
        if isinstance(value, str) and value:
            return value
    return ",".join(sorted(recipe))[:40]


@dataclass
class VersionRow:
    id: int
    model: str
    version: str
    phase: str
    format: str
    task: str | None
    size_bytes: int
    params: int | None
    recipe: dict[str, Any]
    created_at: str
    canary_share: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    adapter_base: str | None = None  # a LoRA adapter's pinned base (ref)
    privacy: dict[str, Any] | None = None  # the privacy ledger of a DP-trained version
    base_bytes: int = 0  # what must ship with it: an adapter's pinned base… (0 for a whole model)
    manifest_sha256: str = ""
    ships_with: list[str] = field(default_factory=list)  # refs it cannot run without (relman.ui.deployable)
    deployable_missing: list[str] = field(default_factory=list)  # those of them not in the catalog
    # from each stored metric's context: its 95 % interval, the version a paired figure was
    # measured against, and (absolute latencies) the conditions it was measured under
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    metric_refs: dict[str, str] = field(default_factory=dict)
    raw_conditions: dict[str, str] = field(default_factory=dict)  # the stored context (JSON text)
    # figures derived from stored ones (relman.ui.paired_latency), with how each was obtained
    derived: dict[str, float] = field(default_factory=dict)
    derivations: dict[str, Any] = field(default_factory=dict)  # objects with describe() and chained

    def how(self, metric: str) -> str:
        """How a derived figure was obtained ('' for a stored one)."""
        d = self.derivations.get(metric)
        return d.describe() if d is not None else ""

    def chained(self, metric: str) -> bool:
        d = self.derivations.get(metric)
        return bool(d is not None and d.chained)

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.version}"

    @property
    def recipe_name(self) -> str:
        return recipe_label(self.recipe)

    @property
    def size_mb(self) -> float:
        return self.size_bytes / 1e6

    def interval(self, metric: str) -> tuple[float, float] | None:
        """The stored (or derived) 95 % interval of `metric`, if it has one."""
        return self.intervals.get(metric)

    def conditions(self, metric: str) -> str | None:
        """What an absolute latency was measured under ('b1 s128, perf_counter, load 1.9')."""
        return conditions_text(self.raw_conditions.get(metric))

    def value(self, metric: str) -> float | None:
        """A stored metric, or a column of the version that can be plotted like one."""
        if metric in self.metrics:
            return self.metrics[metric]
        if metric in self.derived:
            return self.derived[metric]
        if metric == "size_mb":
            return self.size_mb
        if metric == "deployable_size_mb":  # what serving it needs: an adapter needs its base too
            if self.deployable_missing:
                return None  # cannot be deployed from this catalog: no size rather than a small one
            return (self.value("size_mb") or 0.0) + self.base_bytes / 1e6
        if metric == "params":
            return float(self.params) if self.params is not None else None
        return None


@dataclass
class Edge:
    parent_id: int
    child_id: int
    relation: str
    position: int


@dataclass
class Snapshot:
    versions: list[VersionRow]
    edges: list[Edge]
    metric_names: list[str]
    token: tuple[Any, ...] = ()

    def by_id(self) -> dict[int, VersionRow]:
        return {v.id: v for v in self.versions}

    def models(self) -> list[str]:
        return sorted({v.model for v in self.versions})

    def of_model(self, model: str | None) -> list[VersionRow]:
        return [v for v in self.versions if model is None or v.model == model]

    def key_metrics(self, limit: int = 4) -> list[str]:
        return self.metric_names[:limit]

    def production(self, model: str) -> VersionRow | None:
        prod = [v for v in self.versions if v.model == model and v.phase == "production"]
        return max(prod, key=lambda v: v.created_at) if prod else None

    def plottable_metrics(self) -> list[str]:
        """Every stored metric plus size and params, which every version has."""
        names = list(self.metric_names)
        from relman.ui.paired_latency import RATIO_KEY

        if any(RATIO_KEY in v.derived for v in self.versions):
            names.insert(0, RATIO_KEY)
        for extra in ("deployable_size_mb", "size_mb", "params"):
            if extra not in names:
                names.append(extra)
        return names


def catalog_token(catalog: Catalog) -> tuple[Any, ...]:
    """Changes whenever anything a catalog view shows changes (one cheap query)."""
    return tuple(catalog.conn.execute(
        "SELECT (SELECT MAX(seq) FROM events), (SELECT MAX(id) FROM versions), (SELECT COUNT(*) FROM versions),"
        " (SELECT MAX(id) FROM metrics), (SELECT MAX(id) FROM transitions), (SELECT COUNT(*) FROM approvals),"
        " (SELECT MAX(id) FROM datasets), (SELECT TOTAL(canary_share) FROM versions)").fetchone())


def jobs_token(catalog: Catalog) -> tuple[Any, ...]:
    """Changes whenever a job is queued, progresses, changes status or adds a curve point."""
    return tuple(catalog.conn.execute(
        "SELECT COUNT(*), MAX(id), TOTAL(progress), MAX(heartbeat_at), MAX(started_at), MAX(finished_at),"
        " TOTAL(cancel_requested), TOTAL(attempts), SUM(status = 'running'), SUM(status = 'queued'),"
        " (SELECT MAX(rowid) FROM job_points) FROM jobs").fetchone())


def row_from_catalog(catalog: Catalog, version_id: int) -> VersionRow:
    """One version as a snapshot row, read directly (for a version newer than the snapshot)."""
    v = catalog.get_version(version_id)
    return VersionRow(id=v.id, model=v.model, version=v.version, phase=v.phase, format=v.format, task=v.task,
                      size_bytes=v.size_bytes, params=v.params, recipe=v.recipe, created_at=v.created_at,
                      canary_share=v.canary_share)


METRIC_GROUPS = (("quality", ("accuracy", "f1", "precision", "recall", "perplexity", "loss", "exact", "mcq", "bpb",
                                "agreement", "fidelity", "cosine", "spearman")),
                 ("speed", ("latency", "ttft", "decode", "tokens_per", "throughput", "_ms")),
                 ("size", ("size", "params", "memory", "rss", "mb")),)


def metric_group(name: str) -> str:
    """quality | speed | size | other: how the Compare view's axis lists are grouped."""
    low = name.lower()
    for group, words in METRIC_GROUPS:
        if any(w in low for w in words):
            return group
    return "other"


def metric_title(name: str) -> str:
    """A readable name for a raw metric key: 'latency_p50_ratio_vs_parent' → 'latency p50, ratio
    vs parent'; 'deployable_size_mb' → 'deployable size (MB)'."""
    from relman.ui.paired_latency import RATIO_KEY, TITLE

    if name == RATIO_KEY:
        return TITLE
    text = name
    for raw, nice in (("_ratio_vs_", ", ratio vs "), ("_delta_vs_", ", change vs "), ("_vs_", " vs "),
                      ("_ms", " (ms)"), ("_mb", " (MB)")):
        text = text.replace(raw, nice)
    return text.replace("_", " ")


def grouped_metrics(names: Sequence[str], lead: int = 4) -> list[tuple[str, list[str]]]:
    """`names` grouped (quality, speed, size, other); in each group the caller's first `lead`
    names (the task's own metrics, ranked) keep their order at the top, the rest sorted by name."""
    out: dict[str, list[str]] = {g: [] for g in ("quality", "speed", "size", "other")}
    ranked = list(names)[:lead]
    for n in names:
        out[metric_group(n)].append(n)
    return [(g, [n for n in ranked if n in ns] + sorted(n for n in ns if n not in ranked))
            for g, ns in out.items() if ns]


def order_metrics(counts: dict[str, int]) -> list[str]:
    preferred = [m for m in PREFERRED_METRICS if m in counts]
    rest = sorted((m for m in counts if m not in PREFERRED_METRICS), key=lambda m: (-counts[m], m))
    return preferred + rest


def load_snapshot(catalog: Catalog) -> Snapshot:
    token = catalog_token(catalog)
    conn = catalog.conn
    rows = conn.execute(
        "SELECT v.id, m.name, v.version, v.phase, v.format, v.task, v.size_bytes, v.params, v.recipe,"
        " v.created_at, v.canary_share, v.meta, v.manifest_sha256 FROM versions v JOIN models m ON m.id = v.model_id"
        " WHERE NOT EXISTS (SELECT 1 FROM tombstones t WHERE t.version_id = v.id)").fetchall()  # deleted: hidden
    from relman.ui.deployable import NEEDS_OTHERS, attach_deployable

    versions = []
    metas: dict[int, dict[str, Any]] = {}
    for r in rows:
        meta = _json(r[11]) if r[4] in NEEDS_OTHERS or (r[11] and '"privacy"' in r[11]) else {}
        metas[r[0]] = meta
        versions.append(VersionRow(id=r[0], model=r[1], version=r[2], phase=r[3], format=r[4], task=r[5],
                                   size_bytes=r[6] or 0, params=r[7], recipe=_json(r[8]), created_at=r[9],
                                   canary_share=r[10], adapter_base=(meta.get("adapter") or {}).get("base_ref"),
                                   privacy=meta.get("privacy") or None, manifest_sha256=r[12] or ""))
    versions.sort(key=lambda v: (v.model, _semver_key(v.version)))
    by_id = {v.id: v for v in versions}
    attach_deployable(versions, metas)  # what each must ship with (an adapter's base…)
    counts: dict[str, int] = {}
    # Ordered by id so the newest value of each name wins, as in Catalog.metric_values.
    for vid, name, value, lo, hi, ref, cond in conn.execute(METRICS_QUERY):
        v = by_id.get(vid)
        if v is None:
            continue
        if name not in v.metrics:
            counts[name] = counts.get(name, 0) + 1
        v.metrics[name] = value
        # a newer value without an interval (or reference) must not keep the older one's
        if lo is not None and hi is not None:
            v.intervals[name] = (float(lo), float(hi))
        elif v.intervals:
            v.intervals.pop(name, None)
        if isinstance(ref, str):
            v.metric_refs[name] = ref
        elif v.metric_refs:
            v.metric_refs.pop(name, None)
        if cond is not None:
            v.raw_conditions[name] = cond
    for vid, name in conn.execute("SELECT version_id, name FROM tags ORDER BY name"):
        if vid in by_id:
            by_id[vid].tags.append(name)
    edges = [Edge(parent_id=r[1], child_id=r[0], relation=r[2] or "", position=r[3]) for r in conn.execute(
        "SELECT child_id, parent_id, relation, position FROM lineage ORDER BY child_id, position")
        if r[0] in by_id and r[1] in by_id]
    attach_latency_vs_production(versions, edges)
    return Snapshot(versions=versions, edges=edges, metric_names=order_metrics(counts), token=token)


# The newest value of each metric wins (ORDER BY id), with what its context says about it. The
# context is parsed only where it has what is read (instr first: most rows have no interval).
METRICS_QUERY = (
    "SELECT version_id, name, value,"
    " CASE WHEN instr(context, '\"interval\"') AND json_valid(context) THEN json_extract(context, '$.interval[0]') END,"
    " CASE WHEN instr(context, '\"interval\"') AND json_valid(context) THEN json_extract(context, '$.interval[1]') END,"
    " CASE WHEN instr(context, '\"reference\"') AND json_valid(context) THEN json_extract(context, '$.reference') END,"
    " CASE WHEN name LIKE 'latency%ms%' THEN context END"  # parsed only when a card shows it
    " FROM metrics WHERE value IS NOT NULL ORDER BY id")


def conditions_text(text: str | None) -> str | None:
    """'b1 s128, perf_counter, load 1.9': what an absolute latency was measured under (from
    its stored context)."""
    if not text:
        return None
    c = _json(text)
    parts = []
    if c.get("batch_size") is not None:
        parts.append(f"b{c['batch_size']}" + (f" s{c['seq_len']}" if c.get("seq_len") is not None else ""))
    if c.get("timer"):
        parts.append(str(c["timer"]))
    if isinstance(c.get("load_avg_1m"), (int, float)):
        parts.append(f"load {float(c['load_avg_1m']):.1f}")
    if c.get("concurrent_jobs"):
        parts.append(f"{c['concurrent_jobs']} other jobs running")
    return ", ".join(parts) or None


def attach_latency_vs_production(versions: list[VersionRow], edges: list[Edge]) -> None:
    """Give each version its latency ratio to its model's production version (derived from
    the stored paired ratios; relman.ui.paired_latency), with its interval and provenance."""
    from relman.ui.paired_latency import RATIO_KEY, ratios_vs_production

    by_id = {v.id: v for v in versions}
    for vid, est in ratios_vs_production(versions, edges).items():
        v = by_id[vid]
        v.derived[RATIO_KEY] = est.value
        v.intervals[RATIO_KEY] = (est.lower, est.upper)
        v.derivations[RATIO_KEY] = est


def _json(text: str | None) -> dict[str, Any]:
    if not text or text == "{}":
        return {}
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _semver_key(version: str) -> Any:
    try:
        return (0, semver.sort_key(version))
    except Exception:  # a malformed version string still gets a row, sorted last
        return (1, version)


def pareto_front(xs: Sequence[float], ys: Sequence[float], *, x_lower_better: bool = True,
                 y_lower_better: bool = False) -> list[int]:
    """Indices of the non-dominated points, ordered by x (best x first)."""
    pts = [(x if x_lower_better else -x, y if y_lower_better else -y, i) for i, (x, y) in enumerate(zip(xs, ys))]
    pts.sort()
    front: list[int] = []
    best_y = float("inf")
    for _x, y, i in pts:
        if y < best_y:
            front.append(i)
            best_y = y
    return front
