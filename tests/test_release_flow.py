"""The whole release path on real tiny models, through the real CLI and catalog:
import → evaluate → compress → evaluate → gates fail (rule named) → approve → gates pass →
staging → canary 5/25/100 → production → second version → rollback → history → audit."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from relman.catalog import Metric

POLICY_TOML = """
previous_production = "retire"
rollback_to = "retired"

[gates]
staging = [
  "accuracy >= parent.accuracy - 0.02",
  "latency_p95_ms <= 1.10 * parent",
  "size_mb <= 200",
  "evaluated on dataset sst-tiny",
]
production = ["accuracy >= production.accuracy - 0.01", "canary_share >= 100"]

[approvals]
staging = 1
production = 1
"""


def fp16_copy(src: Path, dest: Path) -> Path:
    """A real compression: the same model with its float32 weights stored as float16."""
    from safetensors.numpy import load_file, save_file

    dest.mkdir(parents=True)
    for f in src.iterdir():
        if f.name == "model.safetensors":
            tensors = {k: (v.astype(np.float16) if v.dtype == np.float32 else v) for k, v in load_file(f).items()}
            save_file(tensors, dest / f.name, metadata={"format": "pt"})
        elif f.is_file():
            (dest / f.name).write_bytes(f.read_bytes())
    return dest


def add_dataset(catalog, tmp_path: Path, name: str = "sst-tiny") -> int:
    csv = tmp_path / f"{name}.csv"
    csv.write_text("text,label\ngood movie,positive\nawful plot,negative\n")
    row = catalog.add_dataset(name, {"data.csv": csv}, format="csv", kind="text",
                              columns={"text": "text", "label": "label"}, labels=["negative", "positive"], n_rows=2)
    return int(row["id"])


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def test_full_release_flow(catalog, catalog_path, tiny_bert, tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("RELMAN_USER", "carol")
    ds = add_dataset(catalog, tmp_path)
    # import
    out = ok(run_cli("import", str(tiny_bert), "--model", "sent", "--json"))
    base = catalog.resolve("sent@" + json.loads(out)["version"])
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY_TOML)
    assert "revision 1" in ok(run_cli("policy", "set", "sent", str(policy)))
    # evaluate the base (what an evaluation job stores)
    catalog.add_metrics(base.id, [Metric("quality", "accuracy", 0.90, {"device": "cpu"}, ds),
                                  Metric("latency", "latency_p95_ms", 10.0, {"device": "cpu", "batch": 1})])
    # compress: a real fp16 copy, stored as the child version
    folder = fp16_copy(tiny_bert, tmp_path / "fp16")
    from relman.modelio.inspect import inspect_model

    desc = inspect_model(folder)
    child = catalog.add_version("sent", desc.files, format=desc.format, task=desc.task, params=desc.params,
                                dtype=desc.dtype, recipe={"name": "fp16", "params": {}}, parents=[(base.id, None)],
                                relation="compress", event_kind="job-result")
    assert child.size_bytes < base.size_bytes and child.dtype == "float16"
    ref = child.ref
    # evaluate the child: accuracy only, so far
    catalog.add_metrics(child.id, [Metric("quality", "accuracy", 0.895, {"device": "cpu"}, ds)])
    channels_dir = tmp_path / "serving"
    channels_dir.mkdir()
    ok(run_cli("channels", "set-dir", str(channels_dir)))
    ok(run_cli("promote", ref, "--to", "candidate", "--why", "first look"))
    # gates fail, naming the rules
    r = run_cli("gates", ref, "--to", "staging")
    assert r.exit_code == 1
    assert "FAIL  latency_p95_ms <= 1.10 * parent" in r.output and "not evaluated" in r.output
    assert "FAIL  approvals >= 1" in r.output
    assert "ok    accuracy >= parent.accuracy - 0.02" in r.output
    r = run_cli("promote", ref, "--to", "staging", "--why", "try")
    assert r.exit_code == 1 and "latency_p95_ms <= 1.10 * parent" in r.output and "not evaluated" in r.output
    assert catalog.resolve(ref).phase == "candidate"
    # evaluate latency, approve: the gates pass
    catalog.add_metrics(child.id, [Metric("latency", "latency_p95_ms", 9.0, {"device": "cpu", "batch": 1})])
    ok(run_cli("approve", ref, "--to", "staging", "--by", "alice", "--comment", "looks fine"))
    r = run_cli("approve", ref, "--to", "staging", "--by", "alice")
    assert r.exit_code == 1 and "cannot approve twice" in r.output
    rep = json.loads(ok(run_cli("gates", ref, "--to", "staging", "--json")))
    assert rep["passed"] is True
    assert {x["rule"]: x["status"] for x in rep["rules"]}["evaluated on dataset sst-tiny"] == "pass"
    ok(run_cli("promote", ref, "--to", "staging", "--why", "canary"))
    # canary 5 / 25 / 100, each visible in the channels manifest
    for share in (5, 25, 100):
        ok(run_cli("rollout", ref, "--share", str(share)))
        manifest = json.loads((channels_dir / "channels.json").read_text())
        assert manifest["models"]["sent"]["canary"]["version"] == child.version
        assert manifest["models"]["sent"]["canary"]["share"] == share
        assert manifest["models"]["sent"]["production"] is None
    assert run_cli("rollout", ref, "--share", "0").exit_code == 1
    assert run_cli("rollout", ref, "--share", "101").exit_code == 1
    # production needs its own approval
    r = run_cli("promote", ref, "--to", "production", "--why", "ship")
    assert r.exit_code == 1 and "approvals >= 1" in r.output
    ok(run_cli("approve", ref, "--to", "production", "--by", "bob"))
    ok(run_cli("promote", ref, "--to", "production", "--why", "ship"))
    first_prod = catalog.resolve(ref)
    assert first_prod.phase == "production" and first_prod.canary_share is None
    manifest = json.loads((channels_dir / "channels.json").read_text())
    prod_entry = manifest["models"]["sent"]["production"]
    assert prod_entry["version"] == child.version and manifest["models"]["sent"]["canary"] is None
    for a in prod_entry["artifacts"]:
        import hashlib

        assert hashlib.sha256(Path(a["blob"]).read_bytes()).hexdigest() == a["sha256"]
    t1 = now()
    # a second version: re-trained child of the base, better accuracy
    from relman.modelio import tiny

    v2_folder = tiny.tiny_bert_classifier(tmp_path / "v2", seed=3)
    desc2 = inspect_model(v2_folder)
    second = catalog.add_version("sent", desc2.files, format=desc2.format, task=desc2.task, params=desc2.params,
                                 recipe={"name": "finetune"}, parents=[(base.id, None)], relation="finetune")
    catalog.add_metrics(second.id, [Metric("quality", "accuracy", 0.92, {}, ds),
                                    Metric("latency", "latency_p95_ms", 10.5, {})])
    ref2 = second.ref
    ok(run_cli("promote", ref2, "--to", "candidate"))
    ok(run_cli("approve", ref2, "--to", "staging", "--by", "alice"))
    ok(run_cli("promote", ref2, "--to", "staging", "--why", "v2 canary"))
    ok(run_cli("rollout", ref2, "--share", "100"))
    ok(run_cli("approve", ref2, "--to", "production", "--by", "bob"))
    rep = json.loads(ok(run_cli("gates", ref2, "--to", "production", "--json")))
    rel = {x["rule"]: x for x in rep["rules"]}["accuracy >= production.accuracy - 0.01"]
    assert rel["status"] == "pass" and rel["inputs"]["production.accuracy"] == pytest.approx(0.895)
    out = ok(run_cli("promote", ref2, "--to", "production", "--why", "better"))
    assert f"sent@{child.version}: production → retired" in out
    assert catalog.resolve(ref).phase == "retired"
    t2 = now()
    # rollback: the first production version comes back
    out = ok(run_cli("rollback", "sent", "--why", "v2 misbehaves"))
    assert catalog.resolve(ref).phase == "production" and catalog.resolve(ref2).phase == "retired"
    assert json.loads((channels_dir / "channels.json").read_text())["models"]["sent"]["production"]["version"] \
        == child.version
    # history shows both, and answers "what was in production at D"
    hist = json.loads(ok(run_cli("history", "sent", "--json")))
    assert {h["version"] for h in hist} == {child.version, second.version}
    assert [h["share"] for h in hist if h["kind"] == "rollout"] == [5, 25, 100, 100]
    assert any(h["kind"] == "rollback" for h in hist)
    assert json.loads(ok(run_cli("history", "sent", "--at", t1, "--json")))["production"] == child.version
    assert json.loads(ok(run_cli("history", "sent", "--at", t2, "--json")))["production"] == second.version
    assert json.loads(ok(run_cli("history", "sent", "--at", "2000-01-01", "--json")))["production"] is None
    assert "production = " + child.version in ok(run_cli("history", "sent", "--at", now()))
    text = ok(run_cli("history", "sent"))
    assert "canary 25 %" in text and "rollback" in text
    # the audit chain verifies and holds every step
    assert "verifies" in ok(run_cli("audit", "verify"))
    kinds = [e["kind"] for e in catalog.events("sent")]
    for k in ("import", "policy-edit", "metrics", "job-result", "approve", "promote", "rollout", "retire", "rollback"):
        assert k in kinds, k
    # the model card carries lineage, metrics with datasets, gate report and approvals
    card = ok(run_cli("card", ref, "--set", "intended_use=Sentiment of short reviews", "--set",
                      "limitations=Toy model"))
    assert "updated" in card
    text = ok(run_cli("card", ref))
    import yaml

    front = yaml.safe_load(text.split("---")[1])
    assert front["library_name"] == "transformers" and front["pipeline_tag"] == "text-classification"
    result = front["model-index"][0]["results"][0]
    assert result["dataset"]["name"] == "sst-tiny"
    assert {m["type"]: m["value"] for m in result["metrics"]}["accuracy"] == pytest.approx(0.895)
    assert "Sentiment of short reviews" in text and "Toy model" in text
    assert f"sent@{base.version} (compress), made by import" in text
    assert "approvals >= 1" in text and "| staging | alice |" in text


def test_override_is_recorded_and_needs_why(catalog, tiny_bert, run_cli):
    from relman.app.models import import_model

    v = import_model(catalog, tiny_bert, "ov")
    ok(run_cli("promote", v.ref, "--to", "candidate"))
    r = run_cli("promote", v.ref, "--to", "staging", "--override")
    assert r.exit_code == 1 and "--override needs --why" in r.output
    r = run_cli("promote", v.ref, "--to", "production", "--override", "--why", "hotfix")
    assert r.exit_code == 1 and "does not allow candidate → production" in r.output
    out = ok(run_cli("promote", v.ref, "--to", "staging", "--override", "--why", "demo tomorrow"))
    assert "OVERRIDE" in out
    t = catalog.query("SELECT override, why, gate_report FROM transitions WHERE to_phase = 'staging'")[0]
    assert t["override"] == 1 and t["why"] == "demo tomorrow"
    assert json.loads(t["gate_report"])["passed"] is False
    ev = [e for e in catalog.events("ov") if e["kind"] == "override"]
    assert ev and ev[0]["payload"]["failing"] == ["approvals >= 1"] and ev[0]["payload"]["why"] == "demo tomorrow"
    assert not catalog.verify_audit()


def test_reject_rollback_refusals_and_demote_policy(catalog, tiny_bert, tmp_path, run_cli):
    from relman.app import release
    from relman.app.models import import_model
    from relman.errors import ReleaseError

    a = import_model(catalog, tiny_bert, "rj")
    b = import_model(catalog, tiny_bert, "rj")
    with pytest.raises(ReleaseError, match="has no version in production"):
        release.rollback(catalog, "rj")
    release.set_policy(catalog, "rj", {"previous_production": "demote", "rollback_to": "rejected",
                                       "approvals": {}, "gates": {"production": []}})
    for v in (a, b):
        release.promote(catalog, v, "candidate")
        release.promote(catalog, v, "staging")
        release.promote(catalog, v, "production")
        if v is a:
            with pytest.raises(ReleaseError, match="first production version"):
                release.rollback(catalog, "rj")
    assert catalog.get_version(a.id).phase == "candidate"  # demoted, not retired
    res = release.rollback(catalog, "rj", why="bad")
    assert res["restored"] == a.version and res["removed_to"] == "rejected"
    assert catalog.get_version(b.id).phase == "rejected"
    with pytest.raises(ReleaseError, match="does not allow rejecting .* from production"):
        release.reject(catalog, a)
    with pytest.raises(ReleaseError, match="only the staging version"):
        release.rollout(catalog, a, 5)
    c = import_model(catalog, tiny_bert, "rj")
    r = run_cli("reject", c.ref, "--why", "duplicate")
    assert r.exit_code == 0 and catalog.get_version(c.id).phase == "rejected"
    assert run_cli("promote", c.ref, "--to", "candidate").exit_code == 1
    assert not catalog.verify_audit()


def test_one_canary_per_model(catalog, tiny_bert):
    from relman.app import release
    from relman.app.models import import_model
    from relman.errors import ReleaseError

    release.set_policy(catalog, import_model(catalog, tiny_bert, "cn").model, {"approvals": {}})
    a, b = catalog.versions("cn")[0], import_model(catalog, tiny_bert, "cn")
    for v in (a, b):
        release.promote(catalog, v, "candidate")
    release.promote(catalog, a, "staging")
    with pytest.raises(ReleaseError, match="already in staging"):
        release.promote(catalog, b, "staging")


def test_release_flow_through_the_real_evaluate_and_compress_jobs(catalog, tiny_bert, run_cli):
    """The same path with the numbers produced by the real job functions (the ones workers run)."""
    from relman.app import release
    from relman.app.datasets import register_demo_sentiment
    from relman.app.models import import_model
    from relman.compress import job as compress_job
    from relman.evaluate.job import run as evaluate_run
    from relman.jobs.context import JobContext

    def run_job(fn, params):
        ctx = JobContext(catalog, device="cpu")
        try:
            return fn(params, ctx)
        finally:
            ctx.cleanup()

    register_demo_sentiment(catalog, n=32)
    base = import_model(catalog, tiny_bert, "jobs")
    run_job(evaluate_run, {"version_id": base.id, "dataset": "sentiment", "suites": ["quality", "size"],
                           "threads": 1})
    res = run_job(compress_job.run, {"recipe": "half", "params": {"dtype": "float16"},
                                     "parent_version_ids": [base.id], "dataset": None, "evaluate": False})
    child = catalog.get_version(res["version_id"])
    release.set_policy(catalog, "jobs", {"gates": {"staging": [
        "accuracy >= parent.accuracy - 0.05", "agreement >= 0.9", "size_mb <= 0.75 * parent",
        "evaluated on dataset sentiment"]}})
    release.promote(catalog, child, "candidate")
    r = run_cli("gates", child.ref, "--to", "staging")
    assert r.exit_code == 1
    assert "FAIL  accuracy >= parent.accuracy - 0.05" in r.output and "has no 'accuracy'" in r.output
    assert "FAIL  evaluated on dataset sentiment" in r.output
    run_job(evaluate_run, {"version_id": child.id, "dataset": "sentiment", "suites": ["quality", "fidelity", "size"],
                           "threads": 1})
    rep = release.gates(catalog, child, "staging")
    assert [r.rule for r in rep.failing] == ["approvals >= 1"]
    release.approve(catalog, child, "staging", by="alice")
    release.promote(catalog, child, "staging", why="half precision canary")
    for share in (5, 25, 100):
        release.rollout(catalog, child, share)
    release.approve(catalog, child, "production", by="bob")
    release.promote(catalog, child, "production", why="ship")
    assert catalog.get_version(child.id).phase == "production"
    assert json.loads(run_cli("history", "jobs", "--at", now(), "--json").output)["production"] == child.version
    assert run_cli("audit", "verify").exit_code == 0
