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
`verify` checks the database's newest checkpoint and every checkpoint file (signature by a
trusted key) and requires the chain to reach each with the same hash. On a machine that holds
a key made for the catalog (`held`) the anchor is not optional: no checkable checkpoint, a
newest checkpoint by an untrusted key, or events after the newest checked one are failures,
and `sign_head` signs only a chain that was anchored, so relman's next write never signs a
head someone rewrote (issue 26). Elsewhere (a catalog copied from another machine)
checkpoints signed by keys that are not trusted here are reported as notes. Bundles carry a
checkpoint that also lists the carried events (`sign_excerpt`).
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

from relman.catalog import rows
from relman.catalog.clock import utcnow
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
    one on their first open by this code); then anchor the current head. (A fresh catalog
    gets its key in its baseline's transaction instead: `integrity.ensure_baseline`.)"""
    if catalog.get_setting("catalog_key"):
        _register_root(catalog)
        return
    first = not held(catalog)  # a key made for this folder before: its settings were deleted
    if not first and not _accepted_without_key(catalog):
        return  # deleted outside relman: `verify` reports it; restored once a person accepted that
    key = prepare_key(catalog)
    if key is None:  # no writable keys folder: the catalog works, its chain is not anchored
        return
    with catalog.transaction():
        if catalog.get_setting("catalog_key"):
            return
        record_key(catalog, *key, first=first)
        catalog.log_event("catalog-key", {"catalog": key[0], "key": key[1].id})


def _accepted_without_key(catalog: Any) -> bool:
    """Was the catalog_key setting's absence committed (by `audit accept`), not just edited?"""
    key = ("settings", canonical(["catalog_key"]))
    last = rows.committed_records(catalog.conn, only={key}).get(key)
    return last is not None and last[1] is None


def prepare_key(catalog: Any) -> tuple[str, Any] | None:
    """Make (or load) the key for the catalog's id outside any transaction: (id, public key)."""
    cid = catalog_id(catalog) or secrets.token_hex(8)
    try:
        pub = _create_catalog_key(cid)
        _register_root(catalog, cid)
    except OSError:
        return None
    catalog._signer_cache = False  # look the key up again: it exists now
    return cid, pub


def record_key(catalog: Any, cid: str, pub: Any, *, first: bool = True) -> None:
    """Inside the caller's transaction: name the catalog's id and key in its (tracked) settings
    and sign the head at the end; the `first` key signs though no checkpoint anchored it."""
    catalog.conn.execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('catalog_id', ?)", [json.dumps(cid)])
    catalog.conn.execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('catalog_key', ?)",
                         [json.dumps(pub.line().strip())])
    catalog._checkpoint_wanted = True
    catalog._checkpoint_first = first


def _root_text(catalog: Any) -> str:
    return str(Path(catalog.root).resolve())


def _register_root(catalog: Any, cid: str | None = None) -> None:
    """`<keys dir>/catalogs/<id>.root` names the folder the key was made for: a machine that
    holds a key for this folder knows it, even after the catalog's id setting was edited."""
    cid = cid or catalog_id(catalog)
    if not cid or not _key_path(cid).is_file():
        return
    path = _key_path(cid).with_suffix(".root")
    try:
        if not path.is_file():
            path.write_text(_root_text(catalog) + "\n", encoding="utf-8")
    except OSError:
        pass


def held(catalog: Any) -> bool:
    """Does this machine hold a signing key made for this catalog (by its id, or by its folder)?
    Then every event must be anchored by a checkpoint this machine can check."""
    cid = catalog_id(catalog)
    if cid and _key_path(cid).is_file():
        return True
    d = _keys().keys_dir() / "catalogs"
    me = _root_text(catalog)
    try:
        return any(p.read_text(encoding="utf-8").strip() == me and p.with_suffix(".key").is_file()
                   for p in d.glob("*.root"))
    except OSError:
        return False


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
        if key is not None and not _trusted_raw(_raw(key)):
            key = None  # its public half is not trusted here: what it signs could not be checked
    catalog._signer_cache = key
    return key


