"""The forgery paths of issue 26, items 7-10, reproduced as described: direct SQLite edits with
the sqlite3 module, rewritten events, deleted or replaced checkpoint rows and files, forged
bundles re-signed by a trusted key. Each now fails verification or is refused with one line,
leaving the catalog as it was; `relman audit accept` is the reviewed way back."""

from __future__ import annotations

import base64
import io
import json
import sqlite3
import tarfile
from pathlib import Path

import pytest

from relman.catalog import Metric, open_catalog
from relman.catalog.events import canonical, event_hash
from relman.errors import BundleError, IntegrityError, RelmanError
from test_tamper import _forge_committed_metric  # noqa: E402


def _file(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


@pytest.fixture
def world(catalog, tmp_path):
    """v2 (version id 2) has latency_p95_ms = 12 ms; the staging gate wants <= 1 ms; v2 is a
    candidate with an approval, so only the gate stands between it and staging."""
    from relman.release import approvals, policy, workflow

    v1 = catalog.add_version("tiny", {"w.bin": _file(tmp_path, "a.bin", b"a" * 64)}, format="raw")
    v2 = catalog.add_version("tiny", {"w.bin": _file(tmp_path, "b.bin", b"b" * 32)}, format="raw",
                             parents=[(v1.id, None)], relation="half")
    assert v2.id == 2
    catalog.add_metrics(v2.id, [Metric("latency", "latency_p95_ms", 12.0, {"device": "cpu"})])
    policy.set_policy(catalog, "tiny", {"gates": {"staging": ["latency_p95_ms <= 1"]}}, actor="tester")
    workflow.promote(catalog, v2.id, "candidate", who="tester")
    approvals.approve(catalog, v2.id, "staging", "Ada Lovelace", "fine")
    with pytest.raises(workflow.GateFailed):  # the honest state: 12 ms > 1 ms
        workflow.promote(catalog, v2.id, "staging", who="tester")
    return {"v1": v1, "v2": v2}


def _attacker(catalog) -> sqlite3.Connection:
    return sqlite3.connect(catalog.db_path, isolation_level=None)


def state(catalog) -> dict:
    """What must not change while a forged catalog is opened, verified and refused."""
    conn = sqlite3.connect(catalog.db_path)
    try:
        out = {t: conn.execute(f"SELECT COUNT(*), MAX(rowid) FROM {t}").fetchone()
               for t in ("events", "checkpoints", "metrics", "transitions", "versions")}
        out["settings"] = sorted(conn.execute("SELECT key, value FROM settings").fetchall())
        out["phase"] = conn.execute("SELECT id, phase FROM versions ORDER BY id").fetchall()
    finally:
        conn.close()
    d = catalog.root / "checkpoints"
    out["files"] = sorted((p.name, p.read_bytes()) for p in d.glob("*.json")) if d.is_dir() else []
    return out


def _must_refuse_decisions(catalog, v2_id: int, match: str) -> None:
    from relman.release import workflow
    from relman.release.gates import evaluate_gates

    with pytest.raises(IntegrityError, match=match) as err:
        workflow.promote(catalog, v2_id, "staging", who="tester")
    assert "\n" not in str(err.value)
    with pytest.raises(IntegrityError):
        evaluate_gates(catalog, catalog.get_version(v2_id), "staging")
    assert catalog.get_version(v2_id).phase == "candidate"


# -- item 7: an untracked settings row launders edits ---------------------------------------------
def test_deleted_baseline_fingerprint_does_not_launder_an_edited_metric(world, catalog, run_cli, tmp_path):
    from relman.release import bundle, keys

    conn = _attacker(catalog)
    conn.execute("DELETE FROM settings WHERE key='integrity_fingerprint'")
    conn.execute("UPDATE metrics SET value=0.005 WHERE name='latency_p95_ms' AND version_id=2")
    conn.close()
    before = state(catalog)
    reopened = open_catalog(catalog.root)  # "the next open": no re-baseline, nothing written
    try:
        assert [e["kind"] for e in reopened.events()].count("integrity-baseline") == 0
        r = run_cli("verify")
        assert r.exit_code == 1, r.output
        assert "integrity baseline (setting integrity_fingerprint) is missing" in r.output
        assert "metrics row" in r.output and "column value" in r.output
        _must_refuse_decisions(reopened, 2, r"refusing to .* fails verification")
        keys.create_key("lab")
        with pytest.raises(IntegrityError, match="refusing to export"):
            bundle.export_bundle(reopened, 2, tmp_path / "b.relman", key_name="lab")
        assert not (tmp_path / "b.relman").exists()
    finally:
        reopened.close()
    assert state(catalog) == before


def test_accept_restores_the_baseline_after_review(world, catalog, run_cli):
    conn = _attacker(catalog)
    conn.execute("DELETE FROM settings WHERE key='integrity_fingerprint'")
    conn.close()
    assert run_cli("verify").exit_code == 1
    r = run_cli("audit", "accept", "--why", "the fingerprint row was lost in a restore", "--by", "Ada")
    assert r.exit_code == 0, r.output
    assert run_cli("verify").exit_code == 0
    assert catalog.get_setting("integrity_fingerprint")
    # and the restored baseline is tracked like the rest
    conn = _attacker(catalog)
    conn.execute("DELETE FROM settings WHERE key='integrity_fingerprint'")
    conn.close()
    assert run_cli("verify").exit_code == 1


def test_log_and_checkpoints_removed_with_the_baseline_is_not_a_fresh_start(world, catalog, run_cli):
    """Everything that would show the edit removed at once: no events, no checkpoints, no
    baseline, no head; the machine still holds a key made for this folder."""
    conn = _attacker(catalog)
    conn.execute("UPDATE metrics SET value=0.005 WHERE name='latency_p95_ms' AND version_id=2")
    conn.execute("DELETE FROM events")
    _drop_checkpoints(catalog, conn)
    conn.execute("DELETE FROM settings WHERE key IN ('integrity_fingerprint', 'audit_head', 'catalog_id', "
                 "'catalog_key')")
    conn.close()
    r = run_cli("verify")
    assert r.exit_code == 1 and "integrity baseline (setting integrity_fingerprint) is missing" in r.output, r.output
    assert "not committed by any audit event" in r.output
    assert catalog.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0


def test_a_catalog_made_again_in_a_folder_used_before_starts_fresh(tmp_path, run_cli, catalog_path):
    import shutil

    cat = open_catalog(catalog_path)
    cat.log_event("hello", {})
    cat.close()
    shutil.rmtree(catalog_path)
    cat = open_catalog(catalog_path)
    try:
        assert cat.events() == []
        assert run_cli("verify").exit_code == 0
        cat.log_event("hello again", {})
        r = run_cli("verify")
        assert r.exit_code == 0, r.output
    finally:
        cat.close()


@pytest.mark.parametrize("sql,named", [
    ("UPDATE settings SET value = '\"0000\"' WHERE key = 'integrity_fingerprint'", "integrity_fingerprint"),
    ("UPDATE settings SET value = '\"feedfacefeedface\"' WHERE key = 'catalog_id'", "catalog_id"),
    ("DELETE FROM settings WHERE key = 'catalog_key'", "catalog_key"),
    ("INSERT INTO settings VALUES ('disk.reserve_bytes', '0')", "disk.reserve_bytes"),
], ids=["fingerprint-edited", "catalog-id-edited", "catalog-key-deleted", "disk-setting-inserted"])
def test_settings_that_decide_things_are_tracked(world, catalog, run_cli, sql, named):
    conn = _attacker(catalog)
    conn.execute(sql)
    conn.close()
    r = run_cli("verify")
    assert r.exit_code == 1, r.output
    assert "settings row" in r.output and named in r.output, r.output


def test_a_deleted_catalog_key_comes_back_only_after_review(world, catalog, run_cli):
    from relman.release import keys

    pub = catalog.get_setting("catalog_key")
    conn = _attacker(catalog)
    conn.execute("DELETE FROM settings WHERE key = 'catalog_key'")
    conn.close()
    assert run_cli("verify").exit_code == 1
    assert run_cli("verify").exit_code == 1  # opening it again did not quietly put it back
    assert catalog.get_setting("catalog_key") is None
    keys.create_key("ada")  # without the setting the catalog's own key is not used: a person's
    r = run_cli("audit", "accept", "--why", "the key row was lost", "--by", "Ada", "--key", "ada")
    assert r.exit_code == 0, r.output
    r = run_cli("verify")  # this open restores the key, in an event of its own
    assert r.exit_code == 0, r.output
    assert catalog.get_setting("catalog_key") == pub and catalog.events()[-1]["kind"] == "catalog-key"
    assert run_cli("verify").exit_code == 0


def test_relman_setting_writes_stay_verified(world, catalog, run_cli):
    assert run_cli("verify").exit_code == 0
    catalog.set_setting("disk.reserve_bytes", 123)  # through relman: committed by a `state` event
    assert catalog.events()[-1]["kind"] == "state"
    assert run_cli("verify").exit_code == 0


# -- item 8: the anchor is not optional -------------------------------------------------------------
def _drop_checkpoints(catalog, conn) -> None:
    conn.execute("DELETE FROM checkpoints")
    for p in (catalog.root / "checkpoints").glob("*.json"):
        p.unlink()


def _throwaway_checkpoint(catalog, conn) -> None:
    """One checkpoint of the (forged) head, signed by a key made for the purpose."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from relman.keys import key_id

    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    seq, h = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    cid = json.loads(conn.execute("SELECT value FROM settings WHERE key = 'catalog_id'").fetchone()[0])
    body = {"format": "relman-checkpoint", "catalog": cid, "seq": seq, "hash": h, "at": "2030-01-01T00:00:00",
            "key": key_id(raw), "signer": f"catalog-{cid}", "note": ""}
    doc = {"body": body, "signature": base64.b64encode(key.sign(canonical(body).encode())).decode(),
           "public": base64.b64encode(raw).decode()}
    conn.execute("INSERT INTO checkpoints (seq, hash, at, key_id, doc) VALUES (?, ?, ?, ?, ?)",
                 [seq, h, body["at"], body["key"], canonical(doc)])
    (catalog.root / "checkpoints" / "latest.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("anchor_edit,named", [
    (_drop_checkpoints, "no checkpoint this machine can check"),
    (lambda cat, c: (_drop_checkpoints(cat, c), _throwaway_checkpoint(cat, c)), "signed by a key not trusted here"),
], ids=["checkpoints-deleted", "checkpoints-replaced-by-a-throwaway-key"])
def test_rewritten_chain_without_its_anchor_fails_and_is_never_signed(world, catalog, run_cli, anchor_edit, named):
    from relman.catalog import integrity

    conn = _attacker(catalog)
    mid = conn.execute("SELECT id FROM metrics WHERE name = 'latency_p95_ms'").fetchone()[0]
    _forge_committed_metric(conn, mid, 0.005)
    anchor_edit(catalog, conn)
    conn.close()
    r = run_cli("verify")
    assert r.exit_code == 1 and named in r.output, r.output
    assert run_cli("audit", "verify").exit_code == 1
    _must_refuse_decisions(catalog, 2, "refusing to")
    # relman's next write must not sign the forged head with the real key
    n = catalog.conn.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0]
    catalog.add_metrics(world["v1"].id, [Metric("quality", "accuracy", 0.5)])
    assert catalog.conn.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0] == n
    assert integrity.check_state(catalog)[0]
    r = run_cli("audit", "checkpoint")
    assert r.exit_code == 1 and "not anchored" in r.output, r.output
    assert run_cli("verify").exit_code == 1
    # the reviewed way back
    r = run_cli("audit", "accept", "--why", "re-measured latency by hand", "--by", "Ada")
    assert r.exit_code == 0, r.output
    assert run_cli("verify").exit_code == 0
    accept = [e for e in catalog.events() if e["kind"] == "integrity-accept"][-1]
    assert any(named.split()[0] in p or "checkpoint" in p for p in accept["payload"]["problems"])


def test_events_appended_after_the_last_checkpoint_fail(world, catalog, run_cli):
    """A forger who appends a well-chained event (committing an edited metric) after the newest
    checkpoint: the machine holds the catalog's key, so unsigned events are a finding."""
    from relman.catalog import integrity

    conn = _attacker(catalog)
    mid = conn.execute("SELECT id FROM metrics WHERE name = 'latency_p95_ms'").fetchone()[0]
    conn.execute("UPDATE metrics SET value = 0.005 WHERE id = ?", [mid])
    cur = conn.execute("SELECT * FROM metrics WHERE id = ?", [mid])
    row = dict(zip([d[0] for d in cur.description], cur.fetchone()))
    seq, prev = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    payload = canonical({"committed": {"metrics": {canonical([mid]): integrity.record("metrics", row)}}})
    h = event_hash(prev, seq + 1, "2030-01-01", "tester", "metrics", "tiny", "1.1.0", payload)
    conn.execute("INSERT INTO events (seq, at, actor, kind, model, version, payload, prev_hash, hash)"
                 " VALUES (?, '2030-01-01', 'tester', 'metrics', 'tiny', '1.1.0', ?, ?, ?)", [seq + 1, payload, prev, h])
    conn.execute("UPDATE settings SET value = ? WHERE key = 'audit_head'", [canonical({"seq": seq + 1, "hash": h})])
    conn.close()
    r = run_cli("verify")
    assert r.exit_code == 1 and f"events {seq + 1}..{seq + 1} come after the newest signed checkpoint" in r.output, \
        r.output
    _must_refuse_decisions(catalog, 2, "never signed")


def test_every_checkpoint_file_is_checked(world, catalog):
    """A forged file with a lower seq than latest.json is checked too (not only the highest)."""
    from relman.catalog import integrity

    d = catalog.root / "checkpoints"
    doc = json.loads((d / "latest.json").read_text())
    doc["body"]["seq"] = 1
    doc["body"]["hash"] = "0" * 64
    (d / "00000001.json").write_text(json.dumps(doc))
    problems, _ = integrity.check_state(catalog)
    assert any("00000001.json" in p and "forged or edited checkpoint" in p for p in problems), problems


def test_audit_checkpoint_refuses_an_untrusted_catalog_key(world, catalog, run_cli, tmp_path):
    from relman import keys

    cid = catalog.get_setting("catalog_id")
    pub = keys.parse_public(catalog.get_setting("catalog_key"))
    (tmp_path / "keys" / "trusted" / f"{pub.id}.pub").unlink()
    before = catalog.conn.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0]
    r = run_cli("audit", "checkpoint")
    assert r.exit_code == 1 and "not trusted on this machine" in r.output, r.output
    assert catalog.conn.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0] == before
    assert cid  # the key file itself is still there; only trust was withdrawn
    assert (tmp_path / "keys" / "catalogs" / f"{cid}.key").is_file()


