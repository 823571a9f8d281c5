"""Signed release bundles for air-gapped transfer, and plain model folders.

A bundle is one uncompressed tar file:

    manifest.json   every file's path, size and sha256; the version's metadata, lineage,
                    metrics, last gate report, transitions, approvals and audit excerpt
    manifest.sig    Ed25519 signature over the exact bytes of manifest.json, with the public key
    README.md       the model card
    artifacts/...   the version's files
    model.sig       OpenSSF model-signing v1.0 signature over all of the above (the key's P-256
                    twin): unpack the bundle and `model_signing verify key` checks it offline
                    (relman.release.openssf); relman's own import checks manifest.sig, not this
    evaluations/... the version's stored attributions (explain; listed, sized and hashed in the
                    manifest like the files, checked as attribution documents on import)

Import checks everything before writing anything: members are read one by one with `tarfile`
(never `extractall`); each must be a plain file with a relative path without `..`, and the
set of members must be exactly the manifest's files; the signing key must be trusted here and
the signature must match; every file must have its recorded size and sha256. Only then are the
files handed to `Catalog.add_version`, which stores blobs and rows in one transaction. Files
are streamed into a temporary folder inside the catalog's `tmp/` (removed afterwards), never
into the store, until they are verified.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import tarfile
import secrets
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Callable

from relman.catalog import events as audit
from relman.errors import BundleError, DuplicateVersion, IntegrityError, RelmanError

FORMAT = "relman-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
OPENSSF_SIGNATURE = "model.sig"  # relman.release.openssf.SIGNATURE
CARD = "README.md"
MAX_MANIFEST = 64 * 1024 * 1024
CHUNK = 1 << 20


# -- export ------------------------------------------------------------------------------------
def build_manifest(catalog: Any, v: Any, card_bytes: bytes) -> dict[str, Any]:
    from relman.catalog.catalog import current_user, utcnow
    from relman.release.approvals import approvals
    from relman.catalog.anchor import sign_excerpt
    from relman.release.modelcard import card_fields, last_gate_report

    files = [{"path": f"artifacts/{a['path']}", "sha256": a["sha256"], "size": a["size"]}
             for a in catalog.artifacts(v.id)]
    files.append({"path": CARD, "sha256": hashlib.sha256(card_bytes).hexdigest(), "size": len(card_bytes)})
    attributions = _attribution_entries(catalog, v)
    files += [{"path": a["path"], "sha256": a["sha256"], "size": a["size"]} for a in attributions]
    lineage = []
    for p in catalog.parents(v.id):
        pv = catalog.get_version(p["parent_id"])
        lineage.append({"model": p["model"], "version": p["version"], "manifest_sha256": pv.manifest_sha256,
                        "weight": p["weight"], "relation": p["relation"]})
    metrics = [{"suite": m["suite"], "name": m["name"], "value": m["value"], "context": m["context"],
                "dataset": m["dataset"], "created_at": m["created_at"]} for m in catalog.metrics(v.id, latest=False)]
    ds_names = sorted({m["dataset"] for m in metrics if m["dataset"]})
    datasets = [dict(r) for r in catalog.query(
        f"SELECT name, sha256, format, kind, n_rows FROM datasets WHERE name IN ({','.join('?' * len(ds_names))})",
        ds_names)] if ds_names else []
    transitions = catalog.query("SELECT from_phase, to_phase, override, why, who, at FROM transitions"
                                " WHERE version_id = ? ORDER BY id", [v.id])
    appr = [{k: a[k] for k in ("to_phase", "by", "comment", "at", "valid", "signed", "signature")}
            for a in approvals(catalog, v.id)]
    rows = committed_rows(catalog, v)
    events = _audit_with_commits(catalog, v, rows)
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "model": v.model, "version": v.version,
        "info": {"format": v.format, "task": v.task, "architecture": v.architecture, "params": v.params,
                 "dtype": v.dtype, "size_bytes": v.size_bytes, "manifest_sha256": v.manifest_sha256,
                 "recipe": v.recipe, "meta": v.meta, "phase": v.phase, "created_at": v.created_at,
                 "created_by": v.created_by},
        "files": files, "lineage": lineage, "metrics": metrics, "datasets": datasets, "attributions": attributions,
        "gate_report": last_gate_report(catalog, v.id), "transitions": transitions, "approvals": appr,
        "card_fields": card_fields(catalog, v),
        "audit": events,
        "committed_rows": rows,
        # signed now with the catalog's key, listing every carried event: what binds them
        "checkpoint": sign_excerpt(catalog, events),
        "exported_at": utcnow(), "exported_by": current_user(), "source_catalog": str(catalog.root),
    }


EVALUATIONS = "evaluations/"


def _attribution_entries(catalog: Any, v: Any) -> list[dict[str, Any]]:
    """The version's stored attribution documents (explain), as bundle members."""
    out = []
    for row in catalog.evaluation_artifacts(v.id, "attributions"):
        out.append({"path": f"{EVALUATIONS}{row['sha256']}.json", "sha256": row["sha256"],
                    "size": catalog.store.path(row["sha256"]).stat().st_size, "kind": row["kind"],
                    "suite": row["suite"], "method": row["method"], "dataset": row["dataset"],
                    "meta": row["meta"]})
    return out


