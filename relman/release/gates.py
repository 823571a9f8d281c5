"""Gates: declarative rules over stored metrics, evaluated without `eval`.

A rule is one line:

    accuracy >= production.accuracy - 0.01     relative to the current production version
    latency_p95_ms <= 1.10 * production        bare `production`/`parent` = the same metric there
    size_mb <= 200                             absolute
    fidelity >= parent.fidelity * 0.99         relative to the (first) parent version
    approvals >= 2                             valid approvals for the target phase
    evaluated_on == "sst2-dev"                 some metric was measured on that dataset
    evaluated on dataset sst2-dev              the same, in words

Interval bounds. Metrics stored with a 95 % interval (accuracy, macro_f1, fidelity, the paired
`<metric>_delta_vs_parent` / `_vs_production` and `latency_p50_ratio_vs_…`) expose it as
`<metric>.lower` and `<metric>.upper`, on either side of a rule:

    accuracy_delta_vs_production.lower >= -0.01   with 95 % confidence, not worse than
                                                  production by more than one point
    accuracy_delta_vs_production.upper >= -0.01   refuse only when significantly worse than
                                                  production by more than one point
    latency_p50_ratio_vs_production.upper <= 1.10 surely at most 10 % slower

Applicability. `... when COND [and COND ...]` limits a rule to the versions it makes sense
for; for the others it is "skipped" with the reason. Conditions (each may be preceded by
`not`): `compressed` (made by a compression recipe: pruning, quantisation, low-rank, FP16,
export), `has_parent`, `has_production` (the model has a production version other than this
one), `classifier`, `causal_lm`, `embedder`.

Expressions allow numbers, `production.<m>`, `parent.<m>`, the version's own metrics and their
bounds, `+ - * /` and parentheses — a tokenizer and a recursive-descent parser, never `eval`. A
malformed rule is refused with the column of the problem.

A metric that has no stored value fails the rule with "not evaluated", naming the command that
evaluates it: a gate never passes because nothing was measured. A `*_vs_production` metric
measured against an earlier production version counts as not evaluated too. A rule relative to
a production (or parent) version that does not exist — `production.<m>`, or a metric named
`*_vs_production` / `*_vs_parent` — is "skipped" with that reason (there is nothing to compare
with) and counts as passing; the report says so. `size_mb`, `size_bytes`, `params` and
`canary_share` come from the version row when no metric of that name is stored (size_mb in MiB,
as the size suite stores it).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

from relman.errors import ReleaseError
from relman.release.rules import (COMPARATORS, ApprovalsRule, BinOp, DatasetRule, MetricRule, Neg, Num, Ref,
                                  parse_rule)

from relman.release.rules import _SCOPES, BOUNDS, CONDITIONS, RuleSyntaxError  # noqa: F401  (re-exported)



def _compressed(recipe: Mapping[str, Any] | None) -> bool:
    """Whether the version came from a recipe that declares `compresses` (its registry entry is
    the one place that says so); a recipe this install does not know counts as not compressed."""
    from relman.compress.registry import RECIPES, all_recipes

    all_recipes()  # registers the built-in recipes (no heavy import)
    found = RECIPES.get((recipe or {}).get("name") or "")
    return bool(found and found.compresses)


def _task_role(task: str) -> str | None:
    from relman.tasks.specs import find_task

    spec = find_task(task)
    return spec.role if spec is not None else None


__all__ = ["BOUNDS", "COMPARATORS", "CONDITIONS", "ApprovalsRule", "DatasetRule", "GateReport", "MetricRule",
           "RuleResult", "RuleSyntaxError", "STATUS_ORDER", "check_artifacts", "evaluate_gates", "parse_rule"]

# -- evaluation --------------------------------------------------------------------------------
@dataclass
class RuleResult:
    rule: str
    status: str  # pass | fail | skipped | pending (passes now; checked again by the promotion)
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

    @property
    def applied(self) -> list[RuleResult]:
        """The rules that checked something (a skipped rule checked nothing: it is not a pass)."""
        return [r for r in self.rules if r.status != "skipped"]

    @property
    def nothing_checked(self) -> bool:
        """Passes only because every rule was skipped (or there are none): nothing was checked."""
        return self.allowed and self.passed and not self.applied

    def applied_text(self) -> str:
        """'3 of 5 rules applied', 'no rule applied (0 of 5)', 'no rules guard this phase'."""
        if not self.rules:
            return "no rules guard this phase"
        n, total = len(self.applied), len(self.rules)
        if n == 0:
            return f"no rule applied (0 of {total})"
        return f"{n} of {total} rule{'s' if total != 1 else ''} applied"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        d["applied"] = len(self.applied)
        d["nothing_checked"] = self.nothing_checked
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "GateReport":
        rules = [RuleResult(**{k: r[k] for k in ("rule", "status", "reason", "inputs")}) for r in d.get("rules", [])]
        keys = ("model", "version", "from_phase", "to_phase", "policy_revision", "evaluated_at", "allowed",
                "production", "parent")
        return cls(rules=rules, **{k: d.get(k) for k in keys})

    def failing_text(self) -> str:
        return "; ".join(f"{r.rule} ({r.reason})" for r in self.failing)

    def ordered_rules(self) -> list[RuleResult]:
        """The rules as a report shows them: failures first, then pending, skipped, passed (the
        policy's order within each), so the verdicts that block are read first."""
        return sorted(self.rules, key=lambda r: STATUS_ORDER.get(r.status, 0))


# How a report orders its rules: what blocks first, what checked nothing before what passed.
STATUS_ORDER = {"fail": 0, "pending": 1, "skipped": 2, "pass": 3}


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
    """The metric values of one version (stored metrics + values from the version row), with
    the context (interval, reference) of the newest measurement of each name."""

    def __init__(self, catalog: Any, version: Any) -> None:
        self.ref = version.ref
        self.version = version
        self.values: dict[str, float] = {}
        self.contexts: dict[str, dict[str, Any]] = {}
        self.datasets: dict[str, str] = {}
        for m in sorted(catalog.metrics(version.id, latest=False), key=lambda r: r["id"]):
            if m["value"] is not None:
                self.values[m["name"]] = m["value"]
                self.contexts[m["name"]] = m["context"]
                ds = m.get("dataset") or m["context"].get("dataset")
                if ds:
                    self.datasets[m["suite"]] = ds
        self.values.setdefault("size_bytes", float(version.size_bytes))
        self.values.setdefault("size_mb", version.size_bytes / 2**20)  # MiB, like the size suite
        if version.params is not None:
            self.values.setdefault("params", float(version.params))
        if version.canary_share is not None:
            self.values.setdefault("canary_share", float(version.canary_share))


class _Gate:
    """What a rule is evaluated against: the version, its production version and parent."""

    def __init__(self, subjects: Mapping[str, _Subject | None], missing_scope: Mapping[str, str]) -> None:
        self.subjects = subjects
        self.missing_scope = missing_scope
        self.intervals: dict[str, tuple[float, float]] = {}  # label -> 95 % interval, for the reason's sentence

    def how_to_evaluate(self, ref: str, metric: str) -> str:
        """The command that measures `metric` on `ref` (the dataset the references used)."""
        from relman.evaluate.registry import SUITES, suite_for_metric

        suite = suite_for_metric(metric)
        if suite is None:
            return "relman evaluate " + ref
        cmd = f"relman evaluate {ref} --suite {suite}"
        if SUITES[suite].dataset == "required":
            ds = None
            for scope in ("self", "production", "parent"):
                sub = self.subjects.get(scope)
                if sub is not None and (sub.datasets.get(suite) or sub.datasets.get("quality")):
                    ds = sub.datasets.get(suite) or sub.datasets.get("quality")
                    break
            cmd += f" --dataset {ds or 'NAME'}"
        return cmd

    def not_evaluated(self, subject: _Subject, name: str, why: str = "") -> "_Missing":
        why = why or f"{subject.ref} has no '{name}'"
        return _Missing(f"not evaluated: {why} — run: {self.how_to_evaluate(subject.ref, name)}")

    def lookup(self, scope: str, name: str, bound: str | None, inputs: dict[str, Any]) -> float:
        subject = self.subjects.get(scope)
        if subject is None:
            raise _Missing(self.missing_scope[scope], skip=True)
        for vs in _SCOPES:  # a paired metric needs its reference to exist (and be the current one)
            if name.endswith(f"_vs_{vs}") or f"_vs_{vs}@" in name:
                ref_subject = self.subjects.get(vs)
                if ref_subject is None:
                    raise _Missing(self.missing_scope[vs], skip=True)
                if (ref_subject.version.task or "") != (subject.version.task or ""):
                    raise _Missing(f"skipped: {vs} {ref_subject.ref} does another task "
                                   f"({ref_subject.version.task}), so there is no paired comparison", skip=True)
                measured_vs = subject.contexts.get(name, {}).get("reference")
                if name in subject.values and measured_vs and measured_vs != ref_subject.ref:
                    raise self.not_evaluated(subject, name, f"{subject.ref}'s '{name}' was measured against "
                                                            f"{measured_vs}, not the current {vs} {ref_subject.ref}")
        if name not in subject.values:
            raise self.not_evaluated(subject, name)
        untrustworthy = subject.contexts.get(name, {}).get("untrustworthy")
        if untrustworthy:  # the suite's own sanity check failed (explain: model randomisation)
            raise _Missing(f"untrustworthy: {subject.ref}'s '{name}' cannot pass a gate: {untrustworthy}")
        label = name if scope == "self" else f"{scope}.{name}"
        value = subject.values[name]
        interval = subject.contexts.get(name, {}).get("interval")
        if isinstance(interval, (list, tuple)) and len(interval) == 2 and None not in interval:
            self.intervals[label] = (float(interval[0]), float(interval[1]))
        if bound is not None:
            if not (isinstance(interval, (list, tuple)) and len(interval) == 2 and None not in interval):
                raise self.not_evaluated(subject, name, f"{subject.ref}'s '{name}' has no interval")
            value = float(interval[0] if bound == "lower" else interval[1])
            label += f".{bound}"
        inputs[label] = value
        return value

    def value(self, node: Any, metric: str, inputs: dict[str, Any]) -> float:
        if isinstance(node, Num):
            return node.value
        if isinstance(node, Neg):
            return -self.value(node.operand, metric, inputs)
        if isinstance(node, BinOp):
            a = self.value(node.left, metric, inputs)
            b = self.value(node.right, metric, inputs)
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
        return self.lookup(node.scope, node.name or metric, node.bound, inputs)

    def applies(self, rule: MetricRule) -> str | None:
        """None when every `when` condition holds, else why the rule does not apply."""
        me = self.subjects["self"]
        assert me is not None
        task = me.version.task or ""
        facts = {
            "compressed": _compressed(me.version.recipe),
            "has_parent": self.subjects.get("parent") is not None,
            "has_production": self.subjects.get("production") is not None,
            "classifier": _task_role(task) == "classifier",
            "causal_lm": _task_role(task) == "causal_lm",
            "embedder": _task_role(task) == "embedder",
        }
        for negated, cond in rule.when:
            if facts[cond] == negated:
                return f"does not apply: {_fact_text(me, cond, holds=negated)}"
        return None


def _fact_text(me: "_Subject", cond: str, *, holds: bool) -> str:
    """A `when` condition in words ('v1 has a production version', 'v1 is not a classifier'),
    not the condition's name glued to 'is' ('is not has production')."""
    ref, model = me.ref, me.version.model
    if cond == "has_parent":
        return f"{ref} has a parent version" if holds else f"{ref} has no parent version"
    if cond == "has_production":
        return f"{model} has a production version" if holds else f"{model} has no production version"
    if cond == "compressed":
        return f"{ref} is compressed" if holds else f"{ref} is not compressed"
    noun = {"classifier": "a classifier", "causal_lm": "a causal language model", "embedder": "an embedder"}[cond]
    return f"{ref} is {noun}" if holds else f"{ref} is not {noun} (task: {me.version.task or 'unknown'})"


def _metric_rule(rule: MetricRule, text: str, gate: _Gate) -> RuleResult:
    inputs: dict[str, Any] = {}
    why_not = gate.applies(rule)
    if why_not:
        return RuleResult(text, "skipped", why_not, inputs)
    label = rule.metric + (f".{rule.bound}" if rule.bound else "")
    try:
        left = gate.lookup("self", rule.metric, rule.bound, inputs)
        right = gate.value(rule.expr, rule.metric, inputs)
    except _Missing as m:
        return RuleResult(text, "skipped" if m.skip else "fail", m.reason, inputs)
    inputs["threshold"] = right
    ok = _compare(left, rule.op, right)
    return RuleResult(text, "pass" if ok else "fail", _verdict_sentence(rule, label, left, right, ok, inputs,
                                                                        gate.intervals), inputs)


OP_TEXT = {">=": "≥", "<=": "≤", "==": "=", "!=": "≠", "<": "<", ">": ">"}


def _fmt_pair(a: float, b: float) -> tuple[str, str]:
    """Two numbers short enough to read (4 significant digits), with more digits only where
    the short forms would look equal though the numbers are not (0.79999 is not ≥ 0.8)."""
    digits = 4
    while True:
        fa, fb = f"{a:.{digits}g}", f"{b:.{digits}g}"
        if fa != fb or a == b or digits >= 12:
            return fa, fb
        digits += 2


def _verdict_sentence(rule: MetricRule, label: str, left: float, right: float, ok: bool, inputs: Mapping[str, Any],
                      intervals: Mapping[str, tuple[float, float]]) -> str:
    """A metric rule's outcome as one readable line: 'accuracy 0.81 [0.78, 0.84] ≥ 0.8
    (production 0.83)', 'latency_p95_ms 11.5 is not ≤ 11' — the value (with its 95 % interval
    where one was stored), the comparison, the threshold, and the reference values it came from."""
    lv, rv = _fmt_pair(left, right)
    text = f"{label} {lv}"
    interval = intervals.get(rule.metric)
    if interval is not None:
        text += f" [{interval[0]:.4g}, {interval[1]:.4g}]"
    text += f" {'' if ok else 'is not '}{OP_TEXT.get(rule.op, rule.op)} {rv}"
    refs = []
    for key, value in inputs.items():
        if key in (label, "threshold") or not isinstance(value, (int, float)):
            continue
        scope, _, rest = key.partition(".")
        if scope in _SCOPES and rest:
            name = rest if rest.split(".")[0] != rule.metric else rest[len(rule.metric):].lstrip(".")
            refs.append(f"{scope}{' ' + name if name else ''} {value:.4g}")
        else:
            refs.append(f"{key} {value:.4g}")
    return text + (f" ({', '.join(refs)})" if refs else "")


def check_artifacts(catalog: Any, version_id: int, *, rehash: bool = True,
                    progress: Callable[[int, int, int, int], None] | None = None) -> RuleResult:
    """The "artifacts intact" rule for a version's blobs.

    `rehash=True` (a promotion): read every byte and compare with the recorded sha256 (a
    match is remembered per blob, see relman.catalog.blobcheck); `progress(files done, files,
    bytes done, bytes)` is called before each file and at the end. Blobs are immutable and
    content-addressed, so callers run this before taking the write lock.
    `rehash=False` (a preview, e.g. the release board's badges): no file is read; a missing
    or resized blob fails, one re-hashed earlier with the same size and mtime passes, and any
    other makes the rule "pending" (it passes here; the promotion hashes it)."""
    from relman.catalog import blobcheck

    arts = catalog.artifacts(version_id)
    total = sum(int(a["size"]) for a in arts)
    bad: list[str] = []
    unverified: list[dict[str, Any]] = []
    done = 0
    for i, a in enumerate(arts):
        if progress is not None:
            progress(i, len(arts), done, total)
        if rehash:
            state, detail = blobcheck.rehash_blob(catalog, a["sha256"], a["size"])
        else:
            state, detail = blobcheck.cached_state(catalog, a["sha256"], a["size"])
        if state in (blobcheck.MISSING, blobcheck.CHANGED):
            bad.append(f"{a['path']}: {detail}")
        elif state == blobcheck.UNVERIFIED:
            unverified.append(a)
        done += int(a["size"])
    if progress is not None:
        progress(len(arts), len(arts), done, total)
    inputs: dict[str, Any] = {"files": len(arts), "bytes": total}
    if bad:
        return RuleResult("artifacts intact", "fail", "; ".join(bad), inputs)
    if unverified:
        n = sum(int(a["size"]) for a in unverified)
        inputs["unverified_files"] = len(unverified)
        return RuleResult("artifacts intact", "pending",
                          f"{len(unverified)} of {len(arts)} file(s) ({n / 2**20:.1f} MiB) present; "
                          "their sha256 is checked when the promotion runs", inputs)
    how = "match their sha256" if rehash else "match their sha256 (verified earlier, unchanged since)"
    return RuleResult("artifacts intact", "pass", f"{len(arts)} file(s) {how}", inputs)


def evaluate_gates(catalog: Any, version: Any, to_phase: str, *, policy: Mapping[str, Any] | None = None,
                   revision: int | None = None, integrity: RuleResult | None = None,
                   rehash: bool = True) -> GateReport:
    """Evaluate every rule guarding `version`'s move to `to_phase` under its model's policy
    (`integrity`: a `check_artifacts` result computed beforehand, else computed here, reading
    every artifact only when `rehash`; a preview passes `rehash=False`)."""
    from relman.catalog.catalog import utcnow
    from relman.release.approvals import valid_approvals
    from relman.release.policy import PHASES, allowed_targets, get_policy

    if to_phase not in PHASES:
        raise ReleaseError(f"unknown phase '{to_phase}' (phases: {', '.join(PHASES)})")
    from relman.catalog.integrity import require_intact

    require_intact(catalog, f"evaluate the gates of {version.ref}")  # a forged metric never passes
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
    gate = _Gate(subjects, missing_scope)
    for text in rules:
        rule = parse_rule(text)
        gate.intervals = {}
        if isinstance(rule, MetricRule):
            results.append(_metric_rule(rule, text, gate))
        elif isinstance(rule, ApprovalsRule):
            approvals = valid_approvals(catalog, version.id, to_phase)
            signed_only = to_phase in policy.get("require_signed_approvals", [])
            unsigned = [a for a in approvals if not a["signed"]] if signed_only else []
            if signed_only:
                approvals = [a for a in approvals if a["signed"]]
            n = len(approvals)
            ok = _compare(float(n), rule.op, rule.count)
            need = "" if ok else f", need {rule.op} {rule.count:g}"
            kind = "signed, valid" if signed_only else "valid"
            ignored = ("; not counted (policy requires signed approvals): "
                       + ", ".join(f"{a['by']} ({a['signature_status']})" for a in unsigned)) if unsigned else ""
            results.append(RuleResult(text, "pass" if ok else "fail", f"{n} {kind} approval(s) for {to_phase}{need}"
                                      + ignored, {"approvals": n, "by": [a["by"] for a in approvals]}))
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
        results.append(integrity if integrity is not None else check_artifacts(catalog, version.id, rehash=rehash))
    allowed = to_phase in allowed_targets(policy, version.phase)
    return GateReport(model=version.model, version=version.version, from_phase=version.phase, to_phase=to_phase,
                      policy_revision=int(revision or 0), evaluated_at=utcnow(), rules=results, allowed=allowed,
                      production=prod.ref if prod else None, parent=parent.ref if parent else None)