# -- item 9: the Ray address through SQLite -------------------------------------------------------
def test_a_ray_address_written_with_sqlite_is_never_used(world, catalog, run_cli):
    from relman.jobs.ray_executor import confirm_remote_setting, executor_from_settings, set_executor

    conn = _attacker(catalog)
    conn.execute("""INSERT OR REPLACE INTO settings VALUES('executor.ray_address','"10.0.0.1:6379"'),"""
                 """('executor.ray_allow_remote','true')""")
    conn.close()
    r = run_cli("verify")
    assert r.exit_code == 1 and "executor.ray_address" in r.output and "executor.ray_allow_remote" in r.output
    before = state(catalog)
    r = run_cli("jobs", "run", "--once")
    assert r.exit_code == 1 and "refusing to send jobs to the Ray cluster at 10.0.0.1:6379" in r.output, r.output
    assert "Traceback" not in r.output
    with pytest.raises(IntegrityError, match="10.0.0.1:6379"):
        executor_from_settings(catalog)
    assert state(catalog) == before
    # accepted after review, the setting still needs relman's own 'jobs executor' to have set it
    assert run_cli("audit", "accept", "--why", "checking the executor path", "--by", "Ada").exit_code == 0
    with pytest.raises(RelmanError, match="no 'relman jobs executor --ray 10.0.0.1:6379 --allow-remote' set it"):
        executor_from_settings(catalog)
    set_executor(catalog, "10.0.0.1:6379", allow_remote=True)  # the way it is meant to be set
    confirm_remote_setting(catalog, "10.0.0.1:6379")
    assert run_cli("verify").exit_code == 0


