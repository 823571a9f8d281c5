"""Tamper evidence: each direct SQLite edit of the hostile-input campaign makes `relman verify`
fail and name what changed, and a gate never passes on a forged metric.

The edits are made the way an attacker would: through a separate `sqlite3` connection, not
through relman (whose connections note their own writes and commit them into audit events).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from relman.catalog import Metric
from relman.catalog.events import GENESIS, canonical, event_hash
from relman.errors import IntegrityError, RelmanError


def _file(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


@pytest.fixture
def world(catalog, tmp_path):
    """A catalog holding one of every tracked kind of row: models, versions (one in candidate),
    artifacts, lineage, a dataset and its file, metrics, an approval, transitions, a policy, jobs."""
    from relman.jobs import queue
    from relman.release import approvals, policy, workflow

    csv = _file(tmp_path, "d.csv", b"text,label\ngood,1\nbad,0\n")
    ds = catalog.add_dataset("sst-tiny", {"data.csv": csv}, format="csv", kind="text",
                             columns={"text": "text", "label": "label"}, labels=["0", "1"], n_rows=2)
    v1 = catalog.add_version("tiny", {"w.bin": _file(tmp_path, "a.bin", b"a" * 64)}, format="raw",
                             metrics=[Metric("quality", "accuracy", 0.5, {"device": "cpu"}, ds["id"])])
    v2 = catalog.add_version("tiny", {"w.bin": _file(tmp_path, "b.bin", b"b" * 32)}, format="raw",
                             parents=[(v1.id, None)], relation="half")
    catalog.add_metrics(v2.id, [Metric("quality", "accuracy", 0.6, {"device": "cpu"}, ds["id"])])
    policy.set_policy(catalog, "tiny", {"gates": {"staging": ["accuracy >= 0.9"]}}, actor="tester")
    workflow.promote(catalog, v2.id, "candidate", who="tester")
    approvals.approve(catalog, v2.id, "staging", "Ada Lovelace", "fine")
    job = queue.enqueue(catalog, "noop", {})
    queue.finish(catalog, job, queue.FAILED, error="boom", from_status=queue.QUEUED)
    return {"v1": v1, "v2": v2, "dataset": ds, "job": job}


def _attacker(catalog) -> sqlite3.Connection:
    return sqlite3.connect(catalog.db_path, isolation_level=None)


def _rehash_chain(conn: sqlite3.Connection) -> None:
    """What a careful forger does after editing: recompute every event hash and the head."""
    prev = GENESIS
    rows = conn.execute("SELECT seq, at, actor, kind, model, version, payload FROM events ORDER BY seq").fetchall()
    for seq, at, actor, kind, model, version, payload in rows:
        h = event_hash(prev, seq, at, actor, kind, model, version, payload)
        conn.execute("UPDATE events SET prev_hash = ?, hash = ? WHERE seq = ?", [prev, h, seq])
        prev = h
    conn.execute("UPDATE settings SET value = ? WHERE key = 'audit_head'",
                 [canonical({"seq": rows[-1][0], "hash": prev})])


def _forge_committed_metric(conn: sqlite3.Connection, metric_id: int, value: float) -> None:
    """Edit the metric and the record in the event that committed it, then re-hash everything."""
    from relman.catalog import integrity

    conn.execute("UPDATE metrics SET value = ? WHERE id = ?", [value, metric_id])
    cur = conn.execute("SELECT * FROM metrics WHERE id = ?", [metric_id])
    row = dict(zip([d[0] for d in cur.description], cur.fetchone()))
    key = canonical([metric_id])
    for seq, payload in conn.execute("SELECT seq, payload FROM events ORDER BY seq").fetchall():
        p = json.loads(payload)
        if key in (p.get("committed") or {}).get("metrics", {}):
            p["committed"]["metrics"][key] = integrity.record("metrics", row)
            conn.execute("UPDATE events SET payload = ? WHERE seq = ?", [canonical(p), seq])
    _rehash_chain(conn)


def _metric_id(conn, version_id: int) -> int:
    return conn.execute("SELECT id FROM metrics WHERE version_id = ? ORDER BY id LIMIT 1", [version_id]).fetchone()[0]


# (id, edit(conn, world), what the verify output must name)
EDITS = [
    ("metric-value-edited", lambda c, w: c.execute("UPDATE metrics SET value = 0.99 WHERE id = ?",
                                                   [_metric_id(c, w["v2"].id)]), "column value"),
    ("metric-inserted", lambda c, w: c.execute(
        "INSERT INTO metrics (version_id, suite, name, value, context, created_at) VALUES (?, 'quality', 'accuracy',"
        " 0.97, '{}', '2030-01-01')", [w["v2"].id]), "not committed by any audit event"),
    ("metric-deleted", lambda c, w: c.execute("DELETE FROM metrics WHERE id = ?", [_metric_id(c, w["v1"].id)]),
     "metrics row"),
    ("metric-context-edited", lambda c, w: c.execute("UPDATE metrics SET context = '{\"device\":\"cuda\"}'"
                                                     " WHERE id = ?", [_metric_id(c, w["v2"].id)]), "context"),
    ("metric-dataset-edited", lambda c, w: c.execute("UPDATE metrics SET dataset_id = NULL WHERE id = ?",
                                                     [_metric_id(c, w["v2"].id)]), "dataset_id"),
    ("phase-set", lambda c, w: c.execute("UPDATE versions SET phase = 'production' WHERE id = ?", [w["v2"].id]),
     "column phase"),
    ("canary-share-set", lambda c, w: c.execute("UPDATE versions SET canary_share = 100 WHERE id = ?",
                                                [w["v2"].id]), "canary_share"),
    ("transition-deleted", lambda c, w: c.execute("DELETE FROM transitions"), "transitions row"),
    ("transition-forged", lambda c, w: c.execute(
        "INSERT INTO transitions (version_id, from_phase, to_phase, who, at) VALUES (?, 'candidate', 'staging',"
        " 'mallory', '2030-01-01')", [w["v2"].id]), "transitions row"),
    ("approval-forged", lambda c, w: c.execute(
        "INSERT INTO approvals (version_id, to_phase, by, metrics_digest, at) SELECT version_id, 'production',"
        " 'Grace', metrics_digest, at FROM approvals LIMIT 1"), "approvals row"),
    ("approval-renamed", lambda c, w: c.execute("UPDATE approvals SET by = 'Grace Hopper'"), "column by"),
    ("approval-digest-edited", lambda c, w: c.execute("UPDATE approvals SET metrics_digest = 'x'"),
     "metrics_digest"),
    ("permissive-policy-inserted", lambda c, w: c.execute(
        "INSERT INTO policies (model_id, revision, body, created_at, created_by) SELECT model_id, revision + 1,"
        " '{\"gates\": {}}', created_at, 'mallory' FROM policies"), "policies row"),
    ("policy-body-edited", lambda c, w: c.execute("UPDATE policies SET body = '{}'"), "column body"),
    ("size-edited", lambda c, w: c.execute("UPDATE versions SET size_bytes = 1 WHERE id = ?", [w["v1"].id]),
     "size_bytes"),
    ("manifest-edited", lambda c, w: c.execute("UPDATE versions SET manifest_sha256 = 'f00d' WHERE id = ?",
                                               [w["v1"].id]), "manifest_sha256"),
    ("dataset-row-edited", lambda c, w: c.execute("UPDATE datasets SET n_rows = 5000"), "n_rows"),
    ("dataset-file-deleted", lambda c, w: c.execute("DELETE FROM dataset_files"), "dataset_files row"),
    ("job-marked-succeeded", lambda c, w: c.execute("UPDATE jobs SET status = 'succeeded', error = NULL"
                                                    " WHERE id = ?", [w["job"]]), "jobs row"),
    ("artifact-row-deleted", lambda c, w: c.execute("DELETE FROM artifacts WHERE version_id = ?", [w["v2"].id]),
     "artifacts row"),
    ("lineage-deleted", lambda c, w: c.execute("DELETE FROM lineage"), "lineage row"),
    ("chain-truncated", lambda c, w: (c.execute("DELETE FROM events WHERE seq = (SELECT MAX(seq) FROM events)"),
                                      c.execute("UPDATE settings SET value = (SELECT json_object('seq', seq, 'hash',"
                                                " hash) FROM events ORDER BY seq DESC LIMIT 1)"
                                                " WHERE key = 'audit_head'")), "truncated"),
    ("chain-recomputed", lambda c, w: _forge_committed_metric(c, _metric_id(c, w["v2"].id), 0.99), "rewritten"),
    ("chain-deleted-whole", lambda c, w: (c.execute("DELETE FROM events"), c.execute("DELETE FROM checkpoints"),
                                          c.execute("DELETE FROM settings WHERE key = 'audit_head'")), "truncated"),
]


def test_clean_catalog_verifies(world, run_cli):
    r = run_cli("verify")
    assert r.exit_code == 0, r.output
    assert "every tracked row matches" in r.output
    r = run_cli("audit", "verify")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("name,edit,named", EDITS, ids=[e[0] for e in EDITS])
def test_direct_sqlite_edit_is_detected_and_named(world, catalog, run_cli, name, edit, named):
    conn = _attacker(catalog)
    edit(conn, world)
    conn.close()
    r = run_cli("verify")
    assert r.exit_code == 1, r.output
    assert named in r.output, r.output
    r = run_cli("audit", "verify")
    assert r.exit_code == 1, r.output


def test_gate_does_not_pass_on_a_forged_metric(world, catalog):
    from relman.release import workflow
    from relman.release.gates import evaluate_gates

    v2 = world["v2"]
    with pytest.raises(workflow.GateFailed):  # honest state: 0.6 < 0.9
        workflow.promote(catalog, v2.id, "staging", who="tester")
    conn = _attacker(catalog)
    conn.execute("UPDATE metrics SET value = 0.95 WHERE version_id = ?", [v2.id])
    conn.close()
    with pytest.raises(IntegrityError, match=r"refusing to .*metrics row .*changed outside relman"):
        workflow.promote(catalog, v2.id, "staging", who="tester")
    with pytest.raises(IntegrityError):
        evaluate_gates(catalog, catalog.get_version(v2.id), "staging")
    assert catalog.get_version(v2.id).phase == "candidate"


def test_recomputed_chain_cannot_pass_a_gate(world, catalog):
    from relman.release import workflow

    conn = _attacker(catalog)
    _forge_committed_metric(conn, _metric_id(conn, world["v2"].id), 0.99)
    conn.close()
    with pytest.raises(IntegrityError, match="rewritten"):
        workflow.promote(catalog, world["v2"].id, "staging", who="tester")


def test_bundle_export_refuses_a_forged_catalog(world, catalog, tmp_path, monkeypatch):
    from relman.release import bundle, keys

    keys.create_key("exporter")
    conn = _attacker(catalog)
    conn.execute("UPDATE metrics SET value = 0.99")
    conn.close()
    with pytest.raises(IntegrityError, match="refusing to export"):
        bundle.export_bundle(catalog, world["v2"].id, tmp_path / "b.relman", key_name="exporter")
    assert not (tmp_path / "b.relman").exists()


def test_relman_writes_stay_verified_and_checkpoint_files_follow(world, catalog):
    from relman.catalog import anchor, integrity

    assert integrity.check_state(catalog)[0] == []
    latest = json.loads((catalog.root / "checkpoints" / "latest.json").read_text())
    head = catalog.conn.execute("SELECT MAX(seq) FROM events").fetchone()[0]
    assert latest["body"]["seq"] == head
    assert anchor.check_doc(latest)[0] == "ok"
    # a release transition keeps its own numbered checkpoint file
    assert len(list((catalog.root / "checkpoints").glob("0*.json"))) >= 1


def test_forged_checkpoint_file_is_reported(world, catalog):
    from relman.catalog import integrity

    path = catalog.root / "checkpoints" / "latest.json"
    doc = json.loads(path.read_text())
    doc["body"]["seq"] += 5
    path.write_text(json.dumps(doc))
    problems, _ = integrity.check_state(catalog)
    assert any("forged or edited checkpoint" in p for p in problems), problems


def test_a_catalog_from_before_tracking_is_baselined_and_anchored_on_first_open(tmp_path, run_cli, monkeypatch):
    """A catalog written by an older relman (no row records, no checkpoints): the first open
    commits its rows once (`integrity-baseline`) and signs the head; edits after that show."""
    import sqlite_utils

    from relman.catalog import open_catalog
    from relman.catalog.migrations import migrate

    root = tmp_path / "old"
    root.mkdir()
    db = sqlite_utils.Database(root / "catalog.db")
    migrate(db, stop_before="m007_checkpoints")
    db.execute("INSERT INTO models (name, created_at, created_by) VALUES ('old', 'then', 'someone')")
    db.execute("INSERT INTO versions (model_id, version, format, manifest_sha256, created_at, created_by)"
               " VALUES (1, '1.0.0', 'raw', 'abc', 'then', 'someone')")
    db.execute("INSERT INTO metrics (version_id, suite, name, value, created_at) VALUES (1, 'q', 'accuracy', 0.5,"
               " 'then')")
    db.conn.commit()
    db.close()
    cat = open_catalog(root)
    try:
        from relman.catalog import integrity

        assert integrity.check_state(cat)[0] == []
        kinds = [e["kind"] for e in cat.events()]
        assert kinds == ["integrity-baseline"]
        assert (root / "checkpoints" / "latest.json").exists()
        conn = sqlite3.connect(root / "catalog.db", isolation_level=None)
        conn.execute("UPDATE metrics SET value = 0.9")
        conn.close()
        assert any("metrics row [1]" in p and "value" in p for p in integrity.check_state(cat)[0])
    finally:
        cat.close()



def test_bundle_of_rows_committed_by_a_generic_event_imports(catalog, tmp_path, monkeypatch):
    """Rows relman wrote without their own event are committed by a `state` event (no model);
    a bundle carries that event too, and the importing side accepts the rows."""
    from relman.catalog import open_catalog
    from relman.release import bundle, keys

    v = catalog.add_version("tiny", {"w.dat": _file(tmp_path, "w.dat", b"w" * 16)}, format="raw")
    catalog.conn.execute("INSERT INTO metrics (version_id, suite, name, value, created_at) VALUES (?, 'q', 'acc',"
                         " 0.7, '2026-01-01')", [v.id])  # relman's own connection, outside any event
    with catalog.transaction():
        pass
    assert catalog.events()[-1]["kind"] == "state"
    from relman.catalog import integrity

    assert integrity.check_state(catalog)[0] == []
    keys.create_key("lab")
    out = bundle.export_bundle(catalog, v.id, tmp_path / "b.relman", key_name="lab")["path"]
    target = open_catalog(tmp_path / "target")
    try:
        assert bundle.import_bundle(target, out)["metrics"] == 1
    finally:
        target.close()


@pytest.mark.parametrize("edit", ["metric-value-edited", "chain-truncated", "chain-recomputed"])
def test_accept_records_the_findings_and_unblocks(world, catalog, run_cli, edit):
    """A person who has checked the findings accepts the state: verify passes again, the
    findings and the reason stay in the log, and a later edit is caught again."""
    conn = _attacker(catalog)
    dict((e[0], e[1]) for e in EDITS)[edit](conn, world)
    conn.close()
    assert run_cli("verify").exit_code == 1
    r = run_cli("audit", "accept", "--why", "checked against the lab notebook", "--by", "Ada")
    assert r.exit_code == 0, r.output
    r = run_cli("verify")
    assert r.exit_code == 0, r.output
    accept = [e for e in catalog.events() if e["kind"] == "integrity-accept"][-1]
    assert accept["payload"]["problems"] and accept["payload"]["why"] == "checked against the lab notebook"
    conn = _attacker(catalog)
    conn.execute("UPDATE metrics SET value = 0.123")
    conn.close()
    assert run_cli("verify").exit_code == 1


def test_accept_needs_a_reason_and_a_key(world, catalog, run_cli, tmp_path, monkeypatch):
    assert run_cli("audit", "accept", "--why", " ").exit_code != 0
    monkeypatch.setenv("RELMAN_KEYS_DIR", str(tmp_path / "elsewhere"))  # this machine lacks the catalog's key
    from relman.catalog.integrity import accept_state

    catalog._signer_cache = False
    with pytest.raises(RelmanError, match="no signing key for this catalog here"):
        accept_state(catalog, who="mallory", why="trust me")


def test_approve_reject_rollout_refuse_a_forged_catalog(world, catalog):
    from relman.release import approvals, workflow

    conn = _attacker(catalog)
    conn.execute("UPDATE metrics SET value = 0.99")
    conn.close()
    before = len(catalog.events())
    with pytest.raises(IntegrityError, match="refusing to approve"):
        approvals.approve(catalog, world["v2"].id, "staging", "Grace")
    with pytest.raises(IntegrityError, match="refusing to reject"):
        workflow.reject(catalog, world["v2"].id, who="tester")
    assert len(catalog.events()) == before