def _raw(private: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _trusted_raw(raw: bytes) -> bool:
    return any(k.raw == raw for k in _keys().trusted_keys())


def _head(conn: Any) -> tuple[int, str] | None:
    row = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    return (int(row[0]), row[1]) if row else None


def head_seq(conn: Any) -> int:
    h = _head(conn)
    return h[0] if h else 0


def sign_head(catalog: Any, *, private=None, signer_name: str | None = None, note: str = "",
              after: int | None = None, force: bool = False) -> dict[str, Any] | None:
    """Sign the current head and store the checkpoint row (inside the caller's transaction).

    Only a chain that was anchored gets signed: the newest checkpoint row must verify and the
    chain must still reach it (at `after`, the head before this transaction, when given), so
    that relman's next write never signs a head someone rewrote with the checkpoints deleted
    or replaced. `force` (accepting a reviewed state, the first key of a catalog) skips that."""
    head = _head(catalog.conn)
    key = private if private is not None else _signer(catalog)
    if head is None or key is None:
        return None
    if not force and not _anchored(catalog, key, head if after is None else (after, None)):
        return None
    raw = _raw(key)
    keys = _keys()
    body = {"format": FORMAT, "catalog": catalog_id(catalog), "seq": head[0], "hash": head[1], "at": utcnow(),
            "key": keys.key_id(raw), "signer": signer_name or f"catalog-{catalog_id(catalog)}", "note": note}
    text = canonical(body)
    doc = {"body": body, "signature": base64.b64encode(key.sign(text.encode())).decode(),
           "public": base64.b64encode(raw).decode()}
    catalog.conn.execute("INSERT INTO checkpoints (seq, hash, at, key_id, doc) VALUES (?, ?, ?, ?, ?)",
                         [head[0], head[1], body["at"], body["key"], canonical(doc)])
    return doc


def _anchored(catalog: Any, key: Any, upto: tuple[int, str | None]) -> bool:
    """Was the chain up to `upto` (seq, hash or None) anchored by the newest checkpoint row?
    An empty log before this transaction needs no anchor. Checked with the signer's own public
    half when it signed the row (cheap: this runs at every write), else with the trusted keys."""
    seq0 = upto[0]
    row = catalog.conn.execute("SELECT doc FROM checkpoints ORDER BY seq DESC, rowid DESC LIMIT 1").fetchone()
    if row is None:
        return seq0 == 0
    try:
        doc = json.loads(row[0])
        body = doc["body"]
        seq, h = int(body["seq"]), str(body["hash"])
    except (ValueError, KeyError, TypeError):
        return False
    if seq < seq0:
        return False  # events after the last checkpoint were never signed
    ev = catalog.conn.execute("SELECT hash FROM events WHERE seq = ?", [seq]).fetchone()
    if ev is None or ev[0] != h:
        return False
    raw = _raw(key)
    try:
        same = base64.b64decode(doc["public"]) == raw
    except (KeyError, TypeError, ValueError):
        return False
    if same:
        from cryptography.exceptions import InvalidSignature

        try:
            key.public_key().verify(base64.b64decode(doc["signature"]), canonical(body).encode())
            return True
        except (InvalidSignature, KeyError, TypeError, ValueError):
            return False
    return check_doc(doc)[0] == "ok"


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
    """The database's newest checkpoint row and every checkpoint file (a forged file beside a
    genuine one is found whatever its seq)."""
    out: list[tuple[str, dict[str, Any]]] = []
    try:
        row = catalog.conn.execute("SELECT doc FROM checkpoints ORDER BY seq DESC, rowid DESC LIMIT 1").fetchone()
        if row:
            out.append(("the database's newest checkpoint", json.loads(row[0])))
    except Exception:
        pass
    d = checkpoint_dir(catalog)
    if d.is_dir():
        for p in sorted(d.glob("*.json")):
            doc = _read_doc(p)
            if doc is None:
                if not p.name.startswith("."):
                    out.append((f"checkpoint file {p}", {}))  # unreadable: reported as malformed
                continue
            out.append((f"checkpoint file {p}", doc))
    return out


def verify(catalog: Any) -> tuple[list[str], list[str]]:
    """(problems, notes): does the chain reach every checkable checkpoint unchanged?

    Where this machine holds a key made for the catalog (`held`), the anchor is not optional:
    a log with events but no checkpoint this machine can check, a newest checkpoint signed by
    a key not trusted here, or events after the newest checked checkpoint are problems (a
    forger who rewrote the chain deletes or replaces the checkpoints). Elsewhere (a catalog
    copied from another machine) checkpoints by unknown keys are notes."""
    problems: list[str] = []
    notes: list[str] = []
    head = _head(catalog.conn)
    strict = held(catalog)
    newest_ok = -1
    newest_any: tuple[int, str, str] | None = None  # (seq, where, status)
    for where, doc in _candidates(catalog):
        status, info = check_doc(doc)
        if status != "bad":
            seq_any = int(doc["body"]["seq"])
            if newest_any is None or seq_any > newest_any[0]:
                newest_any = (seq_any, where, status if status == "untrusted" else "ok")
        if status == "untrusted":
            if not strict:
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
        else:
            newest_ok = max(newest_ok, seq)
    if head is not None and strict and not problems:
        if newest_any is not None and newest_any[2] == "untrusted":
            problems.append(f"audit chain: the newest checkpoint ({newest_any[1]}, event {newest_any[0]}) is "
                            "signed by a key not trusted here, though this machine holds the catalog's key "
                            "(checkpoints replaced?)")
        elif newest_ok < 0:
            problems.append("audit chain: no checkpoint this machine can check, though it holds the catalog's key "
                            "(checkpoints deleted?); 'relman audit accept' after a review")
        elif newest_ok < head[0]:
            problems.append(f"audit chain: events {newest_ok + 1}..{head[0]} come after the newest signed "
                            f"checkpoint (event {newest_ok}) and were never signed (appended outside relman?)")
    elif head is not None and not problems and newest_ok < 0:
        notes.append("the audit chain has no checkpoint this machine can check (a catalog from another machine; "
                      "trust its key with 'relman keys trust')")
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
    """Sign the head now (`relman audit checkpoint`): with a person's key, or the catalog's
    (refused when its public half is not trusted here, or the chain is not anchored: that is
    `relman audit accept`, which records what it accepts)."""
    from relman.errors import IntegrityError, RelmanError

    private = None
    if key_name:
        private = _keys().load_private(key_name)
    elif catalog.get_setting("catalog_key") and _signer(catalog) is None and _key_path(str(catalog_id(catalog))).is_file():
        raise RelmanError("the catalog's key is not trusted on this machine (its public half is not in "
                          f"{_keys().trusted_dir()}); refusing to sign with it")
    with catalog.transaction():
        head = _head(catalog.conn)
        key = private if private is not None else _signer(catalog)
        if head is not None and key is not None and not _anchored(catalog, key, head):
            raise IntegrityError("refusing to checkpoint: the audit chain is not anchored by a checkpoint this "
                                 "machine can check; run 'relman verify', then 'relman audit accept --why'")
        doc = sign_head(catalog, private=private, signer_name=key_name, note="explicit")
    if doc is None:
        raise RelmanError("nothing to checkpoint: the audit log is empty, or this machine has no key for the "
                          "catalog (use --key NAME)")
    write_file(catalog, doc, keep=keep)
    return doc


def sign_excerpt(catalog: Any, events: list[dict[str, Any]]) -> dict[str, Any]:
    """A checkpoint of the head that also lists the (seq, hash) of `events`, signed with the
    catalog's key now (a bundle's anchor: the importer checks every carried event against it,
    without being sent the whole log). Not stored: it commits nothing. The caller has verified
    the catalog first."""
    from relman.errors import IntegrityError

    key = _signer(catalog)
    head = _head(catalog.conn)
    if key is None or head is None:
        raise IntegrityError("cannot sign the bundle's audit excerpt: this machine does not hold the catalog's key "
                             "(or its public half is not trusted here)")
    raw = _raw(key)
    body = {"format": FORMAT, "catalog": catalog_id(catalog), "seq": head[0], "hash": head[1], "at": utcnow(),
            "key": _keys().key_id(raw), "signer": f"catalog-{catalog_id(catalog)}", "note": "bundle",
            "events": [[int(e["seq"]), e["hash"]] for e in events]}
    return {"body": body, "signature": base64.b64encode(key.sign(canonical(body).encode())).decode(),
            "public": base64.b64encode(raw).decode()}