# -- item 10: bundle parts must bind each other ----------------------------------------------------
@pytest.fixture
def exported(world, catalog, tmp_path):
    from relman.release import bundle, keys

    keys.create_key("lab")
    pin = _file(tmp_path, "relman_adapter.json", json.dumps({"base_manifest_sha256": "ab" * 32}).encode())
    v = catalog.add_version("adapter", {"relman_adapter.json": pin, "w.dat": _file(tmp_path, "w.dat", b"w" * 8)},
                            format="raw", metrics=[Metric("latency", "latency_p95_ms", 12.0, {"device": "cpu"})])
    out = Path(bundle.export_bundle(catalog, v.id, tmp_path / "b.relman", key_name="lab")["path"])
    return out


def _forge(bundle_path: Path, out: Path, edit, key: str = "lab") -> Path:
    """Rewrite a bundle the way a holder of a trusted signing key would, and sign it again."""
    from relman.release import keys

    with tarfile.open(bundle_path) as tf:
        items = [(m, tf.extractfile(m).read()) for m in tf.getmembers()]
    files = {m.name: data for m, data in items}
    manifest = json.loads(files["manifest.json"])
    edit(manifest, files)
    data = json.dumps(manifest, indent=2, sort_keys=True).encode()
    pub, sig = keys.sign(key, data)
    sigdoc = json.loads(files["manifest.sig"])
    sigdoc["signature"] = base64.b64encode(sig).decode()
    files["manifest.json"], files["manifest.sig"] = data, json.dumps(sigdoc).encode()
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        for info, _ in items:
            blob = files[info.name]
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    return out


