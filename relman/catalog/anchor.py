"""Signed checkpoints of the audit chain's head: the anchor that makes truncation, wholesale
deletion and recomputation of the chain detectable.

A chain of hashes proves that events fit together, not that none were cut off at the end or
that nobody recomputed every hash after an edit. A checkpoint is the head (seq, hash) signed
with an Ed25519 key that lives outside the catalog: the catalog's own key, made when the
catalog is first opened by this code and kept in the keys folder (`relman keys`,
`<keys dir>/catalogs/<catalog id>.key`; its public half is trusted on this machine), or a
person's key (`relman audit checkpoint --key NAME`).

Every transaction that appends events ends with a checkpoint row in `checkpoints`, and after
the commit `<catalog>/checkpoints/latest.json` is replaced (release transitions and explicit
checkpoints also keep `<seq>.json`), so the anchor survives edits of the database file itself.
`verify` takes the newest checkpoint it can check (signature by a trusted key) from both places
and requires the chain to reach it with the same hash. Checkpoints signed by keys that are not
trusted here are reported as notes, not failures (a catalog copied from another machine).
What this cannot catch: someone who holds the private key, or who removes the database rows,
the checkpoint files and the events all together; see README "Tamper evidence".
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path
from typing import Any

from relman.catalog.events import canonical

FORMAT = "relman-checkpoint"


def _keys():
    from relman import keys

    return keys


def catalog_id(catalog: Any) -> str | None:
    return catalog.get_setting("catalog_id")


def _key_path(cid: str) -> Path:
    return _keys().keys_dir() / "catalogs" / f"{cid}.key"


def ensure_key(catalog: Any) -> None:
    """Give the catalog an id and, the first time, its own signing key (existing catalogs get
    one on their first open by this code); then anchor the current head."""
    if catalog.get_setting("catalog_key"):
        return
    cid = catalog_id(catalog) or secrets.token_hex(8)
    try:
        pub = _create_catalog_key(cid)
    except OSError:  # no writable keys folder: the catalog works, its chain is not anchored
        return
    catalog._signer_cache = False  # look the key up again: it exists now
    with catalog.transaction():
        if catalog.get_setting("catalog_key"):
            return
        catalog.conn.execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('catalog_id', ?)",
                             [json.dumps(cid)])
        catalog.conn.execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('catalog_key', ?)",
                             [json.dumps(pub.line().strip())])
        catalog._checkpoint_wanted = True


def _create_catalog_key(cid: str):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    keys = _keys()
    path = _key_path(cid)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    else:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        try:
            keys._write_exclusive(path, pem, 0o600)
        except FileExistsError:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pub = keys.PublicKey(raw, f"catalog-{cid}")
    keys.trust(pub)
    return pub


def _signer(catalog: Any):
    """The catalog's private key when this machine has it (cached per connection), else None."""
    cached = getattr(catalog, "_signer_cache", False)
    if cached is not False:
        return cached
    key = None
    cid = catalog_id(catalog)
    if cid and catalog.get_setting("catalog_key"):
        path = _key_path(cid)
        try:
            from cryptography.hazmat.primitives import serialization

            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError):
            key = None
    catalog._signer_cache = key
    return key


def _head(conn: Any) -> tuple[int, str] | None:
    row = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    return (int(row[0]), row[1]) if row else None


def head_seq(conn: Any) -> int:
    h = _head(conn)
    return h[0] if h else 0


def sign_head(catalog: Any, *, private=None, signer_name: str | None = None, note: str = "") -> dict[str, Any] | None:
    """Sign the current head and store the checkpoint row (inside the caller's transaction)."""
    from cryptography.hazmat.primitives import serialization

    from relman.catalog.catalog import utcnow

    head = _head(catalog.conn)
    key = private if private is not None else _signer(catalog)
    if head is None or key is None:
        return None
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    keys = _keys()
    body = {"format": FORMAT, "catalog": catalog_id(catalog), "seq": head[0], "hash": head[1], "at": utcnow(),
            "key": keys.key_id(raw), "signer": signer_name or f"catalog-{catalog_id(catalog)}", "note": note}
    text = canonical(body)
    doc = {"body": body, "signature": base64.b64encode(key.sign(text.encode())).decode(),
           "public": base64.b64encode(raw).decode()}
    catalog.conn.execute("INSERT INTO checkpoints (seq, hash, at, key_id, doc) VALUES (?, ?, ?, ?, ?)",
                         [head[0], head[1], body["at"], body["key"], canonical(doc)])
    return doc


def checkpoint_dir(catalog: Any) -> Path:
    return catalog.root / "checkpoints"


