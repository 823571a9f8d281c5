"""Gate rules (parsed, never eval'd), their evaluation over stored metrics, approvals and
their invalidation, and the versioned per-model policy."""

from __future__ import annotations

import json
import re

import pytest

from relman.catalog import Metric
from relman.errors import ReleaseError


@pytest.mark.parametrize("rule", [
    "accuracy >= production.accuracy - 0.01",
    "latency_p95_ms <= 1.10 * production",
    "size_mb <= 200",
    "fairness_gap <= 0.05",
    "robustness_drop < 0.1",
    "fidelity >= parent.fidelity * 0.99 + -(0.001)",
    "approvals >= 2",
    'evaluated_on == "sst2-dev"',
    "evaluated on dataset sst2-dev",
    "evaluated on 'my data'",
    "accuracy == 1e-3",
])
def test_rules_parse(rule):
    from relman.release.gates import parse_rule

    parse_rule(rule)


@pytest.mark.parametrize("rule, message", [
    ("__import__('os').system('true') == 0", "unexpected text"),
    ("accuracy >= 1; drop table", "unexpected text"),
    ("accuracy >= production.a.b", "unexpected text"),
    ("accuracy >= other.accuracy", "only production.<metric>, parent.<metric>"),
    ("approvals >= alice", "approvals compare with a number"),
    ("accuracy ** 2 >= 1", "expected one of"),
    ("accuracy >=", "expected a number or a metric at 'the end'"),
    ("accuracy", "incomplete"),
    ("accuracy >= (1 + 2", "expected ')'"),
    ("production.accuracy >= 1", "must start with a metric name"),
    ("accuracy >= approvals", "can only stand on the left"),
    ("", "empty gate rule"),
])
def test_bad_rules_are_refused_with_the_rule_named(rule, message):
    from relman.release.gates import parse_rule

    with pytest.raises(ReleaseError, match=re.escape(message)):
        parse_rule(rule)


@pytest.fixture
def family(catalog, tiny_bert):
    """base (in production) and a child of it, both with a few metrics."""
    from relman.app import release
    from relman.app.models import import_model

    base = import_model(catalog, tiny_bert, "g")
    release.set_policy(catalog, "g", {"approvals": {}, "gates": {"production": []}})
    for phase in ("candidate", "staging", "production"):
        release.promote(catalog, base, phase)
    catalog.add_metrics(base.id, [Metric("q", "accuracy", 0.90), Metric("lat", "latency_p95_ms", 10.0)])
    files = {a["path"]: catalog.store.path(a["sha256"]) for a in catalog.artifacts(base.id)}
    child = catalog.add_version("g", files, format="hf", task="text-classification", parents=[(base.id, None)])
    catalog.add_metrics(child.id, [Metric("q", "accuracy", 0.895), Metric("lat", "latency_p95_ms", 11.5)])
    return catalog, base, catalog.get_version(child.id)


def run_rules(catalog, version, rules, to="staging"):
    from relman.release.gates import evaluate_gates
    from relman.release.policy import validate

    policy = validate({"gates": {to: rules}, "approvals": {}, "verify_artifacts": []})
    rep = evaluate_gates(catalog, version, to, policy=policy, revision=7)
    return {r.rule: r for r in rep.rules}, rep


