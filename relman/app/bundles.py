"""Model cards, signing keys, signed bundles and plain-folder exports, for the GUI and CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from relman.app.release import VersionLike, version_of
from relman.catalog import Catalog
from relman.catalog.catalog import current_user
from relman.release import bundle as _bundle
from relman.release import keys as _keys
from relman.release import modelcard as _card


def model_card(catalog: Catalog, ref: VersionLike) -> str:
    return _card.render_card(catalog, version_of(catalog, ref))


def set_card_fields(catalog: Catalog, ref: VersionLike, fields: Mapping[str, str], *,
                    who: str | None = None) -> dict[str, str]:
    return _card.set_card_fields(catalog, version_of(catalog, ref).id, fields, actor=who or current_user())


def write_model_card(catalog: Catalog, ref: VersionLike, path: Path | str) -> Path:
    return _card.write_model_card(catalog, version_of(catalog, ref).id, path)


def export_bundle(catalog: Catalog, ref: VersionLike, out: Path | str, *, key: str | None = None,
                  progress: Any = None) -> dict[str, Any]:
    return _bundle.export_bundle(catalog, version_of(catalog, ref).id, out, key_name=key, progress=progress)


def import_bundle(catalog: Catalog, path: Path | str, *, who: str | None = None) -> dict[str, Any]:
    return _bundle.import_bundle(catalog, path, actor=who or current_user())


def export_folder(catalog: Catalog, ref: VersionLike, dest: Path | str, fmt: str, *,
                  gguf_type: str = "Q4_K_M", key: str | None = None) -> Path:
    return _bundle.export_folder(catalog, version_of(catalog, ref).id, dest, fmt, gguf_type=gguf_type, key_name=key)


def create_key(name: str) -> dict[str, str]:
    """The one way to make a signing identity (`relman keys create`, the approve and the export
    dialogs all call this): the Ed25519 pair relman's bundles, approvals and checkpoints use and
    its ECDSA P-256 twin for OpenSSF model signatures, both trusted on this machine."""
    pub = _keys.create_key(name)
    return {"name": pub.name, "id": pub.id, "public_key": str(_keys.keys_dir() / f"{name}.pub"),
            "openssf_public_key": str(_keys.p256_paths(name)[1])}


def list_keys() -> list[dict[str, str]]:
    return _keys.list_keys()


def trust_key(path: Path | str) -> dict[str, str]:
    """Trust a public key file of either kind (relman Ed25519 line or OpenSSF P-256 PEM)."""
    got = _keys.trust_file(path)
    if isinstance(got, tuple):
        return {"name": got[1].name[len(got[0]) + 1:-len(f"{_keys.P256_SUFFIX}.pub")], "id": got[0],
                "kind": "openssf-p256"}
    return {"name": got.name, "id": got.id, "kind": "relman-ed25519"}
