"""Tags: free labels beside phases (`relman tag minilm@1.2.0 baseline`).

A tag names versions the way people talk about them ("baseline", "paper-v2"); `model@tag`
resolves when exactly one live version of the model carries it. Tag and untag each append an
audit event in the same transaction as the row. Names are checked here with a simple local
rule (the catalog-wide name validation may later replace it): no whitespace, control or
invisible characters, and nothing that would shadow `latest`, a phase or a version number.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from relman.catalog import Catalog
from relman.catalog import integrity
from relman.catalog import semver
from relman.catalog.catalog import PHASES, current_user, utcnow
from relman.errors import HousekeepingError

MAX_TAG_LENGTH = 64
_RESERVED = {"latest", *PHASES}
_FORBIDDEN_CHARS = "@/,:\"'`"


def check_tag_name(name: str) -> str:
    """The tag name as given, or a one-line error saying what is wrong with it."""
    if not isinstance(name, str) or not name:
        raise HousekeepingError("a tag needs a name (e.g. 'baseline')")
    for ch in name:
        cat = unicodedata.category(ch)
        if ch.isspace() or cat.startswith("C") or cat in ("Zl", "Zp", "Zs"):
            raise HousekeepingError(f"tag {name!r} contains whitespace or an invisible/control character "
                                    f"(U+{ord(ch):04X}); use letters, digits, '-', '_' or '.'")
        if ch in _FORBIDDEN_CHARS or ch in "<>=!":
            raise HousekeepingError(f"tag {name!r} contains '{ch}'; use letters, digits, '-', '_' or '.'")
    if len(name) > MAX_TAG_LENGTH:
        raise HousekeepingError(f"tag {name[:20]!r}… is longer than {MAX_TAG_LENGTH} characters")
    if name.lower() in _RESERVED or semver.is_semver(name) or re.fullmatch(r"v?\d+(\.\d+)*", name):
        raise HousekeepingError(f"'{name}' would read as a version, 'latest' or a phase in MODEL@{name}; "
                                "choose another tag")
    from relman.names import check_name

    return check_name(name, "tag")  # the one allowed character set (README, Names)


def tag_version(catalog: Catalog, ref: str, name: str, *, who: str | None = None) -> dict[str, Any]:
    name = check_tag_name(name)
    who = who or current_user()
    v = catalog.resolve(ref)
    with catalog.transaction():
        at = utcnow()
        if not catalog.add_tag(v.id, name, actor=who, at=at):
            raise HousekeepingError(f"{v.ref} already has tag '{name}'")
        integrity.commit_event(catalog.db, at=at, actor=who, kind="tag", model=v.model, version=v.version,
                               payload={"tag": name})
    return {"ref": v.ref, "tag": name, "tags": catalog.tags(v.id)}


def untag_version(catalog: Catalog, ref: str, name: str, *, who: str | None = None) -> dict[str, Any]:
    who = who or current_user()
    v = catalog.resolve(ref)
    with catalog.transaction():
        if not catalog.remove_tag(v.id, name):
            have = ", ".join(catalog.tags(v.id)) or "none"
            raise HousekeepingError(f"{v.ref} has no tag '{name}' (its tags: {have})")
        integrity.commit_event(catalog.db, at=utcnow(), actor=who, kind="untag", model=v.model, version=v.version,
                               payload={"tag": name})
    return {"ref": v.ref, "tag": name, "tags": catalog.tags(v.id)}


def all_tags(catalog: Catalog) -> dict[int, list[str]]:
    """version id → its tags (live versions), in one query."""
    out: dict[int, list[str]] = {}
    for vid, name in catalog.conn.execute("SELECT version_id, name FROM tags ORDER BY name"):
        out.setdefault(vid, []).append(name)
    return out