def test_relative_rules_against_production_and_parent(family):
    catalog, base, child = family
    res, rep = run_rules(catalog, child, [
        "accuracy >= production.accuracy - 0.01",   # 0.895 >= 0.89
        "latency_p95_ms <= 1.10 * production",      # 11.5 <= 11.0 -> fail
        "latency_p95_ms <= 1.2 * parent",           # 11.5 <= 12.0
        "size_mb <= 200",
        "size_mb < 0.001",
        "accuracy == 0.895",
        "accuracy >= production.accuracy / (1 - 1)",
    ])
    assert res["accuracy >= production.accuracy - 0.01"].status == "pass"
    assert res["accuracy >= production.accuracy - 0.01"].inputs == {
        "accuracy": 0.895, "production.accuracy": 0.90, "threshold": pytest.approx(0.89)}
    lat = res["latency_p95_ms <= 1.10 * production"]
    assert lat.status == "fail" and lat.reason == "latency_p95_ms 11.5 is not ≤ 11 (production 10)"
    assert res["accuracy >= production.accuracy - 0.01"].reason == "accuracy 0.895 ≥ 0.89 (production 0.9)"
    assert res["latency_p95_ms <= 1.2 * parent"].status == "pass"
    assert res["size_mb <= 200"].status == "pass" and res["size_mb < 0.001"].status == "fail"
    assert res["accuracy == 0.895"].status == "pass"
    assert res["accuracy >= production.accuracy / (1 - 1)"].reason == "division by zero"
    assert rep.production == base.ref and rep.parent == base.ref and rep.policy_revision == 7
    assert not rep.passed and len(rep.failing) == 3


def test_missing_metrics_fail_as_not_evaluated(family):
    catalog, base, child = family
    res, rep = run_rules(catalog, child, ["fairness_gap <= 0.05", "fidelity >= production.fidelity",
                                          "robustness_drop <= parent"])
    assert res["fairness_gap <= 0.05"].status == "fail"
    assert res["fairness_gap <= 0.05"].reason == (f"not evaluated: {child.ref} has no 'fairness_gap' — run: "
                                                  f"relman evaluate {child.ref} --suite fairness --dataset NAME")
    catalog.add_metrics(child.id, [Metric("r", "fidelity", 0.99), Metric("r", "robustness_drop", 0.1)])
    res, _ = run_rules(catalog, catalog.get_version(child.id), ["fidelity >= production.fidelity",
                                                                "robustness_drop <= parent"])
    assert res["fidelity >= production.fidelity"].status == "fail"
    assert res["fidelity >= production.fidelity"].reason.startswith(f"not evaluated: {base.ref} has no 'fidelity'")
    assert res["robustness_drop <= parent"].reason.startswith(f"not evaluated: {base.ref} has no 'robustness_drop'")


def test_a_none_value_counts_as_not_evaluated(family):
    catalog, _, child = family
    catalog.add_metrics(child.id, [Metric("q", "f1", None)])
    res, _ = run_rules(catalog, child, ["f1 >= 0"])
    assert res["f1 >= 0"].status == "fail" and "not evaluated" in res["f1 >= 0"].reason


def test_no_production_or_parent_is_skipped_and_says_so(catalog, tiny_bert):
    from relman.app.models import import_model

    v = import_model(catalog, tiny_bert, "solo")
    catalog.add_metrics(v.id, [Metric("q", "accuracy", 0.5)])
    res, rep = run_rules(catalog, v, ["accuracy >= production.accuracy - 0.01", "accuracy >= parent"])
    assert res["accuracy >= production.accuracy - 0.01"].status == "skipped"
    assert "solo has no production version" in res["accuracy >= production.accuracy - 0.01"].reason
    assert res["accuracy >= parent"].status == "skipped" and "has no parent" in res["accuracy >= parent"].reason
    assert not rep.failing
    assert not rep.allowed and not rep.passed  # draft -> staging is not a step of the default policy


def test_evaluated_on_dataset(family):
    catalog, _, child = family
    catalog.add_metrics(child.id, [Metric("q", "accuracy", 0.9, {"dataset": "dev-a"})])
    res, _ = run_rules(catalog, catalog.get_version(child.id),
                       ['evaluated_on == "dev-a"', "evaluated on dataset dev-b"])
    assert res['evaluated_on == "dev-a"'].status == "pass"
    bad = res["evaluated on dataset dev-b"]
    assert bad.status == "fail" and bad.reason == "not evaluated on dataset 'dev-b' (evaluated on: dev-a)"