def write_file(catalog: Any, doc: dict[str, Any], *, keep: bool = False) -> None:
    """Replace latest.json (never with an older head); `keep` also writes <seq>.json."""
    from relman.fsutil import atomic_write

    d = checkpoint_dir(catalog)
    try:
        d.mkdir(exist_ok=True)
        data = (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()
        latest = d / "latest.json"
        old = _read_doc(latest)
        if old is None or int(old["body"]["seq"]) <= int(doc["body"]["seq"]):
            # replaced atomically but not fsynced: it is written after every transaction, and
            # the same checkpoint is durable in the database; numbered files are fsynced
            tmp = d / f".latest.{os.getpid()}-{secrets.token_hex(4)}.tmp"
            try:
                tmp.write_bytes(data)
                os.replace(tmp, latest)
            finally:
                tmp.unlink(missing_ok=True)
        if keep:
            atomic_write(d / f"{int(doc['body']['seq']):08d}.json", data)
    except OSError:  # the row in the database is still there
        pass


def _read_doc(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        int(doc["body"]["seq"])
        return doc
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_doc(doc: Any) -> tuple[str, Any]:
    """('ok', key) | ('untrusted', key id) | ('bad', why) for one checkpoint document."""
    keys = _keys()
    try:
        body, sig, raw = doc["body"], base64.b64decode(doc["signature"]), base64.b64decode(doc["public"])
        int(body["seq"]), str(body["hash"])
    except (KeyError, TypeError, ValueError):
        return "bad", "malformed checkpoint"
    trusted = [k for k in keys.trusted_keys() if k.raw == raw]
    if not trusted:
        return "untrusted", keys.key_id(raw)
    if not trusted[0].verify(sig, canonical(body).encode()):
        return "bad", f"signature does not match (key {trusted[0].id})"
    return "ok", trusted[0]


def _candidates(catalog: Any) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    try:
        row = catalog.conn.execute("SELECT doc FROM checkpoints ORDER BY seq DESC, rowid DESC LIMIT 1").fetchone()
        if row:
            out.append(("the database's newest checkpoint", json.loads(row[0])))
    except Exception:
        pass
    d = checkpoint_dir(catalog)
    if d.is_dir():
        docs = [(p, _read_doc(p)) for p in sorted(d.glob("*.json"))]
        docs = [(p, doc) for p, doc in docs if doc is not None]
        if docs:
            p, doc = max(docs, key=lambda pd: int(pd[1]["body"]["seq"]))
            out.append((f"checkpoint file {p}", doc))
    return out


def verify(catalog: Any) -> tuple[list[str], list[str]]:
    """(problems, notes): does the chain reach the newest checkable checkpoint unchanged?"""
    problems: list[str] = []
    notes: list[str] = []
    head = _head(catalog.conn)
    for where, doc in _candidates(catalog):
        status, info = check_doc(doc)
        if status == "untrusted":
            notes.append(f"{where} is signed by key {info}, which is not trusted here (cannot check it)")
            continue
        if status == "bad":
            problems.append(f"{where}: {info} (forged or edited checkpoint)")
            continue
        body = doc["body"]
        cid = catalog_id(catalog)
        if body.get("catalog") and cid and body["catalog"] != cid:
            problems.append(f"{where} belongs to catalog {body['catalog']}, not this one ({cid})")
            continue
        seq, h = int(body["seq"]), body["hash"]
        when = f"signed by {body.get('signer') or info.name} at {str(body.get('at'))[:19]}"
        if head is None or head[0] < seq:
            problems.append(f"audit chain truncated: {where} ({when}) covers event {seq}, but the log "
                            f"{'is empty' if head is None else f'ends at event {head[0]}'} (events deleted)")
            continue
        row = catalog.conn.execute("SELECT hash FROM events WHERE seq = ?", [seq]).fetchone()
        if row is None:
            problems.append(f"audit chain: event {seq}, anchored by {where} ({when}), is missing")
        elif row[0] != h:
            problems.append(f"audit chain rewritten: event {seq} no longer has the hash anchored by {where} "
                            f"({when}); events up to it were edited and their hashes recomputed")
    if head is not None and not any(p for p in problems) and not _candidates(catalog):
        notes.append("the audit chain has no checkpoint yet (run 'relman audit checkpoint')")
    return problems, notes


def latest_checked(catalog: Any) -> dict[str, Any] | None:
    """The newest checkpoint with a valid trusted signature that the chain still reaches."""
    best = None
    for _, doc in _candidates(catalog):
        if check_doc(doc)[0] != "ok":
            continue
        row = catalog.conn.execute("SELECT hash FROM events WHERE seq = ?", [int(doc["body"]["seq"])]).fetchone()
        if row and row[0] == doc["body"]["hash"] and (best is None or doc["body"]["seq"] > best["body"]["seq"]):
            best = doc
    return best


def checkpoint_now(catalog: Any, *, key_name: str | None = None, keep: bool = True) -> dict[str, Any]:
    """Sign the head now (`relman audit checkpoint`): with a person's key, or the catalog's."""
    from relman.errors import RelmanError

    private = None
    if key_name:
        private = _keys().load_private(key_name)
    with catalog.transaction():
        doc = sign_head(catalog, private=private, signer_name=key_name, note="explicit")
    if doc is None:
        raise RelmanError("nothing to checkpoint: the audit log is empty, or this machine has no key for the "
                          "catalog (use --key NAME)")
    write_file(catalog, doc, keep=keep)
    return doc
