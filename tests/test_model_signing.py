"""OpenSSF model signing: an exported bundle, unpacked, passes the unmodified `model_signing`
verifier (its CLI, in a subprocess, offline, with the key's P-256 public key), and flipping one
byte of a weight file, of the card or of manifest.json (the metrics and gate report) makes it
fail; `export --format hf --key` is checked with the library's own API the same way. relman's
own import still accepts the bundle. Keys: one `create_key` makes both halves, one trust step
takes either public-key file."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from relman.catalog import Metric, open_catalog
from relman.errors import RelmanError


@pytest.fixture
def keydir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "keys"
    monkeypatch.setenv("RELMAN_KEYS_DIR", str(d))
    return d


@pytest.fixture
def promoted(catalog, tiny_bert, keydir):
    """A version with metrics (one with an interval) and a gate report, and the key 'lab'."""
    from relman.app import bundles, release
    from relman.app.models import import_model

    v = import_model(catalog, tiny_bert, "sent")
    catalog.add_metrics(v.id, [Metric("quality", "accuracy", 0.912, {"dataset": "sst-tiny", "split": "test",
                                                                      "interval": [0.9, 0.922], "n": 800})])
    release.promote(catalog, v, "candidate", why="review")
    made = bundles.create_key("lab")
    return catalog, catalog.get_version(v.id), made


def verify_cli(folder: Path, pub: str) -> subprocess.CompletedProcess:
    """The unmodified verifier's own command line: `model_signing verify key ...`."""
    return subprocess.run([sys.executable, "-m", "model_signing", "verify", "key", str(folder),
                           "--signature", str(folder / "model.sig"), "--public_key", pub],
                          capture_output=True, text=True, timeout=120)