def test_approvals_once_per_person_and_void_when_metrics_change(family, run_cli):
    from relman.app import release

    catalog, _, child = family
    release.approve(catalog, child, "staging", by="alice", comment="ok")
    release.approve(catalog, child, "staging", by="bob")
    with pytest.raises(ReleaseError, match="alice already approved g@.* for staging .*cannot approve twice"):
        release.approve(catalog, child, "staging", by="alice")
    res, _ = run_rules(catalog, child, ["approvals >= 2"])
    assert res["approvals >= 2"].status == "pass" and res["approvals >= 2"].inputs["by"] == ["alice", "bob"]
    # re-evaluation with a different result: both approvals stop counting
    catalog.add_metrics(child.id, [Metric("q", "accuracy", 0.80)])
    res, _ = run_rules(catalog, child, ["approvals >= 1"])
    assert res["approvals >= 1"].status == "fail" and res["approvals >= 1"].reason.startswith("0 valid approval")
    assert [a["valid"] for a in release.approvals(catalog, child)] == [False, False]
    renewed = release.approve(catalog, child, "staging", by="alice", comment="still ok")
    assert renewed["renewed"] is True
    res, _ = run_rules(catalog, child, ["approvals >= 1", "approvals >= 2"])
    assert res["approvals >= 1"].status == "pass" and res["approvals >= 2"].status == "fail"
    # approvals are per target phase
    res, _ = run_rules(catalog, child, ["approvals >= 1"], to="production")
    assert res["approvals >= 1"].status == "fail"
    with pytest.raises(ReleaseError, match="needs a name"):
        release.approve(catalog, child, "staging", by="  ")
    r = run_cli("approve", child.ref, "--to", "staging", "--by", "bob", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["renewed"] is True
    assert not catalog.verify_audit()


def test_policy_is_versioned_and_checked(catalog, tiny_bert, tmp_path, run_cli):
    from relman.app import release
    from relman.app.models import import_model

    import_model(catalog, tiny_bert, "p")
    shown = json.loads(run_cli("policy", "show", "p").output)
    assert shown["revision"] == 0 and shown["policy"]["gates"]["production"] == ["canary_share >= 100"]
    toml = tmp_path / "p.toml"
    toml.write_text('previous_production = "demote"\n[gates]\nstaging = ["accuracy >= 0.9"]\n')
    assert "revision 1" in run_cli("policy", "set", "p", str(toml)).output
    js = tmp_path / "p.json"
    js.write_text(json.dumps({"approvals": {"production": 2}}))
    assert "revision 2" in run_cli("policy", "set", "p", str(js)).output
    body, rev = release.get_policy(catalog, "p")
    assert rev == 2 and body["approvals"]["production"] == 2 and body["previous_production"] == "retire"
    edits = [e for e in catalog.events("p") if e["kind"] == "policy-edit"]
    assert [e["payload"]["revision"] for e in edits] == [1, 2]
    bad = [
        ({"gates": {"staging": ["accuracy >>= 1"]}}, "gates.staging: rule 'accuracy >>= 1'"),
        ({"gates": {"prod": []}}, "unknown phase 'prod'"),
        ({"transitions": {"draft": ["heaven"]}}, "transitions.draft must be a list of phases"),
        ({"approvals": {"staging": -1}}, "whole number"),
        ({"previous_production": "delete"}, "previous_production"),
        ({"gatez": {}}, "unknown policy key"),
    ]
    for body, message in bad:
        with pytest.raises(ReleaseError, match=message.replace("(", ".").replace(")", ".")):
            release.set_policy(catalog, "p", body)
    broken = tmp_path / "broken.toml"
    broken.write_text("[gates\n")
    r = run_cli("policy", "set", "p", str(broken))
    assert r.exit_code == 1 and "not valid TOML" in r.output
    assert release.get_policy(catalog, "p")[1] == 2  # nothing stored by the refused edits
    assert run_cli("policy", "show", "nope").exit_code == 1
