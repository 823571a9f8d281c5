"""OpenSSF model signing (sigstore/model-transparency, PyPI `model-signing`) for exported models.

relman's own signatures (manifest.sig, signed approvals, checkpoints) are Ed25519 and only relman
checks them. Beside them an export carries `model.sig`: an OpenSSF model-signing v1.0 signature
(a Sigstore bundle holding a DSSE envelope whose in-toto statement lists every file with its
sha256), made by the `model-signing` library with the key's ECDSA P-256 twin
(`relman.keys.openssf_key_paths`; the library verifies only NIST curves). So anyone can check an
exported folder offline with the unmodified tool:

    model_signing verify key FOLDER --signature FOLDER/model.sig --public_key NAME.p256.pub

The signature covers every file in the folder except `model.sig` itself: the weights and the
model card (README.md, whose front matter and tables hold the evaluation results and the last
gate report), and for a bundle once unpacked also manifest.json and manifest.sig (the metrics
with their conditions, the gate report, approvals, audit excerpt). `.git*` paths are left out,
as the library does by default.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Iterable

from relman.errors import BundleError

SIGNATURE = "model.sig"


def _hashing_config() -> Any:
    """sha256 per file (the v1.0 manifest), model.sig itself and .git* paths left out."""
    from model_signing import hashing

    config = hashing.Config()  # type: ignore[no-untyped-call]
    return config.use_file_serialization(hashing_algorithm="sha256").set_ignored_paths(
        paths=[SIGNATURE], ignore_git_paths=True)


def sign_folder(folder: Path, key_name: str) -> Path:
    """Write `folder/model.sig` over every file in `folder`, signed with `key_name`'s P-256 key."""
    from relman.keys import openssf_key_paths

    priv, _ = openssf_key_paths(key_name)
    try:
        import model_signing
    except ImportError:
        raise BundleError("OpenSSF model signing needs the 'model-signing' package (pip install model-signing)") from None
    out = folder / SIGNATURE
    try:
        (model_signing.signing.Config().use_elliptic_key_signer(private_key=priv)  # type: ignore[no-untyped-call]
         .set_hashing_config(_hashing_config()).sign(folder, out))
    except (ValueError, OSError) as e:
        raise BundleError(f"OpenSSF signing of {folder} failed: {e}") from None
    return out


def verify_folder(folder: Path, public_key: Path, signature: Path | None = None) -> None:
    """Check `folder` against its model.sig with the library's own verifier; raises BundleError."""
    import model_signing
    from cryptography.exceptions import InvalidSignature

    sig = signature or folder / SIGNATURE
    if not sig.is_file():
        raise BundleError(f"{folder}: no {SIGNATURE}")
    try:
        (model_signing.verifying.Config()  # type: ignore[no-untyped-call]
         .use_elliptic_key_verifier(public_key=public_key).verify(folder, sig))
    except InvalidSignature:  # the library lets this through for a forged envelope signature
        raise BundleError(f"{folder}: the OpenSSF signature does not verify (the envelope's signature is "
                          "not this key's)") from None
    except (ValueError, KeyError, TypeError) as e:  # a mismatch, another key, an unreadable model.sig
        raise BundleError(f"{folder}: the OpenSSF signature does not verify ({str(e)[:300]})") from None


def sign_tree(files: Iterable[tuple[str, Path | bytes]], stage: Path, key_name: str) -> bytes:
    """The model.sig of a folder holding `files` ((relative path, source file or bytes)), built in
    `stage` — hard links where the file system allows, so a large model is not copied — and
    removed again; returns the signature's bytes (for a bundle, which is a tar, not a folder)."""
    stage.mkdir()
    try:
        for rel, src in files:
            target = stage / rel
            if not target.resolve().is_relative_to(stage.resolve()):
                raise BundleError(f"file path '{rel}' points outside the bundle")
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(src, bytes):
                target.write_bytes(src)
                continue
            try:
                os.link(src, target)
            except OSError:
                shutil.copyfile(src, target)
        return sign_folder(stage, key_name).read_bytes()
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def verify_trusted(folder: Path) -> Path:
    """Check `folder/model.sig` with each P-256 key trusted here (`relman keys trust`); returns
    the key file that verifies it, or raises BundleError naming why none did."""
    from relman.keys import trusted_dir, trusted_p256

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise BundleError(f"{folder} is not a folder (unpack a bundle first: tar -xf FILE -C FOLDER)")
    trusted = trusted_p256()
    if not trusted:
        raise BundleError(f"no OpenSSF (P-256) key is trusted here ({trusted_dir()}); "
                          "relman keys trust NAME.p256.pub")
    last = ""
    for pem in trusted:
        try:
            verify_folder(folder, pem)
            return pem
        except BundleError as e:
            last = str(e)
            if "Signature mismatch" in last or "envelope" in last:  # the key's own signature: no other will do
                raise
    raise BundleError(f"{folder}: model.sig is not signed by any key trusted here ({last[:200]})")