def flip(path: Path) -> bytes:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 1]) + data[len(data) // 2 + 1:])
    return data


def test_an_unpacked_bundle_passes_the_model_signing_cli_and_fails_on_any_flipped_byte(promoted, run_cli, tmp_path):
    cat, v, made = promoted
    r = run_cli("export", v.ref, "-o", str(tmp_path / "b.relman"), "--key", "lab")
    assert r.exit_code == 0, r.output
    out = tmp_path / "unpacked"
    with tarfile.open(tmp_path / "b.relman") as tf:
        tf.extractall(out, filter="data")
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert "model.sig" in names and "README.md" in names and "manifest.json" in names

    ok = verify_cli(out, made["openssf_public_key"])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # the DSSE envelope's in-toto statement lists every other file with its sha256
    bundle = json.loads((out / "model.sig").read_text())
    envelope = bundle["dsseEnvelope"]
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["predicateType"] == "https://model_signing/signature/v1.0"
    listed = {r["name"]: r["digest"] for r in statement["predicate"]["resources"]}
    assert sorted(listed) == [n for n in names if n != "model.sig"]
    for name, digest in listed.items():
        assert digest == hashlib.sha256((out / name).read_bytes()).hexdigest(), name
    assert statement["predicate"]["serialization"]["hash_type"] == "sha256"

    manifest = json.loads((out / "manifest.json").read_text())  # what the signed manifest.json carries
    assert manifest["gate_report"]["to_phase"] == "candidate" and manifest["metrics"][0]["value"] == 0.912

    import model_signing

    def library_verify() -> None:
        (model_signing.verifying.Config().use_elliptic_key_verifier(public_key=made["openssf_public_key"])
         .verify(out, out / "model.sig"))

    library_verify()
    for name in (n for n in names if n != "model.sig"):  # any file: the library's verifier, in process
        original = flip(out / name)
        with pytest.raises(ValueError, match="Signature mismatch"):
            library_verify()
        (out / name).write_bytes(original)
    (out / "artifacts" / "extra.txt").write_text("added after signing\n")  # a file added is caught too
    with pytest.raises(ValueError, match="extra.txt"):
        library_verify()
    (out / "artifacts" / "extra.txt").unlink()

    weights = next(n for n in names if n.endswith(".safetensors"))
    for name in (weights, "README.md", "manifest.json"):  # and the command line, as a user runs it
        original = flip(out / name)
        bad = verify_cli(out, made["openssf_public_key"])
        assert bad.returncode != 0, name
        assert name in bad.stdout + bad.stderr, (name, bad.stdout + bad.stderr)
        (out / name).write_bytes(original)
    assert verify_cli(out, made["openssf_public_key"]).returncode == 0

    # relman's own import accepts the bundle with model.sig in it
    target = open_catalog(tmp_path / "target")
    try:
        from relman.app.bundles import import_bundle

        res = import_bundle(target, tmp_path / "b.relman")
        assert res["ref"] == v.ref
    finally:
        target.close()


def test_another_keys_public_key_does_not_verify(promoted, run_cli, tmp_path, monkeypatch):
    from relman.app.bundles import create_key, trust_key

    cat, v, _ = promoted
    other = create_key("other")
    assert run_cli("export", v.ref, "-o", str(tmp_path / "b.relman"), "--key", "lab").exit_code == 0
    with tarfile.open(tmp_path / "b.relman") as tf:
        tf.extractall(tmp_path / "u", filter="data")
    assert verify_cli(tmp_path / "u", other["openssf_public_key"]).returncode != 0
    monkeypatch.setenv("RELMAN_KEYS_DIR", str(tmp_path / "elsewhere"))  # a machine that trusts only 'other'
    r = run_cli("keys", "verify", str(tmp_path / "u"))
    assert r.exit_code == 1 and "no OpenSSF (P-256) key is trusted here" in r.output
    trust_key(other["openssf_public_key"])
    r = run_cli("keys", "verify", str(tmp_path / "u"))
    assert r.exit_code == 1 and "not signed by any key trusted here" in r.output, r.output


def test_hf_export_with_a_key_verifies_with_the_library_and_fails_on_a_flipped_card(promoted, run_cli, tmp_path):
    import model_signing

    cat, v, made = promoted
    r = run_cli("export", "--format", "hf", v.ref, str(tmp_path / "hf"), "--key", "lab")
    assert r.exit_code == 0, r.output
    folder = tmp_path / "hf"

    def verify() -> None:
        (model_signing.verifying.Config().use_elliptic_key_verifier(public_key=made["openssf_public_key"])
         .verify(folder, folder / "model.sig"))

    verify()
    r = run_cli("keys", "verify", str(folder))  # relman's check: the same library, the keys trusted here
    assert r.exit_code == 0 and "signed by trusted key" in r.output, r.output
    from huggingface_hub import ModelCard

    card = ModelCard((folder / "README.md").read_text())  # the card the signature covers carries the interval
    assert [r.metric_value for r in card.data.eval_results] == ["0.912 ± 0.011"]
    original = flip(folder / "README.md")
    with pytest.raises(ValueError, match="README.md"):
        verify()
    r = run_cli("keys", "verify", str(folder))
    assert r.exit_code == 1 and "does not verify" in r.output and "README.md" in r.output
    (folder / "README.md").write_bytes(original)
    # a forged envelope signature (right key hint, wrong bytes) is refused in one line, too
    doc = json.loads((folder / "model.sig").read_text())
    raw = bytearray(base64.b64decode(doc["dsseEnvelope"]["signatures"][0]["sig"]))
    raw[-1] ^= 1
    doc["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(raw)).decode()
    (folder / "model.sig").write_text(json.dumps(doc))
    r = run_cli("keys", "verify", str(folder))
    assert r.exit_code == 1 and "does not verify" in r.output, r.output
    r = run_cli("export", "--format", "hf", v.ref, str(tmp_path / "plain"))
    assert r.exit_code == 0 and not (tmp_path / "plain" / "model.sig").exists()
    assert "unsigned" in r.output


def test_one_create_makes_both_keys_and_one_trust_step_takes_either(keydir, tmp_path, monkeypatch):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from relman import keys
    from relman.app.bundles import create_key, trust_key

    made = create_key("alice")
    priv, pub = keys.p256_paths("alice")
    assert Path(made["openssf_public_key"]) == pub and oct(priv.stat().st_mode & 0o777) == "0o600"
    key = serialization.load_pem_private_key(priv.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    kinds = {k["kind"] for k in keys.list_keys()}
    assert {"own", "trusted", "trusted-p256"} <= kinds
    with pytest.raises(RelmanError, match="already exists"):
        create_key("alice")

    # another machine trusts both public halves with the same command
    alice_pub, alice_p256 = keydir / "alice.pub", pub
    monkeypatch.setenv("RELMAN_KEYS_DIR", str(tmp_path / "elsewhere"))
    assert trust_key(alice_pub)["kind"] == "relman-ed25519"
    got = trust_key(alice_p256)
    assert (got["kind"], got["name"]) == ("openssf-p256", "alice") and len(keys.trusted_p256()) == 1
    assert [(k["name"], k["kind"]) for k in keys.list_keys()] == [("alice", "trusted"), ("alice", "trusted-p256")]
    ed_pem = tmp_path / "ed.pem"
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    ed_pem.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(RelmanError, match="not an ECDSA P-256"):
        trust_key(ed_pem)


def test_a_key_made_before_the_twin_gets_one_on_first_export(promoted, run_cli, tmp_path):
    from relman import keys

    cat, v, _ = promoted
    priv, pub = keys.p256_paths("lab")
    priv.unlink()
    pub.unlink()
    r = run_cli("export", v.ref, "-o", str(tmp_path / "b.relman"), "--key", "lab")
    assert r.exit_code == 0, r.output
    assert priv.is_file() and pub.is_file()
    with tarfile.open(tmp_path / "b.relman") as tf:
        tf.extractall(tmp_path / "u", filter="data")
    assert verify_cli(tmp_path / "u", str(pub)).returncode == 0