def _rehash_event(e: dict) -> None:
    e["hash"] = event_hash(e["prev_hash"], e["seq"], e["at"], e["actor"], e["kind"], e.get("model"),
                           e.get("version"), canonical(e["payload"]))


def _commit(m: dict, table: str, row: dict) -> None:
    """Re-hash a carried row into the event that committed it, and that event's hash."""
    from relman.catalog import integrity

    key = integrity.row_key(table, row)
    for e in m["audit"]:
        recs = (e["payload"].get("committed") or {}).get(table) or {}
        if key in recs:
            recs[key] = integrity.record(table, row)
            _rehash_event(e)


def _fake_metric(m: dict, files: dict) -> None:
    m["metrics"][0]["value"] = 0.005
    row = m["committed_rows"]["metrics"][0]
    row["value"] = 0.005
    _commit(m, "metrics", row)


def _unchained(m: dict, files: dict) -> None:
    e = m["audit"][-1]
    e["prev_hash"] = "f" * 64
    _rehash_event(e)


def _unknown_key(m: dict, files: dict) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    _fake_metric(m, files)
    key = Ed25519PrivateKey.generate()
    body = dict(m["checkpoint"]["body"], events=[[e["seq"], e["hash"]] for e in m["audit"]])
    m["checkpoint"] = {"body": body, "signature": base64.b64encode(key.sign(canonical(body).encode())).decode(),
                       "public": base64.b64encode(key.public_key().public_bytes(
                           serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()}


def _rows_dropped(m: dict, files: dict) -> None:
    m["metrics"][0]["value"] = 0.005
    m.pop("committed_rows")


def _pin_zeroed(m: dict, files: dict) -> None:
    import hashlib

    from relman.catalog.catalog import manifest_sha

    data = json.dumps({"base_manifest_sha256": "0" * 64}).encode()
    files["artifacts/relman_adapter.json"] = data
    for f in m["files"]:
        if f["path"] == "artifacts/relman_adapter.json":
            f["sha256"], f["size"] = hashlib.sha256(data).hexdigest(), len(data)
    sha = manifest_sha({f["path"][len("artifacts/"):]: f["sha256"] for f in m["files"]
                        if f["path"].startswith("artifacts/")})
    m["info"]["manifest_sha256"] = sha
    row = m["committed_rows"]["versions"][0]
    row["manifest_sha256"] = sha
    _commit(m, "versions", row)


@pytest.mark.parametrize("edit,message", [
    (_fake_metric, "not one the source catalog's checkpoint signed"),
    (_unchained, "not one the source catalog's checkpoint signed"),
    (_unknown_key, "checkpoint key"),
    (_rows_dropped, "carries no committed rows"),
    (_pin_zeroed, "not one the source catalog's checkpoint signed"),
], ids=["metric-row-and-event-rehashed", "prev-hash-unchained", "checkpoint-by-unknown-key",
        "committed-rows-dropped", "adapter-pin-zeroed-and-rehashed"])
def test_forged_bundle_from_a_trusted_signer_is_refused(exported, tmp_path, edit, message):
    from relman.release import bundle

    bad = _forge(exported, tmp_path / "bad.relman", edit)
    target = open_catalog(tmp_path / "target")
    try:
        before = state(target), sorted(target.store.all_shas())
        with pytest.raises(BundleError) as err:
            bundle.import_bundle(target, bad)
        assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
        assert (state(target), sorted(target.store.all_shas())) == before
        assert bundle.import_bundle(target, exported)["metrics"] == 1  # the honest bundle still imports
    finally:
        target.close()


def test_unchained_consecutive_events_are_refused_by_the_checkpoint_signature(exported, tmp_path):
    """Forging the checkpoint's event list to match a re-linked event breaks its signature."""
    from relman.release import bundle

    def edit(m: dict, files: dict) -> None:
        _unchained(m, files)
        m["checkpoint"]["body"]["events"] = [[e["seq"], e["hash"]] for e in m["audit"]]

    bad = _forge(exported, tmp_path / "bad.relman", edit)
    target = open_catalog(tmp_path / "target")
    try:
        with pytest.raises(BundleError, match="checkpoint in the bundle is invalid"):
            bundle.import_bundle(target, bad)
    finally:
        target.close()


def test_consecutive_carried_events_must_chain(world, catalog, tmp_path):
    """The prev_hash check itself: even a checkpoint that the source catalog's own key signed
    over the carried events (a key holder re-linking them) is refused when two consecutive
    events do not chain."""
    from relman.catalog import anchor
    from relman.release import bundle, keys

    keys.create_key("lab")
    v = catalog.add_version("pair", {"w.dat": _file(tmp_path, "w.dat", b"w" * 8)}, format="raw")
    catalog.add_metrics(v.id, [Metric("latency", "latency_p95_ms", 12.0, {"device": "cpu"})])
    out = Path(bundle.export_bundle(catalog, v.id, tmp_path / "p.relman", key_name="lab")["path"])

    def edit(m: dict, files: dict) -> None:
        seqs = [e["seq"] for e in m["audit"]]
        assert any(b == a + 1 for a, b in zip(seqs, seqs[1:])), seqs
        _unchained(m, files)
        m["checkpoint"] = anchor.sign_excerpt(catalog, m["audit"])

    bad = _forge(out, tmp_path / "bad.relman", edit)
    target = open_catalog(tmp_path / "target")
    try:
        with pytest.raises(BundleError, match=r"audit event \d+ does not chain to event \d+"):
            bundle.import_bundle(target, bad)
        assert bundle.import_bundle(target, out)["metrics"] == 1
    finally:
        target.close()