def _imported_attributions(manifest: dict[str, Any], files: dict[str, Path], local_ds: dict[str, Any],
                           ds_sha: dict[str, str], where: str) -> list[dict[str, Any]]:
    """The bundle's attribution documents, each checked (listed, hashed, a valid document of
    this version's task) before anything is written; a bad one refuses the whole import."""
    from relman.evaluate.explain import FORMAT as ATTR_FORMAT

    out = []
    for a in manifest.get("attributions") or []:
        if not isinstance(a, dict) or a.get("path") not in files or not str(a["path"]).startswith(EVALUATIONS):
            raise BundleError(f"{where}: an attributions entry names no verified member of the bundle")
        try:
            doc = json.loads(files[a["path"]].read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BundleError(f"{where}: {a['path']} is not valid JSON ({e})") from None
        if not isinstance(doc, dict) or doc.get("format") != ATTR_FORMAT or doc.get("task") != manifest["info"]["task"]:
            raise BundleError(f"{where}: {a['path']} is not an attributions document of this version")
        local = local_ds.get(a.get("dataset") or "")
        ds_id = local["id"] if local and local["sha256"] == ds_sha.get(a.get("dataset") or "") else None
        out.append({"file": files[a["path"]], "suite": a.get("suite") or "explain", "kind": a.get("kind") or
                    "attributions", "method": a.get("method"), "dataset_id": ds_id, "meta": a.get("meta") or {}})
    return out


def committed_rows(catalog: Any, v: Any) -> dict[str, list[dict[str, Any]]]:
    """The raw rows behind the manifest's version, metrics, approvals and transitions, so the
    importer can check each against the record its audit event (in the excerpt) committed."""
    out: dict[str, list[dict[str, Any]]] = {}
    for table, where in (("versions", "id = ?"), ("metrics", "version_id = ?"), ("approvals", "version_id = ?"),
                         ("transitions", "version_id = ?")):
        out[table] = catalog.query(f"SELECT * FROM {table} WHERE {where} ORDER BY rowid", [v.id])
    return out


def _audit_with_commits(catalog: Any, v: Any, rows: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The version's audit excerpt plus every event that last committed one of the carried rows
    (a rollback event names the other version; a baseline or `state` event names none)."""
    from relman.catalog import integrity
    from relman.release.audit import excerpt

    events = excerpt(catalog, v.model, v.version)
    have = {e["seq"] for e in events}
    keys = {(t, integrity.row_key(t, r)) for t, items in rows.items() for r in items}
    seqs = sorted({seq for seq, _ in integrity.committed_records(catalog.conn, only=keys).values()} - have)
    for seq in seqs:
        e = catalog.query("SELECT * FROM events WHERE seq = ?", [seq])[0]
        e["payload"] = json.loads(e["payload"])
        events.append(e)
    return sorted(events, key=lambda e: e["seq"])


def _check_committed(manifest: dict[str, Any], where: str) -> list[str]:
    """Every carried row must be what the newest carried event committed for it (the events
    were bound to the signed checkpoint already), and the manifest's version, metrics and
    approvals must be those rows. Anything less is refused (issue 26): a bundle without its
    committed rows could carry any number. Returns notes; raises on a mismatch."""
    from relman.catalog import integrity

    rows = manifest.get("committed_rows")
    if rows is None:
        raise BundleError(f"{where}: the bundle carries no committed rows (exported by an older relman), so its "
                          "metrics cannot be checked; refusing the bundle")
    records: dict[tuple[str, str], Any] = {}
    for e in sorted(manifest.get("audit", []), key=lambda e: e["seq"]):
        committed = (e.get("payload") or {}).get("committed") or {}
        if not isinstance(committed, dict):
            raise BundleError(f"{where}: malformed manifest (event {e['seq']}'s committed rows)")
        for table, recs in committed.items():
            for key, rec in (recs or {}).items() if isinstance(recs, dict) else ():
                records[(table, key)] = rec
    if not isinstance(rows, dict):
        raise BundleError(f"{where}: malformed manifest (committed_rows)")
    for table in ("versions", "metrics", "approvals", "transitions"):
        if not isinstance(rows.get(table), list):
            raise BundleError(f"{where}: the bundle's committed rows lack {table}; refusing the bundle")
    for table, items in rows.items():
        if table not in integrity.TRACKED or not isinstance(items, list):
            raise BundleError(f"{where}: malformed manifest (committed_rows.{table})")
        for row in items:
            if not isinstance(row, dict) or not all(k in row for k in integrity.TRACKED[table]):
                raise BundleError(f"{where}: malformed manifest (a {table} row)")
            key = integrity.row_key(table, row)
            rec = records.get((table, key))
            if not isinstance(rec, dict) or rec.get("h") != integrity.record(table, row)["h"]:
                raise BundleError(f"{where}: {table} row {key} in the bundle is not what its audit event committed "
                                  "(edited in the exporting catalog); refusing the bundle")

    def _ctx(text: Any) -> Any:
        try:
            return json.loads(text) if isinstance(text, str) else text
        except ValueError:
            return None

    listed = [(r["suite"], r["name"], r["value"], r["created_at"], audit.canonical(_ctx(r.get("context")) or {}))
              for r in rows["metrics"]]
    for m in manifest["metrics"]:
        if (m["suite"], m["name"], m["value"], m["created_at"], audit.canonical(m["context"])) not in listed:
            raise BundleError(f"{where}: metric {m['suite']}/{m['name']} = {m['value']} is not backed by a committed "
                              "row; refusing the bundle")
    if len(manifest["metrics"]) != len(listed):
        raise BundleError(f"{where}: the bundle lists {len(manifest['metrics'])} metrics but carries {len(listed)} "
                          "committed metric rows; refusing the bundle")
    notes: list[str] = []
    versions = rows["versions"]
    if len(versions) != 1:
        raise BundleError(f"{where}: the bundle must carry its version's committed row; refusing the bundle")
    from relman.catalog.catalog import VersionInfo
    from relman.release.approvals import check_signature

    vrow = dict(versions[0], model=manifest["model"])
    vinfo = VersionInfo.from_row(vrow)
    for a in rows.get("approvals", []):  # signed approvals are verified here, with keys trusted here
        status, detail = check_signature(a, vinfo)
        if status == "bad":
            raise BundleError(f"{where}: the signed approval by {a.get('by')} does not verify ({detail}); "
                              "refusing the bundle")
        if status == "untrusted":
            notes.append(f"approval by {a.get('by')} is signed by a key not trusted here ({detail})")
    v = versions[0]
    info = manifest["info"]
    if v.get("version") != manifest["version"]:
        raise BundleError(f"{where}: the version number differs from its committed row; refusing the bundle")
    for col in ("format", "task", "manifest_sha256", "size_bytes", "phase", "architecture", "params", "dtype",
                "created_at", "created_by"):
        if v.get(col) != info.get(col):
            raise BundleError(f"{where}: the version's {col} differs from its committed row; refusing the bundle")
    for col in ("recipe", "meta"):
        if audit.canonical(_ctx(v.get(col)) or {}) != audit.canonical(info.get(col) or {}):
            raise BundleError(f"{where}: the version's {col} differs from its committed row; refusing the bundle")
    return notes


def _check_checkpoint(manifest: dict[str, Any], where: str) -> list[str]:
    """The carried events must be bound to a checkpoint signed by a key trusted here: it lists
    the (seq, hash) of exactly the carried events, each below its head, and consecutive events
    chain (prev_hash). An unknown key, an older bundle without that list, an event it does not
    list: refused, not noted (issue 26)."""
    from relman.catalog import anchor

    doc = manifest.get("checkpoint")
    if not doc:
        raise BundleError(f"{where}: the bundle carries no signed checkpoint of its source's audit chain; "
                          "refusing the bundle")
    status, info = anchor.check_doc(doc)
    if status == "bad":
        raise BundleError(f"{where}: the audit checkpoint in the bundle is invalid ({info})")
    if status == "untrusted":
        raise BundleError(f"{where}: the source catalog's checkpoint key {info} is not trusted here, so its audit "
                          "events cannot be checked; refusing the bundle (trust that catalog's key with "
                          "'relman keys trust')")
    listed = doc["body"].get("events")
    try:
        signed = {(int(s), str(h)) for s, h in listed}
    except (TypeError, ValueError):
        raise BundleError(f"{where}: the bundle's checkpoint does not list its audit events (exported by an older "
                          "relman); refusing the bundle") from None
    events = sorted(manifest.get("audit", []), key=lambda e: e["seq"])
    carried = [(int(e["seq"]), e["hash"]) for e in events]
    if len({s for s, _ in carried}) != len(carried):
        raise BundleError(f"{where}: the audit excerpt carries an event twice; refusing the bundle")
    for seq, h in carried:
        if (seq, h) not in signed:
            raise BundleError(f"{where}: audit event {seq} in the bundle is not one the source catalog's checkpoint "
                              "signed (rewritten); refusing the bundle")
    if len(signed) != len(carried):
        raise BundleError(f"{where}: the signed checkpoint lists {len(signed)} audit events, the bundle carries "
                          f"{len(carried)}; refusing the bundle")
    for a, b in zip(events, events[1:]):
        if b["seq"] == a["seq"] + 1 and b["prev_hash"] != a["hash"]:
            raise BundleError(f"{where}: audit event {b['seq']} does not chain to event {a['seq']}; refusing the "
                              "bundle")
    top = carried[-1][0] if carried else 0
    if int(doc["body"]["seq"]) < top:
        raise BundleError(f"{where}: the audit excerpt reaches event {top}, beyond the signed checkpoint "
                          f"({doc['body']['seq']})")
    return []


_BASE_FORMATS = ("hf", "onnx", "safetensors", "torch", "raw", "gguf")


def _known_formats() -> tuple[str, ...]:
    """Plain formats plus every recipe format a loader is registered for (torch-int8, ...)."""
    from relman.modelio.loading import RUNNER_WRAPPERS, TORCH_LOADER_MODULES

    return _BASE_FORMATS + tuple(TORCH_LOADER_MODULES) + tuple(RUNNER_WRAPPERS)


def _check_manifest(manifest: Any, where: str) -> None:
    """Structure and types of a (signed) manifest, so a malformed one is a one-line refusal."""
    from relman.catalog import semver
    from relman.tasks.specs import task_names
    from relman.names import check_name

    def bad(what: str) -> BundleError:
        return BundleError(f"{where}: malformed manifest ({what})")

    if not isinstance(manifest, dict):
        raise bad("not an object")
    for key, typ in (("model", str), ("version", str), ("info", dict), ("files", list), ("lineage", list),
                     ("metrics", list), ("transitions", list), ("approvals", list), ("audit", list),
                     ("exported_at", str), ("exported_by", str), ("source_catalog", str)):
        if not isinstance(manifest.get(key), typ):
            raise bad(f"'{key}' must be {typ.__name__}")
    check_name(manifest["model"], "bundle model name")
    semver.parse(manifest["version"])
    info = manifest["info"]
    if info.get("format") not in _known_formats():
        raise bad(f"unknown model format {str(info.get('format'))[:40]!r}")
    if info.get("task") is not None and info.get("task") not in task_names():
        raise bad(f"unknown task {str(info.get('task'))[:40]!r}")
    for key, typ in (("manifest_sha256", str), ("created_at", str), ("created_by", str)):
        if not isinstance(info.get(key), typ):
            raise bad(f"info.{key}")
    for f in manifest["files"]:
        if not (isinstance(f, dict) and isinstance(f.get("path"), str) and type(f.get("size")) is int
                and f["size"] >= 0 and isinstance(f.get("sha256"), str) and len(f["sha256"]) == 64):
            raise bad("a files entry")
    for m in manifest["metrics"]:
        if not (isinstance(m, dict) and isinstance(m.get("suite"), str) and isinstance(m.get("name"), str)
                and (m.get("value") is None or (isinstance(m["value"], (int, float)) and not isinstance(m["value"], bool)))
                and isinstance(m.get("context"), dict) and (m.get("dataset") is None or isinstance(m["dataset"], str))
                and isinstance(m.get("created_at"), str)):
            raise bad("a metrics entry")
    for p in manifest["lineage"]:
        if not (isinstance(p, dict) and all(isinstance(p.get(k), str) for k in ("model", "version", "manifest_sha256"))):
            raise bad("a lineage entry")
    for e in manifest["audit"]:
        if not (isinstance(e, dict) and type(e.get("seq")) is int and isinstance(e.get("payload"), dict)
                and all(isinstance(e.get(k), str) for k in ("prev_hash", "at", "actor", "kind", "hash"))):
            raise bad("an audit entry")
    for a in manifest["approvals"]:
        if not (isinstance(a, dict) and isinstance(a.get("by"), str)):
            raise bad("an approvals entry")


def check_bundle_files(artifacts: dict[str, Path], where: str) -> None:
    """Every file of a bundle is checked with its format's own reader before it is stored, as
    on import from a folder: safetensors (ours + the library's checks), torch pickles with
    weights_only=True, ONNX protobufs, JSON with depth limits and no auto_map."""
    from relman.modelio import inspect as mi

    for rel, path in sorted(artifacts.items()):
        low = rel.lower()
        try:
            if low.endswith(".safetensors"):
                mi.read_safetensors_header(path)
            elif low.endswith(mi.PICKLE_SUFFIXES):
                mi.torch_state_dict_stats(path)
            elif low.endswith(".onnx"):
                import onnx

                try:
                    onnx.load(str(path), load_external_data=False)
                except Exception as e:
                    raise BundleError(f"{where}: {rel} is not a valid ONNX model ({type(e).__name__})") from None
            elif low.endswith(".gguf"):
                from relman.modelio.gguf_file import read_info

                read_info(path)
            elif low.endswith(".json"):
                mi._check_json(path, rel)
                if rel == "adapter_config.json":  # what `relman import` checks in an adapter folder
                    from relman.modelio.peft_adapter import check_peft_config

                    check_peft_config(path)
            elif low.endswith((".pkl", ".pickle", ".joblib", ".dill")):
                raise BundleError(f"{where}: {rel} is a pickle, which relman never imports (it would run code "
                                  "when loaded)")
        except RelmanError as e:
            text = str(e).replace(str(path), rel)
            raise BundleError(f"{where}: {text if text.startswith(rel) else f'{rel}: {text}'}") from None


def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = int(mtime)
    tf.addfile(info, io.BytesIO(data))


def export_bundle(catalog: Any, version_id: int, out: Path | str, *, key_name: str | None = None,
                  progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Write the signed bundle of a version to `out` (atomically); returns a summary.
    `progress(units done, units)` follows it file by file (each artifact's bytes count
    twice: once verified, once written); it may raise to stop (nothing is left behind)."""
    from relman.release import keys
    from relman.release.modelcard import render_card

    v = catalog.get_version(version_id)
    out = Path(out).expanduser()
    if not out.parent.is_dir():
        raise BundleError(f"folder {out.parent} does not exist")
    key_name = key_name or keys.default_key_name()
    keys.load_private(key_name)  # fail early on a missing key
    keys.openssf_key_paths(key_name)  # ... and make its P-256 twin now if it predates them
    arts = catalog.artifacts(v.id)
    total, done = 2 * sum(int(a["size"]) for a in arts), 0
    for a in arts:  # never sign bytes that are not the recorded ones
        if progress is not None:
            progress(done, total)
        done += int(a["size"])
        problem = catalog.store.verify(a["sha256"])
        if problem:
            raise IntegrityError(f"cannot export {v.ref}: {a['path']} ({catalog.store.path(a['sha256'])}) is "
                                 f"{problem}; "
                                 "run 'relman verify'")
    from relman.catalog.integrity import require_intact

    require_intact(catalog, f"export {v.ref}")  # never sign and ship a forged decision
    card = render_card(catalog, v).encode("utf-8")
    manifest = build_manifest(catalog, v, card)
    from relman.catalog.gc import SCRATCH_PREFIX

    catalog.tmp_dir.mkdir(exist_ok=True)
    members_dir = Path(tempfile.mkdtemp(dir=catalog.tmp_dir, prefix=f"{SCRATCH_PREFIX}{os.getpid()}-members-"))
    try:
        return _write_bundle(catalog, v, out, key_name, manifest, card, arts, members_dir, progress, total, done)
    finally:
        shutil.rmtree(members_dir, ignore_errors=True)


def _write_bundle(catalog: Any, v: Any, out: Path, key_name: str, manifest: dict[str, Any], card: bytes,
                  arts: list[dict[str, Any]], members_dir: Path, progress: Callable[[int, int], None] | None,
                  total: int, done: int) -> dict[str, Any]:
    from relman.release import keys

    member_files = _member_bundles(catalog, v, members_dir, key_name)
    manifest["files"] += [{"path": name, "sha256": e["sha256"], "size": e["size"]} for name, e, _ in member_files]
    manifest["members"] = [{"path": name, **{k: e[k] for k in ("ref", "manifest_sha256")}} for name, e, _ in member_files]
    manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode("utf-8")
    pub, signature = keys.sign(key_name, manifest_bytes)
    sig = {"algorithm": "ed25519", "key_id": pub.id, "key_name": pub.name,
           "public_key": base64.b64encode(pub.raw).decode(), "signature": base64.b64encode(signature).decode()}
    sig_bytes = json.dumps(sig, indent=2).encode()
    from relman.catalog.gc import SCRATCH_PREFIX
    from relman.release import openssf

    catalog.tmp_dir.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=catalog.tmp_dir, prefix=f"{SCRATCH_PREFIX}{os.getpid()}-") as scratch:
        model_sig = openssf.sign_tree([(MANIFEST, manifest_bytes), (SIGNATURE, sig_bytes), (CARD, card)]
                                      + [(f"artifacts/{a['path']}", catalog.store.path(a["sha256"])) for a in arts]
                                      + [(name, path) for name, _, path in member_files],
                                      Path(scratch) / "tree", key_name)
    from relman.context import hold_here
    from relman.fsutil import remove_stale_temp, temp_path

    remove_stale_temp(out.parent)  # what a killed export to this folder left
    tmp = temp_path(out)
    now = time.time()
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
            _add_bytes(tf, MANIFEST, manifest_bytes, now)
            _add_bytes(tf, SIGNATURE, sig_bytes, now)
            _add_bytes(tf, CARD, card, now)
            _add_bytes(tf, OPENSSF_SIGNATURE, model_sig, now)
            for e in manifest.get("attributions") or []:
                info = tarfile.TarInfo(e["path"])
                info.size, info.mode, info.mtime = e["size"], 0o644, int(now)
                with open(catalog.store.path(e["sha256"]), "rb") as f:
                    tf.addfile(info, f)
            for name, entry, path in member_files:
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = entry["size"], 0o644, int(now)
                with open(path, "rb") as f:
                    tf.addfile(info, f)
            for a in arts:
                if progress is not None:
                    progress(done, total)
                done += int(a["size"])
                info = tarfile.TarInfo(f"artifacts/{a['path']}")
                info.size = a["size"]
                info.mode = 0o644
                info.mtime = int(now)
                with open(catalog.store.path(a["sha256"]), "rb") as f:
                    tf.addfile(info, f)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        hold_here("export.bundle-written")  # tests kill -9 here: the temp file is complete, not renamed
        os.replace(tmp, out)
        if progress is not None:
            progress(total, total)
    except OSError as e:
        raise BundleError(_write_error(e, out)) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return {"path": str(out), "ref": v.ref, "model": v.model, "version": v.version, "key_id": pub.id,
            "key_name": pub.name, "openssf_public_key": str(keys.p256_paths(key_name)[1]),
            "files": len(manifest["files"]), "bytes": out.stat().st_size}


# -- import ------------------------------------------------------------------------------------
def _check_member(m: tarfile.TarInfo, where: str) -> None:
    name = m.name
    if not name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or "\\" in name:
        raise BundleError(f"{where}: member '{name}' has an absolute or non-portable path; refusing the bundle")
    parts = PurePosixPath(name).parts
    if any(p in ("..", "") for p in parts) or name != PurePosixPath(name).as_posix():
        raise BundleError(f"{where}: member '{name}' points outside the bundle ('..'); refusing the bundle")
    if m.issym() or m.islnk():
        raise BundleError(f"{where}: member '{name}' is a link (to '{m.linkname}'); bundles hold only plain files")
    if not m.isfile():
        kind = "folder" if m.isdir() else "device or special file"
        raise BundleError(f"{where}: member '{name}' is a {kind}; bundles hold only plain files")


def _read_small(tf: tarfile.TarFile, m: tarfile.TarInfo, where: str, limit: int) -> bytes:
    if m.size > limit:
        raise BundleError(f"{where}: {m.name} is {m.size} bytes, more than a manifest can be")
    f = tf.extractfile(m)
    assert f is not None
    try:
        data = f.read()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise BundleError(f"{where}: {m.name} cannot be read ({e}); the bundle is truncated or damaged") from None
    if len(data) != m.size:
        raise BundleError(f"{where}: {m.name} is truncated ({len(data)} of {m.size} bytes)")
    return data


def _copy_hashing(src: BinaryIO, dest: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    with open(dest, "wb") as out:
        while chunk := src.read(CHUNK):
            h.update(chunk)
            out.write(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def read_bundle(path: Path | str, workdir: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Path]]:
    """Verify a bundle completely; returns (manifest, signer, {path in bundle: verified temp file})."""
    from relman.release import keys

    path = Path(path).expanduser()
    where = str(path)
    if not path.is_file():
        raise BundleError(f"{where}: no such bundle file")
    try:
        tf = tarfile.open(path, mode="r:")
    except (tarfile.TarError, EOFError, OSError) as e:
        raise BundleError(f"{where}: not a relman bundle, or truncated ({e})") from None
    with tf:
        try:
            members = tf.getmembers()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise BundleError(f"{where}: the archive is truncated or damaged ({e})") from None
        if members:  # the two zero blocks that end a tar must be there, or the file was cut short
            last = members[-1]
            end = last.offset_data + -(-last.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            with open(path, "rb") as fh:
                fh.seek(end)
                marker = fh.read(2 * tarfile.BLOCKSIZE)
            if len(marker) < 2 * tarfile.BLOCKSIZE or marker.strip(b"\0"):
                raise BundleError(f"{where}: the archive is truncated (its end-of-archive marker is missing)")
        by_name: dict[str, tarfile.TarInfo] = {}
        for m in members:
            _check_member(m, where)
            if m.name in by_name:
                raise BundleError(f"{where}: member '{m.name}' appears twice; refusing the bundle")
            by_name[m.name] = m
        for required in (MANIFEST, SIGNATURE):
            if required not in by_name:
                raise BundleError(f"{where}: no {required} in the archive (not a relman bundle, or truncated)")
        sig_bytes = _read_small(tf, by_name[SIGNATURE], where, 1 << 20)
        manifest_bytes = _read_small(tf, by_name[MANIFEST], where, MAX_MANIFEST)
        try:
            sig = json.loads(sig_bytes)
            raw = base64.b64decode(sig["public_key"], validate=True)
            signature = base64.b64decode(sig["signature"], validate=True)
        except (ValueError, KeyError, TypeError):
            raise BundleError(f"{where}: {SIGNATURE} is not a readable signature") from None
        if sig.get("algorithm") != "ed25519" or len(raw) != 32:
            raise BundleError(f"{where}: unsupported signature (algorithm {sig.get('algorithm')!r})")
        signer = keys.find_trusted(raw)
        if not signer.verify(signature, manifest_bytes):
            raise BundleError(f"{where}: the signature of key {signer.id} ({signer.name}) does not match manifest.json;"
                              " the manifest was altered after signing")
        from relman import jsonlimits

        manifest = jsonlimits.loads(manifest_bytes, f"{where}: manifest.json", error=BundleError)
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT \
                or manifest.get("format_version") != FORMAT_VERSION:
            raise BundleError(f"{where}: not a {FORMAT} v{FORMAT_VERSION} manifest")
        _check_manifest(manifest, where)
        listed = {f["path"]: f for f in manifest["files"]}
        for p in listed:
            if p != CARD and not p.startswith(("artifacts/", EVALUATIONS, MEMBERS)):
                raise BundleError(f"{where}: manifest lists '{p}' outside artifacts/, {EVALUATIONS} and {MEMBERS}")
        expected = set(listed) | {MANIFEST, SIGNATURE}
        extra = sorted(set(by_name) - expected - {OPENSSF_SIGNATURE})  # model.sig: for other tools, optional
        missing = sorted(expected - set(by_name))
        if extra:
            raise BundleError(f"{where}: member(s) not in the signed manifest: {', '.join(extra)}")
        if missing:
            raise BundleError(f"{where}: member(s) listed in the manifest are missing: {', '.join(missing)}"
                              " (truncated bundle?)")
        out: dict[str, Path] = {}
        for i, (name, entry) in enumerate(sorted(listed.items())):
            m = by_name[name]
            if m.size != entry["size"]:
                raise BundleError(f"{where}: {name} is {m.size} bytes, the manifest says {entry['size']}")
            f = tf.extractfile(m)
            assert f is not None
            dest = workdir / f"{i:05d}"
            try:
                sha, n = _copy_hashing(f, dest)
            except (tarfile.TarError, EOFError, OSError) as e:
                raise BundleError(f"{where}: {name} cannot be read ({e}); the bundle is truncated") from None
            if n != entry["size"]:
                raise BundleError(f"{where}: {name} is truncated ({n} of {entry['size']} bytes)")
            if sha != entry["sha256"]:
                raise BundleError(f"{where}: {name} does not match its sha256 in the manifest (got {sha[:12]}…, "
                                  f"expected {entry['sha256'][:12]}…); the file was swapped or damaged")
            out[name] = dest
    for e in manifest.get("audit", []):
        h = audit.event_hash(e["prev_hash"], e["seq"], e["at"], e["actor"], e["kind"], e.get("model"),
                             e.get("version"), audit.canonical(e["payload"]))
        if h != e["hash"]:
            raise BundleError(f"{where}: audit excerpt event {e['seq']} does not match its hash")
    notes = _check_checkpoint(manifest, where) + _check_committed(manifest, where)
    artifacts = {name[len("artifacts/"):]: p for name, p in out.items() if name.startswith("artifacts/")}
    check_bundle_files(artifacts, where)
    return manifest, {"id": signer.id, "name": signer.name, "notes": notes}, out


def import_bundle(catalog: Any, path: Path | str, *, actor: str | None = None) -> dict[str, Any]:
    """Verify `path` and merge its version (files, lineage, metrics, history) into `catalog`."""
    from relman.catalog.catalog import Metric, manifest_sha

    from relman.catalog.gc import SCRATCH_PREFIX, remove_stale_scratch
    from relman.context import hold_here

    catalog.tmp_dir.mkdir(exist_ok=True)
    remove_stale_scratch(catalog)  # what a killed import left (a retry cleans up before it starts)
    with tempfile.TemporaryDirectory(dir=catalog.tmp_dir, prefix=f"{SCRATCH_PREFIX}{os.getpid()}-") as tmp:
        manifest, signer, files = read_bundle(path, Path(tmp))
        hold_here("import-bundle.extracted")  # tests kill -9 here: files extracted, nothing committed
        model, version, info = manifest["model"], manifest["version"], manifest["info"]
        artifacts = {name[len("artifacts/"):]: p for name, p in files.items() if name.startswith("artifacts/")}
        shas = {f["path"][len("artifacts/"):]: f["sha256"] for f in manifest["files"]
                if f["path"].startswith("artifacts/")}
        if manifest_sha(shas) != info["manifest_sha256"]:
            raise BundleError(f"{path}: the artifacts do not add up to the version's manifest sha256")
        for v in catalog.versions():
            if v.model == model and v.version == version:
                same = v.manifest_sha256 == info["manifest_sha256"]
                raise DuplicateVersion(f"{model}@{version} is already in this catalog"
                                       + (" (same files)" if same else " with different files; nothing imported"))
        members_imported = _import_members(catalog, manifest, files, str(path), actor)
        parents: list[tuple[int, float | None]] = []
        missing_parents: list[str] = []
        relation = ""
        for p in manifest["lineage"]:
            match = [v for v in catalog.versions() if v.model == p["model"] and v.version == p["version"]
                     and v.manifest_sha256 == p["manifest_sha256"]]
            if match:
                parents.append((match[0].id, p["weight"]))
                relation = relation or p["relation"]
            else:
                missing_parents.append(f"{p['model']}@{p['version']}")
        local_ds = {r["name"]: r for r in catalog.query("SELECT id, name, sha256 FROM datasets")}
        ds_sha = {d["name"]: d["sha256"] for d in manifest.get("datasets", [])}
        metrics = []
        for m in manifest["metrics"]:
            ctx = dict(m["context"])
            ds_id = None
            if m["dataset"]:
                ctx.setdefault("dataset", m["dataset"])
                local = local_ds.get(m["dataset"])
                if local and local["sha256"] == ds_sha.get(m["dataset"]):
                    ds_id = local["id"]
            ctx["measured_at"] = m["created_at"]
            metrics.append(Metric(m["suite"], m["name"], m["value"], ctx, ds_id))
        attributions = _imported_attributions(manifest, files, local_ds, ds_sha, str(path))
        meta = dict(info.get("meta") or {})
        meta["card"] = manifest.get("card_fields") or {}
        meta["imported_bundle"] = {"file": Path(path).name, "key_id": signer["id"], "key_name": signer["name"],
                                   "exported_at": manifest["exported_at"], "exported_by": manifest["exported_by"],
                                   "source_catalog": manifest["source_catalog"], "source_phase": info.get("phase"),
                                   "missing_parents": missing_parents}
        meta["origin"] = {"transitions": manifest["transitions"], "approvals": manifest["approvals"],
                          "gate_report": manifest["gate_report"], "audit": manifest["audit"],
                          "created_at": info["created_at"], "created_by": info["created_by"]}
        v = catalog.add_version(
            model, artifacts, format=info["format"], version=version, task=info["task"],
            architecture=info["architecture"], params=info["params"], dtype=info["dtype"], recipe=info["recipe"],
            meta=meta, parents=parents, relation=relation, metrics=metrics, actor=actor, event_kind="import-bundle")
        if attributions:  # checked above; their own transaction (all of them or none)
            from relman.catalog import EvalArtifact

            catalog.add_evaluation(v.id, [], [EvalArtifact(version_id=v.id, suite=a["suite"], kind=a["kind"],
                                                           path=a["file"], method=a["method"],
                                                           dataset_id=a["dataset_id"], meta=a["meta"])
                                              for a in attributions], actor=actor)
    return {"ref": v.ref, "model": v.model, "version": v.version, "id": v.id, "signed_by": signer,
            "parents_linked": len(parents),
            "missing_parents": missing_parents, "metrics": len(metrics), "files": len(artifacts),
            "members_imported": members_imported,
            "attributions": len(attributions)}


MEMBERS = "members/"  # an ensemble's member versions, each as its own signed bundle


def _member_bundles(catalog: Any, v: Any, folder: Path, key_name: str) -> list[tuple[str, dict[str, Any], Path]]:
    """An ensemble's members as signed bundles in `folder`: (path in the bundle, {ref, sha256,
    size, manifest_sha256}, file). Nothing for other formats."""
    from relman.modelio import ensemble

    if v.format != ensemble.FORMAT:
        return []
    out = []
    for i, m in enumerate(ensemble.pinned_members(catalog, v)["members"]):
        member = ensemble.find_member(catalog, m, v.ref)
        path = folder / f"{i:02d}.relman"
        export_bundle(catalog, member.id, path, key_name=key_name)
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(CHUNK), b""):
                h.update(chunk)
        out.append((f"{MEMBERS}{member.manifest_sha256}.relman",
                    {"ref": member.ref, "manifest_sha256": member.manifest_sha256, "sha256": h.hexdigest(),
                     "size": path.stat().st_size}, path))
    return out


def _import_members(catalog: Any, manifest: dict[str, Any], files: dict[str, Path], where: str,
                    actor: str | None) -> list[str]:
    """Import the member bundles an ensemble's bundle carries (each verified like any bundle),
    unless a live version with the member's manifest is here already; returns the refs imported."""
    entries = manifest.get("members") or []
    if not isinstance(entries, list):
        raise BundleError(f"{where}: malformed manifest ('members' must be a list)")
    imported = []
    for e in entries:
        if not (isinstance(e, dict) and e.get("path") in files and str(e["path"]).startswith(MEMBERS)
                and isinstance(e.get("manifest_sha256"), str)):
            raise BundleError(f"{where}: a members entry names no verified member of the bundle")
        here = catalog.query("SELECT id FROM versions WHERE manifest_sha256 = ?", [e["manifest_sha256"]])
        if any(not catalog.get_version(r["id"]).deleted for r in here):
            continue
        result = import_bundle(catalog, files[e["path"]], actor=actor)
        imported.append(result["ref"])
    return imported


def _write_error(e: OSError, target: Path) -> str:
    """One line for a failed export write (a full disk above all); nothing is left behind."""
    from relman.fsutil import disk_full_error

    full = disk_full_error(e, target.parent)
    return f"could not write {target}: {full or e.strerror or e}; nothing was written"


# -- plain folders -----------------------------------------------------------------------------
def export_folder(catalog: Any, version_id: int, dest: Path | str, fmt: str, *, gguf_type: str = "Q4_K_M",
                  key_name: str | None = None) -> Path:
    """Write the version as a plain folder transformers (`hf`), onnxruntime (`onnx`) or
    llama.cpp / LM Studio / Ollama (`gguf`) can load, with its model card as README.md (which
    carries the evaluation results and the last gate report), and with `key_name` an OpenSSF
    `model.sig` over every file. Only a named key signs: a folder's files are what a re-import
    stores, so it never depends on which keys happen to exist. Written to a temporary folder and
    renamed into place."""
    from relman.release.modelcard import render_card

    v = catalog.get_version(version_id)
    arts = catalog.artifacts(v.id)
    paths = [a["path"] for a in arts]
    if fmt == "gguf" and v.format != "gguf":
        return _export_gguf_from(catalog, v, arts, dest, gguf_type)
    if fmt == "hf" and v.format == "peft-adapter":  # the PEFT folder; its card and config name the base
        if "adapter_config.json" not in paths or "adapter_model.safetensors" not in paths:
            raise RelmanError(f"{v.ref} is an adapter without adapter_config.json and adapter_model.safetensors")
    elif fmt == "hf":
        if v.format == "torch-int8":  # its int8 safetensors is relman's layout, not one transformers loads
            raise RelmanError(f"{v.ref} is a torch-int8 version (INT8 weights in relman's layout); export it as a "
                              "bundle (-o FILE), or compress its parent with onnx-export / ort-int8 for a portable "
                              "folder")
        if "config.json" not in paths or not any(p.endswith((".safetensors", ".bin")) for p in paths):
            raise RelmanError(f"{v.ref} is a {v.format} version without config.json and weights; it cannot be "
                              "written as a Hugging Face folder")
    elif fmt == "onnx":
        if not any(p.endswith(".onnx") for p in paths):
            raise RelmanError(f"{v.ref} is a {v.format} version with no .onnx file; convert it with an ONNX "
                              "export recipe first")
    elif fmt != "gguf":
        raise RelmanError(f"unknown export format '{fmt}' (use hf, onnx, gguf, or -o FILE for a bundle)")
    if key_name:
        from relman.release import keys, openssf

        keys.openssf_key_paths(key_name)  # a missing or unsafe key fails before any copying
        if openssf.SIGNATURE in paths:
            raise RelmanError(f"{v.ref} has a file named {openssf.SIGNATURE}; it cannot carry an OpenSSF signature")
    dest = Path(dest).expanduser()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise RelmanError(f"{dest} already exists and is not an empty folder")
    if not dest.parent.is_dir():
        raise RelmanError(f"folder {dest.parent} does not exist")
    for a in arts:
        problem = catalog.store.verify(a["sha256"])
        if problem:
            raise IntegrityError(f"cannot export {v.ref}: {a['path']} is {problem}; run 'relman verify'")
    from relman.context import hold_here
    from relman.fsutil import remove_stale_temp, temp_path

    remove_stale_temp(dest.parent)  # what a killed export to this folder left
    tmp = temp_path(dest)
    try:
        tmp.mkdir()
        for a in arts:
            target = tmp / a["path"]
            if not target.resolve().is_relative_to(tmp.resolve()):
                raise RelmanError(f"artifact path '{a['path']}' points outside the target folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(catalog.store.path(a["sha256"]), target)
        if "README.md" not in paths:
            (tmp / "README.md").write_text(render_card(catalog, v), encoding="utf-8")
        if fmt == "gguf" and "Modelfile" not in paths:
            from relman.release.modelcard import gguf_file_name, ollama_modelfile

            (tmp / "Modelfile").write_text(ollama_modelfile(v.meta.get("gguf") or {}, gguf_file_name(paths)),
                                           encoding="utf-8")
        if key_name:
            from relman.release import openssf

            openssf.sign_folder(tmp, key_name)
        hold_here("export.folder-written")  # tests kill -9 here: the temp folder is full, not renamed
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)
    except OSError as e:
        raise BundleError(_write_error(e, dest)) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _export_gguf_from(catalog: Any, v: Any, arts: list[dict[str, Any]], dest: Path | str, gguf_type: str) -> Path:
    """A Hugging Face causal LM written as GGUF on the way out (the same writer as the `gguf`
    recipe, reading the version's blobs in place). The unsupported is refused before anything is
    written; the long write goes to an unnamed file, so a killed export leaves nothing; the
    folder (model.gguf, README.md, Modelfile) appears by one rename at the end."""
    from relman.compress.export import gguf_writer
    from relman.errors import RecipeError
    from relman.release.modelcard import ollama_modelfile, render_card

    if v.format not in ("hf",):
        raise RelmanError(f"{v.ref} is a {v.format} version; GGUF is written from a Hugging Face causal LM "
                          f"({gguf_writer.supported_architectures()}) or exported as is from a gguf version")
    dest = Path(dest).expanduser()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise RelmanError(f"{dest} already exists and is not an empty folder")
    if not dest.parent.is_dir():
        raise RelmanError(f"folder {dest.parent} does not exist")
    for a in arts:
        problem = catalog.store.verify(a["sha256"])
        if problem:
            raise IntegrityError(f"cannot export {v.ref}: {a['path']} is {problem}; run 'relman verify'")
    files = {a["path"]: catalog.store.path(a["sha256"]) for a in arts if "/" not in a["path"]}
    try:
        plan = gguf_writer.plan_export(files, gguf_type.upper())
    except RecipeError as e:
        raise RelmanError(f"cannot export {v.ref} as GGUF: {e}") from None
    stem = f".{dest.name}.{os.getpid()}-{secrets.token_hex(4)}"
    staged = dest.parent / f"{stem}.gguf"
    tmp = dest.parent / f"{stem}.tmp"
    summary = gguf_writer.write_gguf(plan, staged, name=v.model, check=lambda p: gguf_writer.verify_gguf(p, plan),
                                     on_tensor=_hold_half_way)
    try:
        tmp.mkdir()
        os.replace(staged, tmp / gguf_writer.GGUF_FILE)
        (tmp / "README.md").write_text(render_card(catalog, v) + _gguf_note(v, plan, summary), encoding="utf-8")
        (tmp / "Modelfile").write_text(ollama_modelfile(gguf_writer.describe(plan)), encoding="utf-8")
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)
    finally:
        staged.unlink(missing_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _hold_half_way(done: int, total: int) -> None:
    """Test hold point "export.gguf-mid-write" for an export outside any job (the CLI), half way
    through the tensors, so a test kills the process with the file half written."""
    from relman.context import hold_here

    if done == max(1, total // 2):
        hold_here("export.gguf-mid-write")


def _gguf_note(v: Any, plan: Any, check: dict[str, Any]) -> str:
    """The card section of a GGUF written on export (the version itself is hf)."""
    from relman.compress.export.gguf_writer import describe
    from relman.release.modelcard import gguf_usage_lines

    worst = ", ".join(f"{k} {e:.4f}" for k, e in sorted(check["worst_block_error"].items()))
    return "\n".join(["", "## GGUF export", "",
                      (f"Written as {plan.file_type} by relman and read back before it was named: every tensor "
                       f"within its type's bound (largest error as a share of its block's magnitude: {worst})."), "",
                      *gguf_usage_lines(f"{v.model}-{v.version}", describe(plan))])
