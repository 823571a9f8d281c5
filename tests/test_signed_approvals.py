"""Signed approvals: made with a person's key from `relman keys`, required by policy for a
phase, verified at promotion (gates) and carried and verified in bundles."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest



def _version(catalog, tmp_path: Path, name: str = "tiny"):
    from safetensors.numpy import save_file

    p = tmp_path / f"{name}.safetensors"
    save_file({"w": np.ones((2, 2), dtype=np.float32)}, str(p))
    return catalog.add_version(name, {"w.safetensors": p}, format="safetensors")


@pytest.fixture
def keydir(tmp_path, monkeypatch):
    monkeypatch.setenv("RELMAN_KEYS_DIR", str(tmp_path / "keys"))
    return tmp_path / "keys"


def test_policy_requires_signed_approvals(catalog, tmp_path, keydir, run_cli):
    from relman.release import keys, policy, workflow

    v = _version(catalog, tmp_path)
    workflow.promote(catalog, v.id, "candidate", who="tester")
    policy.set_policy(catalog, "tiny", {"require_signed_approvals": ["staging"], "verify_artifacts": []},
                      actor="tester")
    r = run_cli("approve", "tiny@1.0.0", "--to", "staging", "--by", "bob")
    assert r.exit_code == 0, r.output
    with pytest.raises(workflow.GateFailed, match=r"0 signed, valid approval\(s\).*bob \(unsigned\)"):
        workflow.promote(catalog, v.id, "staging", who="tester")
    keys.create_key("alice")
    r = run_cli("approve", "tiny@1.0.0", "--to", "staging", "--by", "Alice", "--key", "alice")
    assert r.exit_code == 0, r.output
    res = workflow.promote(catalog, v.id, "staging", who="tester")
    assert res["to"] == "staging"
    from relman.release.approvals import approvals

    a = [x for x in approvals(catalog, v.id) if x["by"] == "Alice"][0]
    assert a["signed"] and a["signature_status"] == "ok"


def test_a_key_not_trusted_here_does_not_count(catalog, tmp_path, keydir):
    from relman.release import approvals, keys

    v = _version(catalog, tmp_path)
    pub = keys.create_key("carol")
    approvals.approve(catalog, v.id, "staging", "Carol", key="carol")
    (keydir / "trusted" / f"{pub.id}.pub").unlink()
    a = approvals.approvals(catalog, v.id)[0]
    assert not a["signed"] and a["signature_status"] == "untrusted"


def test_forged_signature_is_caught(catalog, tmp_path, keydir):
    """Someone copies a signed approval onto another version with sqlite3: the row check
    names it, and even re-committed its signature does not fit the other version."""
    from relman.catalog import integrity
    from relman.release import approvals, keys

    v1 = _version(catalog, tmp_path)
    v2 = _version(catalog, tmp_path, "two")
    keys.create_key("dave")
    approvals.approve(catalog, v1.id, "staging", "Dave", key="dave")
    conn = sqlite3.connect(catalog.db_path, isolation_level=None)
    conn.execute("INSERT INTO approvals (version_id, to_phase, by, comment, metrics_digest, at, signature)"
                 " SELECT ?, to_phase, by, comment, ?, at, signature FROM approvals",
                 [v2.id, approvals.metrics_digest(catalog, v2.id)])
    conn.close()
    assert any("approvals row" in p for p in integrity.check_state(catalog)[0])
    forged = [a for a in approvals.approvals(catalog, v2.id)][0]
    assert forged["signature_status"] == "bad" and "signed for another" in forged["signature_detail"]


def test_signed_approval_travels_in_a_bundle(keydir, catalog, tmp_path):
    from relman.catalog import open_catalog
    from relman.release import approvals, bundle, keys

    v = _version(catalog, tmp_path)
    keys.create_key("erin")
    approvals.approve(catalog, v.id, "staging", "Erin", key="erin")
    out = Path(bundle.export_bundle(catalog, v.id, tmp_path / "b.relman", key_name="erin")["path"])
    target = open_catalog(tmp_path / "target")
    try:
        res = bundle.import_bundle(target, out)
        assert res["signed_by"]["notes"] == []
        carried = target.get_version(res["id"]).meta["origin"]["approvals"]
        assert carried[0]["signed"] is True and carried[0]["signature"]
    finally:
        target.close()

