"""Gates: declarative rules over stored metrics, evaluated without `eval`.

A rule is one line:

    accuracy >= production.accuracy - 0.01     relative to the current production version
    latency_p95_ms <= 1.10 * production        bare `production`/`parent` = the same metric there
    size_mb <= 200                             absolute
    fidelity >= parent.fidelity * 0.99         relative to the (first) parent version
    approvals >= 2                             valid approvals for the target phase
    evaluated_on == "sst2-dev"                 some metric was measured on that dataset
    evaluated on dataset sst2-dev              the same, in words

Expressions allow numbers, `production.<m>`, `parent.<m>`, the version's own metrics, `+ - * /`
and parentheses. A metric that has no stored value fails the rule with "not evaluated": a gate
never passes because nothing was measured. A rule relative to a production (or parent) version
that does not exist yet is reported as "skipped" with that reason (there is nothing to compare
with), and counts as passing; the report says so. `size_mb`, `size_bytes`, `params` and
`canary_share` come from the version row when no metric of that name is stored (size_mb in MiB,
as the size suite stores it).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from relman.errors import ReleaseError
from relman.release.rules import (COMPARATORS, ApprovalsRule, BinOp, DatasetRule, MetricRule, Neg, Num, Ref,
                                  parse_rule)

__all__ = ["COMPARATORS", "ApprovalsRule", "DatasetRule", "GateReport", "MetricRule", "RuleResult",
           "check_artifacts", "evaluate_gates", "parse_rule"]

# -- evaluation --------------------------------------------------------------------------------
@dataclass
class RuleResult:
    rule: str
    status: str  # pass | fail | skipped
    reason: str
    inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status != "fail"


@dataclass
class GateReport:
    model: str
    version: str
    from_phase: str
    to_phase: str
    policy_revision: int
    evaluated_at: str
    rules: list[RuleResult]
    allowed: bool = True
    production: str | None = None
    parent: str | None = None

    @property
    def passed(self) -> bool:
        return self.allowed and all(r.passed for r in self.rules)

    @property
    def failing(self) -> list[RuleResult]:
        return [r for r in self.rules if not r.passed]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "GateReport":
        rules = [RuleResult(**{k: r[k] for k in ("rule", "status", "reason", "inputs")}) for r in d.get("rules", [])]
        keys = ("model", "version", "from_phase", "to_phase", "policy_revision", "evaluated_at", "allowed",
                "production", "parent")
        return cls(rules=rules, **{k: d.get(k) for k in keys})

    def failing_text(self) -> str:
        return "; ".join(f"{r.rule} ({r.reason})" for r in self.failing)


class _Missing(Exception):
    def __init__(self, reason: str, skip: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.skip = skip


def _compare(a: float, op: str, b: float) -> bool:
    if op == "==":
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if op == "!=":
        return not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return {"<=": a <= b, ">=": a >= b, "<": a < b, ">": a > b}[op]


def _fmt(x: float) -> str:
    return f"{x:.6g}"


class _Subject:
    """The metric values of one version (stored metrics + values from the version row)."""

    def __init__(self, catalog: Any, version: Any) -> None:
        self.ref = version.ref
        self.values: dict[str, float] = dict(catalog.metric_values(version.id))
        self.values.setdefault("size_bytes", float(version.size_bytes))
        self.values.setdefault("size_mb", version.size_bytes / 2**20)  # MiB, like the size suite
        if version.params is not None:
            self.values.setdefault("params", float(version.params))
        if version.canary_share is not None:
            self.values.setdefault("canary_share", float(version.canary_share))


def _value(node: Any, metric: str, subjects: Mapping[str, _Subject | None], inputs: dict[str, Any],
           missing_scope: Mapping[str, str]) -> float:
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Neg):
        return -_value(node.operand, metric, subjects, inputs, missing_scope)
    if isinstance(node, BinOp):
        a = _value(node.left, metric, subjects, inputs, missing_scope)
        b = _value(node.right, metric, subjects, inputs, missing_scope)
        if node.op == "+":
            return a + b
        if node.op == "-":
            return a - b
        if node.op == "*":
            return a * b
        if b == 0:
            raise _Missing("division by zero")
        return a / b
    assert isinstance(node, Ref)
    name = node.name or metric
    subject = subjects.get(node.scope)
    label = name if node.scope == "self" else f"{node.scope}.{name}"
    if subject is None:
        raise _Missing(missing_scope[node.scope], skip=True)
    if name not in subject.values:
        raise _Missing(f"not evaluated: {subject.ref} has no '{name}'")
    inputs[label] = subject.values[name]
    return subject.values[name]


def _metric_rule(rule: MetricRule, text: str, subjects: Mapping[str, _Subject | None],
                 missing_scope: Mapping[str, str]) -> RuleResult:
    inputs: dict[str, Any] = {}
    me = subjects["self"]
    assert me is not None
    if rule.metric not in me.values:
        return RuleResult(text, "fail", f"not evaluated: {me.ref} has no '{rule.metric}'", inputs)
    left = me.values[rule.metric]
    inputs[rule.metric] = left
    try:
        right = _value(rule.expr, rule.metric, subjects, inputs, missing_scope)
    except _Missing as m:
        return RuleResult(text, "skipped" if m.skip else "fail", m.reason, inputs)
    inputs["threshold"] = right
    ok = _compare(left, rule.op, right)
    return RuleResult(text, "pass" if ok else "fail",
                      f"{rule.metric} = {_fmt(left)} {'' if ok else 'not '}{rule.op} {_fmt(right)}", inputs)


def check_artifacts(catalog: Any, version_id: int) -> RuleResult:
    """Re-hash the version's blobs. Blobs are immutable and content-addressed, so callers run
    this before taking the write lock (hashing gigabytes must not block other writers)."""
    bad = []
    arts = catalog.artifacts(version_id)
    for a in arts:
        problem = catalog.store.verify(a["sha256"])
        if problem:
            bad.append(f"{a['path']}: {problem}")
    return RuleResult("artifacts intact", "fail" if bad else "pass",
                      "; ".join(bad) if bad else f"{len(arts)} file(s) match their sha256", {"files": len(arts)})


def evaluate_gates(catalog: Any, version: Any, to_phase: str, *, policy: Mapping[str, Any] | None = None,
                   revision: int | None = None, integrity: RuleResult | None = None) -> GateReport:
    """Evaluate every rule guarding `version`'s move to `to_phase` under its model's policy
    (`integrity`: a `check_artifacts` result computed beforehand, else computed here)."""
    from relman.catalog.catalog import utcnow
    from relman.release.approvals import valid_approvals
    from relman.release.policy import PHASES, allowed_targets, get_policy

    if to_phase not in PHASES:
        raise ReleaseError(f"unknown phase '{to_phase}' (phases: {', '.join(PHASES)})")
    if policy is None:
        policy, revision = get_policy(catalog, version.model)
    production = [v for v in catalog.versions(version.model) if v.phase == "production" and v.id != version.id]
    prod = max(production, key=lambda v: v.created_at) if production else None
    parents = catalog.parents(version.id)
    parent = catalog.get_version(parents[0]["parent_id"]) if parents else None
    subjects: dict[str, _Subject | None] = {
        "self": _Subject(catalog, version),
        "production": _Subject(catalog, prod) if prod else None,
        "parent": _Subject(catalog, parent) if parent else None,
    }
    missing_scope = {"production": f"skipped: {version.model} has no production version to compare with",
                     "parent": f"skipped: {version.ref} has no parent version"}
    results: list[RuleResult] = []
    rules = list(policy["gates"].get(to_phase, []))
    needed = int(policy["approvals"].get(to_phase, 0))
    if needed and not any(isinstance(parse_rule(r), ApprovalsRule) for r in rules):
        rules.append(f"approvals >= {needed}")
    for text in rules:
        rule = parse_rule(text)
        if isinstance(rule, MetricRule):
            results.append(_metric_rule(rule, text, subjects, missing_scope))
        elif isinstance(rule, ApprovalsRule):
            approvals = valid_approvals(catalog, version.id, to_phase)
            n = len(approvals)
            ok = _compare(float(n), rule.op, rule.count)
            need = "" if ok else f", need {rule.op} {rule.count:g}"
            results.append(RuleResult(text, "pass" if ok else "fail", f"{n} valid approval(s) for {to_phase}{need}",
                                      {"approvals": n, "by": [a["by"] for a in approvals]}))
        else:
            seen = sorted({m["dataset"] or m["context"].get("dataset")
                           for m in catalog.metrics(version.id, latest=False)} - {None, ""})
            ok = rule.dataset in seen
            results.append(RuleResult(text, "pass" if ok else "fail",
                                      f"evaluated on {rule.dataset}" if ok else
                                      f"not evaluated on dataset '{rule.dataset}' "
                                      f"(evaluated on: {', '.join(seen) or 'none'})",
                                      {"datasets": seen}))
    if to_phase in policy.get("verify_artifacts", []):
        results.append(integrity if integrity is not None else check_artifacts(catalog, version.id))
    allowed = to_phase in allowed_targets(policy, version.phase)
    return GateReport(model=version.model, version=version.version, from_phase=version.phase, to_phase=to_phase,
                      policy_revision=int(revision or 0), evaluated_at=utcnow(), rules=results, allowed=allowed,
                      production=prod.ref if prod else None, parent=parent.ref if parent else None)
