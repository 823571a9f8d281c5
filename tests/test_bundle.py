"""Signed release bundles between two real catalogs, keys, and plain hf/onnx folder exports.
Every tampered, unsigned, untrusted, unsafe or truncated bundle is refused with a clear message
and leaves the target catalog exactly as it was (no rows, no blobs, no temp files)."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest

from relman.catalog import Metric, open_catalog
from relman.errors import BundleError, DuplicateVersion, IntegrityError, RelmanError


@pytest.fixture
def keydir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "keys"
    monkeypatch.setenv("RELMAN_KEYS_DIR", str(d))
    return d


@pytest.fixture
def target(tmp_path):
    cat = open_catalog(tmp_path / "target")
    yield cat
    cat.close()


@pytest.fixture
def source(catalog, tiny_bert, tmp_path, keydir):
    """A base and a compressed child with metrics, approvals, a promotion and card fields."""
    from relman.app import bundles, release
    from relman.app.models import import_model

    base = import_model(catalog, tiny_bert, "sent")
    catalog.add_metrics(base.id, [Metric("quality", "accuracy", 0.9, {"device": "cpu", "dataset": "sst-tiny"})])
    files = {a["path"]: catalog.store.path(a["sha256"]) for a in catalog.artifacts(base.id)}
    extra = tmp_path / "NOTES.txt"
    extra.write_text("pruned 10 %\n")
    files["NOTES.txt"] = extra
    child = catalog.add_version("sent", files, format="hf", task="text-classification", parents=[(base.id, None)],
                                relation="compress", recipe={"name": "prune-magnitude", "params": {"amount": 0.1}})
    catalog.add_metrics(child.id, [Metric("quality", "accuracy", 0.88, {"device": "cpu", "dataset": "sst-tiny"}),
                                   Metric("latency", "latency_p95_ms", 3.5, {"threads": 1}),
                                   # the evidence the default policy's candidate gates ask of a compressed child
                                   Metric("fidelity", "fidelity", 0.995, {"interval": [0.99, 0.999]}),
                                   Metric("quality", "accuracy_delta_vs_parent", -0.02,
                                          {"interval": [-0.035, -0.005], "reference": base.ref})])
    release.promote(catalog, child, "candidate", why="review")
    release.approve(catalog, child, "staging", by="alice", comment="fine")
    bundles.set_card_fields(catalog, child, {"intended_use": "reviews", "limitations": "toy"})
    bundles.create_key("lab-a")
    return catalog, base, catalog.get_version(child.id)


def snapshot(cat) -> dict:
    tables = ("models", "versions", "artifacts", "metrics", "lineage", "events", "pending_blobs", "settings")
    counts = {t: cat.conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}
    counts["blobs"] = sorted(cat.store.all_shas())
    counts["tmp"] = sorted(p.name for p in cat.tmp_dir.iterdir()) if cat.tmp_dir.exists() else []
    return counts


def members(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path) as tf:
        return [(m, tf.extractfile(m).read() if m.isfile() else b"") for m in tf.getmembers()]


def write_tar(path: Path, items: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in items:
            info = tarfile.TarInfo(info.name) if isinstance(info, str) else info
            if info.isfile():
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return path


def refused(target, path: Path, message: str) -> None:
    from relman.app.bundles import import_bundle

    before = snapshot(target)
    with pytest.raises(BundleError) as err:
        import_bundle(target, path)
    assert message in str(err.value), str(err.value)
    assert "\n" not in str(err.value)
    assert snapshot(target) == before


def test_round_trip_into_another_catalog(source, target, tmp_path, run_cli):
    from relman.app.bundles import export_bundle, import_bundle

    cat, base, child = source
    b1 = export_bundle(cat, base, tmp_path / "base.relman")
    r = run_cli("export", child.ref, "-o", str(tmp_path / "child.relman"), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["key_name"] == "lab-a"
    names = [m.name for m, _ in members(tmp_path / "child.relman")]
    assert names[:3] == ["manifest.json", "manifest.sig", "README.md"] and "artifacts/NOTES.txt" in names
    manifest = json.loads(members(tmp_path / "child.relman")[0][1])
    assert {f["path"] for f in manifest["files"]} == set(names) - {"manifest.json", "manifest.sig", "model.sig"}  # model.sig: the OpenSSF signature
    audit_kinds = [e["kind"] for e in manifest["audit"]]
    assert audit_kinds[:1] == ["import"] and "approve" in audit_kinds
    assert manifest["lineage"][0]["version"] == base.version
    # the child first: its parent is not there yet, the lineage is kept in meta
    res = import_bundle(target, b1["path"])
    assert res["parents_linked"] == 0
    res = import_bundle(target, tmp_path / "child.relman")
    assert res["parents_linked"] == 1 and res["missing_parents"] == [] and res["metrics"] == 4
    tv = target.resolve(child.ref)
    assert tv.manifest_sha256 == child.manifest_sha256 and tv.phase == "draft"
    assert target.parents(tv.id)[0]["version"] == base.version and target.parents(tv.id)[0]["relation"] == "compress"
    assert target.metric_values(tv.id) == {"accuracy": 0.88, "latency_p95_ms": 3.5, "fidelity": 0.995,
                                           "accuracy_delta_vs_parent": -0.02}
    assert tv.meta["imported_bundle"]["key_name"] == "lab-a"
    assert [t["to_phase"] for t in tv.meta["origin"]["transitions"]] == ["candidate"]
    assert tv.meta["origin"]["approvals"][0]["by"] == "alice"
    assert target.events()[-1]["kind"] == "import-bundle"
    assert not target.verify_store() and not target.verify_audit() and not target.orphan_blobs()
    card = (Path(target.root) / "card.md")
    from relman.app.bundles import write_model_card

    write_model_card(target, tv, card)
    assert "reviews" in card.read_text() and "toy" in card.read_text()
    assert "## Origin" in card.read_text() and "| draft → candidate | tester | review |" in card.read_text()
    # the same bundle twice: refused, nothing written
    before = snapshot(target)
    with pytest.raises(DuplicateVersion, match="already in this catalog"):
        import_bundle(target, tmp_path / "child.relman")
    assert snapshot(target) == before
    r = run_cli("--catalog", str(target.root), "import-bundle", str(tmp_path / "base.relman"))
    assert r.exit_code == 1 and "already in this catalog" in r.output


@pytest.fixture
def bundle(source, tmp_path) -> Path:
    from relman.app.bundles import export_bundle

    cat, _, child = source
    return Path(export_bundle(cat, child, tmp_path / "child.relman")["path"])


def test_altered_manifest_is_refused(bundle, target, tmp_path):
    items = members(bundle)
    m = json.loads(items[0][1])
    m["metrics"][0]["value"] = 0.99  # a better number than was measured
    items[0] = (items[0][0], json.dumps(m, indent=2, sort_keys=True).encode())
    refused(target, write_tar(tmp_path / "x.relman", items), "does not match manifest.json; the manifest was altered")


def test_swapped_artifact_is_refused(bundle, target, tmp_path):
    items = members(bundle)
    i = next(i for i, (m, _) in enumerate(items) if m.name == "artifacts/config.json")
    data = items[i][1]
    items[i] = (items[i][0], data.replace(b"bert", b"BERT"))
    refused(target, write_tar(tmp_path / "x.relman", items),
            "artifacts/config.json does not match its sha256 in the manifest")


def test_untrusted_key_is_refused(source, target, tmp_path, monkeypatch):
    from relman.app.bundles import create_key, export_bundle

    cat, _, child = source
    monkeypatch.setenv("RELMAN_KEYS_DIR", str(tmp_path / "mallory-keys"))
    create_key("mallory")
    path = export_bundle(cat, child, tmp_path / "m.relman")["path"]
    monkeypatch.setenv("RELMAN_KEYS_DIR", str(tmp_path / "keys"))
    refused(target, Path(path), "which is not trusted here")


@pytest.mark.parametrize("bad_name, message", [
    ("../evil.txt", "points outside the bundle"),
    ("artifacts/../../evil.txt", "points outside the bundle"),
    ("/tmp/evil.txt", "absolute or non-portable path"),
    ("C:/evil.txt", "absolute or non-portable path"),
])
def test_unsafe_member_paths_are_refused(bundle, target, tmp_path, bad_name, message):
    items = members(bundle)
    items.append((tarfile.TarInfo(bad_name), b"owned"))
    refused(target, write_tar(tmp_path / "x.relman", items), message)
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()


def test_links_and_devices_are_refused(bundle, target, tmp_path):
    for kind, message in ((tarfile.SYMTYPE, "is a link"), (tarfile.LNKTYPE, "is a link"),
                          (tarfile.CHRTYPE, "device or special file"), (tarfile.DIRTYPE, "is a folder")):
        items = members(bundle)
        info = tarfile.TarInfo("artifacts/extra")
        info.type = kind
        info.linkname = "/etc/passwd"
        items.append((info, b""))
        refused(target, write_tar(tmp_path / f"x{kind!r}.relman", items), message)


def test_extra_and_missing_members_are_refused(bundle, target, tmp_path):
    items = members(bundle)
    refused(target, write_tar(tmp_path / "extra.relman", items + [(tarfile.TarInfo("artifacts/run.py"), b"x")]),
            "member(s) not in the signed manifest: artifacts/run.py")
    refused(target, write_tar(tmp_path / "missing.relman", [x for x in items if x[0].name != "artifacts/NOTES.txt"]),
            "listed in the manifest are missing: artifacts/NOTES.txt")
    refused(target, write_tar(tmp_path / "nosig.relman", [x for x in items if x[0].name != "manifest.sig"]),
            "no manifest.sig in the archive")


@pytest.mark.parametrize("where", [0.1, 0.5, 0.9, "last byte", "end marker"])
def test_truncated_bundle_is_refused(bundle, target, tmp_path, where):
    data = bundle.read_bytes()
    with tarfile.open(bundle) as tf:
        last = tf.getmembers()[-1]
    end = last.offset_data + last.size  # where the archive's content ends
    at = {"last byte": end - 1, "end marker": end + 511}.get(where) or int(end * where)
    cut = tmp_path / "cut.relman"
    cut.write_bytes(data[:at])
    from relman.app.bundles import import_bundle

    before = snapshot(target)
    with pytest.raises(BundleError, match="truncated|damaged|missing"):
        import_bundle(target, cut)
    assert snapshot(target) == before


def test_not_a_bundle(target, tmp_path, keydir):
    junk = tmp_path / "junk.relman"
    junk.write_bytes(b"\x00" * 10 + b"hello" * 100)
    refused(target, junk, "not a relman bundle")
    refused(target, tmp_path / "nothing.relman", "no such bundle file")


def test_export_refuses_a_swapped_blob(source, tmp_path):
    from relman.app.bundles import export_bundle

    cat, _, child = source
    art = next(a for a in cat.artifacts(child.id) if a["path"] == "NOTES.txt")
    blob = cat.store.path(art["sha256"])
    os.chmod(blob, 0o644)
    blob.write_text("pruned 90 %\n")
    with pytest.raises(IntegrityError, match="NOTES.txt .* content changed"):
        export_bundle(cat, child, tmp_path / "out.relman")
    assert not any(p.name.startswith((".out", "out")) for p in tmp_path.iterdir())


def test_keys(keydir, tmp_path, run_cli, monkeypatch):
    from relman.release import keys

    r = run_cli("keys", "create", "lab-a")
    assert r.exit_code == 0, r.output
    priv = keydir / "lab-a.key"
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in priv.read_bytes()
    r = run_cli("keys", "create", "lab-a")
    assert r.exit_code == 1 and "already exists" in r.output
    assert run_cli("keys", "create", "../x").exit_code == 1
    ls = json.loads(run_cli("keys", "ls", "--json").output)
    assert {(k["name"], k["kind"]) for k in ls} == {("lab-a", "own"), ("lab-a", "trusted"), ("lab-a", "trusted-p256")}
    # another lab's public key, trusted by file
    monkeypatch.setenv("RELMAN_KEYS_DIR", str(tmp_path / "other"))
    other = keys.create_key("lab-b")
    monkeypatch.setenv("RELMAN_KEYS_DIR", str(keydir))
    r = run_cli("keys", "trust", str(tmp_path / "other" / "lab-b.pub"))
    assert r.exit_code == 0 and other.id in r.output
    assert other.id in {k.id for k in keys.trusted_keys()}
    bad = tmp_path / "bad.pub"
    bad.write_text("ssh-ed25519 AAAA x\n")
    r = run_cli("keys", "trust", str(bad))
    assert r.exit_code == 1 and "not a relman public key" in r.output
    os.chmod(priv, 0o644)
    with pytest.raises(RelmanError, match="readable by other users"):
        keys.load_private("lab-a")


def test_export_hf_folder_loads_with_transformers(source, tmp_path, run_cli):
    cat, _, child = source
    dest = tmp_path / "hf-out"
    r = run_cli("export", "--format", "hf", child.ref, str(dest))
    assert r.exit_code == 0, r.output
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(dest, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(dest, local_files_only=True)
    out = model(**tok(["good movie"], return_tensors="pt"))
    assert out.logits.shape == (1, 2)
    assert (dest / "README.md").read_text().startswith("---\n")
    assert stat.S_IMODE((dest / "config.json").stat().st_mode) & stat.S_IWUSR  # a copy, not the read-only blob
    r = run_cli("export", "--format", "hf", child.ref, str(dest))
    assert r.exit_code == 1 and "already exists" in r.output
    r = run_cli("export", "--format", "onnx", child.ref, str(tmp_path / "o"))
    assert r.exit_code == 1 and "no .onnx file" in r.output
    assert not (tmp_path / "o").exists()


@pytest.mark.heavy  # onnx + onnxruntime
def test_export_onnx_folder_loads_with_onnxruntime(catalog, tmp_path, run_cli):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(3, 2), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    src = tmp_path / "tiny.onnx"
    onnx.save(model, src)
    assert run_cli("import", str(src), "--model", "mm").exit_code == 0
    dest = tmp_path / "onnx-out"
    r = run_cli("export", "mm@1.0.0", str(dest), "--format", "onnx")
    assert r.exit_code == 0, r.output
    import onnxruntime as ort

    sess = ort.InferenceSession(str(dest / "tiny.onnx"), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": np.ones((1, 3), dtype=np.float32)})[0]
    assert y.tolist() == [[6.0, 9.0]]
    r = run_cli("export", "--format", "hf", "mm@1.0.0", str(tmp_path / "h"))
    assert r.exit_code == 1 and "cannot be written as a Hugging Face folder" in r.output
