"""Tampering with the audit log: an edited, deleted or reordered event is found and named,
by `relman audit verify` (exit 1) and by the classified diagnosis."""

from __future__ import annotations

import sqlite3

import pytest

from relman.catalog import Metric


@pytest.fixture
def logged(catalog, tiny_bert):
    """A catalog with a real history of eight-odd events."""
    from relman.app import release
    from relman.app.models import import_model

    v = import_model(catalog, tiny_bert, "au")
    catalog.add_metrics(v.id, [Metric("quality", "accuracy", 0.8)])
    release.promote(catalog, v, "candidate", why="look")
    release.approve(catalog, v, "staging", by="alice")
    release.promote(catalog, v, "staging", why="canary")
    release.rollout(catalog, v, 5)
    release.rollout(catalog, v, 50)
    assert not catalog.verify_audit()
    return catalog


def tamper(catalog, sql: str, *params) -> None:
    """Edit the database behind relman's back, as an attacker with file access would."""
    con = sqlite3.connect(catalog.db_path)
    con.execute(sql, params)
    con.commit()
    con.close()


def kinds(findings) -> list[tuple[str, int | None]]:
    return [(f.kind, f.seq) for f in findings]


def test_clean_chain_verifies(logged, run_cli):
    r = run_cli("audit", "verify")
    assert r.exit_code == 0 and "verifies" in r.output
    from relman.release.audit import diagnose

    assert diagnose(logged) == []


def test_edited_event_is_named(logged, run_cli):
    from relman.release.audit import diagnose

    tamper(logged, "UPDATE events SET payload = replace(payload, '\"share\":50', '\"share\":100') WHERE seq = 7")
    assert ("edited", 7) in kinds(diagnose(logged))
    r = run_cli("audit", "verify")
    assert r.exit_code == 1 and "EDITED    event 7: content was edited (rollout by" in r.output


def test_edited_actor_is_named(logged, run_cli):
    from relman.release.audit import diagnose

    tamper(logged, "UPDATE events SET actor = 'mallory' WHERE kind = 'approve'")
    seq = logged.query("SELECT seq FROM events WHERE kind = 'approve'")[0]["seq"]
    assert kinds(diagnose(logged)) == [("edited", seq)]


def test_deleted_event_is_named(logged, run_cli):
    from relman.release.audit import diagnose

    tamper(logged, "DELETE FROM events WHERE seq = 4")
    assert kinds(diagnose(logged)) == [("deleted", 4)]
    r = run_cli("audit", "verify")
    assert r.exit_code == 1 and "DELETED   event 4: event 4 missing from the log (deleted)" in r.output


def test_deleted_last_event_is_found(logged, run_cli):
    from relman.release.audit import diagnose

    last = logged.query("SELECT MAX(seq) AS s FROM events")[0]["s"]
    tamper(logged, "DELETE FROM events WHERE seq = ?", last)
    f = diagnose(logged)
    assert [x.kind for x in f] == ["deleted"] and "deleted from the end" in f[0].message
    assert run_cli("audit", "verify").exit_code == 1


def test_deleted_and_renumbered_is_found(logged):
    """Deleting an event and closing the gap: every later event no longer fits its number."""
    from relman.release.audit import diagnose

    tamper(logged, "DELETE FROM events WHERE seq = 3")
    tamper(logged, "UPDATE events SET seq = seq + 1000 WHERE seq > 3")
    tamper(logged, "UPDATE events SET seq = seq - 1001 WHERE seq > 1000")
    f = diagnose(logged)
    assert f and f[0].seq == 3 and f[0].kind in ("reordered", "deleted")


def test_reordered_events_are_named(logged, run_cli):
    from relman.release.audit import diagnose

    # swap the seq values of events 5 and 6
    tamper(logged, "UPDATE events SET seq = -1 WHERE seq = 5")
    tamper(logged, "UPDATE events SET seq = 5 WHERE seq = 6")
    tamper(logged, "UPDATE events SET seq = 6 WHERE seq = -1")
    f = diagnose(logged)
    assert ("reordered", 5) in kinds(f) and ("reordered", 6) in kinds(f)
    assert "holds event 6" in str(f[0])
    r = run_cli("audit", "verify", "--json")
    assert r.exit_code == 1 and '"kind": "reordered"' in r.output
    assert logged.verify_audit()  # the core check agrees that the chain is broken


def test_rehashed_edit_is_still_caught(logged):
    """An attacker who edits an event and recomputes its own hash breaks the next link."""
    from relman.catalog.events import event_hash
    from relman.release.audit import diagnose

    r = logged.query("SELECT * FROM events WHERE seq = 4")[0]
    payload = r["payload"].replace("alice", "mallory")
    assert payload != r["payload"]
    h = event_hash(r["prev_hash"], 4, r["at"], r["actor"], r["kind"], r["model"], r["version"], payload)
    tamper(logged, "UPDATE events SET payload = ?, hash = ? WHERE seq = 4", payload, h)
    f = diagnose(logged)
    assert f and f[0].seq == 5


def test_swapped_blob_is_found_and_blocks_release(logged, run_cli):
    """A blob whose bytes were replaced: verify names it; gates and export refuse it."""
    import os

    from relman.app import release

    v = logged.resolve("au@latest")
    art = [a for a in logged.artifacts(v.id) if a["path"] == "config.json"][0]
    blob = logged.store.path(art["sha256"])
    os.chmod(blob, 0o644)
    blob.write_bytes(blob.read_bytes().replace(b"bert", b"BERT"))
    r = run_cli("verify")
    assert r.exit_code == 1 and "config.json" in r.output and "content changed" in r.output
    rep = release.gates(logged, v, "production")
    bad = [x for x in rep.rules if x.rule == "artifacts intact"][0]
    assert bad.status == "fail" and "config.json: content changed" in bad.reason
