"""Ed25519 signing keys, kept outside the catalog.

Private keys live in `RELMAN_KEYS_DIR` (else the per-user config folder, `.../relman/keys`)
as `<name>.key` (PKCS#8 PEM, file mode 0600, created exclusively so an existing key is never
overwritten), with `<name>.pub` beside them. Public keys this machine trusts for imports live
in `<keys dir>/trusted/<key id>.pub`; a key you create is trusted on this machine at once.
A public-key file is one line: `relman-ed25519 <base64 of the 32 raw bytes> <name>`; the key
id is the first 16 hex digits of the sha256 of the raw bytes.

Each key pair also has an ECDSA P-256 twin for OpenSSF model signing (`relman.release.openssf`):
`<name>.p256.key` (PKCS#8 PEM, 0600) and `<name>.p256.pub` (SubjectPublicKeyInfo PEM, the file
`model_signing verify key --public_key` takes). The model-signing library verifies only NIST
curves, not Ed25519 (sigstore/model-transparency#390), so the two cannot be one key; instead
`create_key` makes both at once and `trust_file` takes either public-key file, and a key made
before the twin existed gets its twin on first use (`openssf_key_paths`). A trusted P-256 key
lives in `<keys dir>/trusted/<key id>.p256.pub`, its id the first 16 hex digits of the sha256
of its DER encoding.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from relman.errors import BundleError, NotFound, RelmanError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

PREFIX = "relman-ed25519"
P256_SUFFIX = ".p256"  # <name>.p256.key / <name>.p256.pub: the OpenSSF (ECDSA P-256) twin
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def keys_dir() -> Path:
    env = os.environ.get("RELMAN_KEYS_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("relman", appauthor=False)) / "keys"


def trusted_dir() -> Path:
    return keys_dir() / "trusted"


def key_id(raw_public: bytes) -> str:
    return hashlib.sha256(raw_public).hexdigest()[:16]


@dataclass
class PublicKey:
    raw: bytes
    name: str

    @property
    def id(self) -> str:
        return key_id(self.raw)

    def line(self) -> str:
        return f"{PREFIX} {base64.b64encode(self.raw).decode()} {self.name}\n"

    def verify(self, signature: bytes, data: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, data)
            return True
        except InvalidSignature:
            return False


def parse_public(text: str, source: str = "public key") -> PublicKey:
    parts = text.strip().split()
    if len(parts) < 2 or parts[0] != PREFIX:
        raise RelmanError(f"{source}: not a relman public key (expected '{PREFIX} <base64> <name>')")
    try:
        raw = base64.b64decode(parts[1], validate=True)
    except ValueError:
        raise RelmanError(f"{source}: the key is not valid base64") from None
    if len(raw) != 32:
        raise RelmanError(f"{source}: an Ed25519 public key has 32 bytes, this one {len(raw)}")
    return PublicKey(raw, parts[2] if len(parts) > 2 else "")


def _check_name(name: str) -> None:
    if not _NAME.match(name or ""):
        raise RelmanError(f"'{name}' is not a usable key name (letters, digits, '.', '_', '-'; up to 64)")


def _write_exclusive(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(path, mode)


def create_key(name: str) -> PublicKey:
    """Make a new Ed25519 key pair `name`; refuses to overwrite an existing one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    _check_name(name)
    d = keys_dir()
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    priv_path = d / f"{name}.key"
    if priv_path.exists():
        raise RelmanError(f"key '{name}' already exists ({priv_path}); choose another name")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pub = PublicKey(raw, name)
    try:
        _write_exclusive(priv_path, pem, 0o600)
    except FileExistsError:
        raise RelmanError(f"key '{name}' already exists ({priv_path}); choose another name") from None
    (d / f"{name}.pub").write_text(pub.line())
    trust(pub)
    _create_p256(name)
    return pub


def p256_paths(name: str) -> tuple[Path, Path]:
    """(private, public) PEM paths of key `name`'s ECDSA P-256 twin (they may not exist yet)."""
    _check_name(name)
    d = keys_dir()
    return d / f"{name}{P256_SUFFIX}.key", d / f"{name}{P256_SUFFIX}.pub"


def _create_p256(name: str) -> Path:
    """Make the P-256 twin of key `name` (exclusively; an existing one is kept) and trust it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    priv_path, pub_path = p256_paths(name)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        _write_exclusive(priv_path, pem, 0o600)
    except FileExistsError:
        return pub_path
    pub_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    pub_path.write_bytes(pub_pem)
    trust_p256_pem(pub_pem, str(pub_path), name)
    return pub_path


def openssf_key_paths(name: str) -> tuple[Path, Path]:
    """The P-256 (private, public) key files of `name`, made now if the key pair predates them.
    Refuses a key name with no Ed25519 private key here (one identity, two algorithms)."""
    load_private(name)  # the same checks (exists, mode 0600) and error text as relman's own key
    priv_path, pub_path = p256_paths(name)
    if not priv_path.exists():
        _create_p256(name)
    if os.name != "nt" and priv_path.stat().st_mode & 0o077:
        raise RelmanError(f"{priv_path} is readable by other users (mode {oct(priv_path.stat().st_mode & 0o777)}); "
                          "run: chmod 600 " + str(priv_path))
    if not pub_path.is_file():  # the public half can always be rewritten from the private one
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_private_key(priv_path.read_bytes(), password=None)
        pub_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv_path, pub_path


def _p256_der(pem: bytes, source: str) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise RelmanError(f"{source}: not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise RelmanError(f"{source}: not an ECDSA P-256 public key (OpenSSF model signing keys are P-256)")
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def trust_p256_pem(pem: bytes, source: str = "public key", name: str = "") -> tuple[str, Path]:
    """Trust an ECDSA P-256 public key (PEM) for OpenSSF model signatures; returns (id, path).
    Stored as `trusted/<id>.<name>.p256.pub` (a re-trust under another name replaces it)."""
    from cryptography.hazmat.primitives import serialization

    der = _p256_der(pem, source)
    kid = key_id(der)
    if name and not _NAME.match(name):
        name = ""
    t = trusted_dir()
    t.mkdir(parents=True, exist_ok=True)
    for old in t.glob(f"{kid}.*{P256_SUFFIX}.pub"):
        old.unlink()
    path = t / f"{kid}.{name or 'unnamed'}{P256_SUFFIX}.pub"
    path.write_bytes(serialization.load_der_public_key(der).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return kid, path


def trusted_p256() -> list[Path]:
    """PEM files of the P-256 keys trusted here for OpenSSF model signatures."""
    t = trusted_dir()
    return sorted(t.glob(f"*{P256_SUFFIX}.pub")) if t.is_dir() else []


def load_private(name: str) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    _check_name(name)
    path = keys_dir() / f"{name}.key"
    if not path.is_file():
        known = ", ".join(k["name"] for k in list_keys()) or "none"
        raise NotFound(f"no signing key '{name}' in {keys_dir()} (keys: {known}; create one with 'relman keys create')")
    if os.name != "nt" and path.stat().st_mode & 0o077:
        raise RelmanError(f"{path} is readable by other users (mode {oct(path.stat().st_mode & 0o777)}); "
                          "run: chmod 600 " + str(path))
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise RelmanError(f"{path} is not an Ed25519 key")
    return key


def public_of(name: str) -> PublicKey:
    from cryptography.hazmat.primitives import serialization

    raw = load_private(name).public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PublicKey(raw, name)


def sign(name: str, data: bytes) -> tuple[PublicKey, bytes]:
    key = load_private(name)
    return public_of(name), key.sign(data)


def list_keys() -> list[dict[str, str]]:
    """Own key pairs and trusted public keys."""
    out = []
    d = keys_dir()
    if d.is_dir():
        for p in sorted(d.glob("*.pub")):
            if p.name.endswith(f"{P256_SUFFIX}.pub"):
                continue  # listed with its Ed25519 twin
            try:
                pub = parse_public(p.read_text(), str(p))
            except RelmanError:
                continue
            twin = d / f"{p.stem}{P256_SUFFIX}.pub"
            out.append({"name": p.stem, "id": pub.id, "kind": "own" if (d / f"{p.stem}.key").exists() else "public",
                        "path": str(p), "openssf_public_key": str(twin) if twin.is_file() else ""})
    for pub in trusted_keys():
        out.append({"name": pub.name, "id": pub.id, "kind": "trusted", "path": str(trusted_dir() / f"{pub.id}.pub")})
    for p in trusted_p256():
        kid, _, name = p.name[:-len(f"{P256_SUFFIX}.pub")].partition(".")
        out.append({"name": name, "id": kid, "kind": "trusted-p256", "path": str(p)})
    return out


def trust(pub: PublicKey) -> Path:
    t = trusted_dir()
    t.mkdir(parents=True, exist_ok=True)
    path = t / f"{pub.id}.pub"
    path.write_text(pub.line())
    return path


def trust_file(path: Path | str) -> PublicKey | tuple[str, Path]:
    """Trust the public key in `path`: a relman Ed25519 line (bundles, approvals, checkpoints)
    or a P-256 PEM (OpenSSF model signatures). The one trust step for both kinds."""
    path = Path(path).expanduser()
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise RelmanError(f"cannot read public key {path} ({getattr(e, 'strerror', None) or e})") from None
    if text.lstrip().startswith("-----BEGIN PUBLIC KEY-----"):
        stem = path.name[:-len(f"{P256_SUFFIX}.pub")] if path.name.endswith(f"{P256_SUFFIX}.pub") else path.stem
        return trust_p256_pem(text.encode(), str(path), stem)
    pub = parse_public(text, str(path))
    trust(pub)
    return pub


def trusted_keys() -> list[PublicKey]:
    out = []
    t = trusted_dir()
    if t.is_dir():
        for p in sorted(t.glob("*.pub")):
            if p.name.endswith(f"{P256_SUFFIX}.pub"):
                continue
            try:
                out.append(parse_public(p.read_text(), str(p)))
            except RelmanError:
                continue
    return out


def find_trusted(raw: bytes) -> PublicKey:
    for pub in trusted_keys():
        if pub.raw == raw:
            return pub
    raise BundleError(f"signed by key {key_id(raw)}, which is not trusted here "
                      f"(add its public key with 'relman keys trust PUBFILE'; trusted keys: {trusted_dir()})")


def default_key_name() -> str:
    own = [k["name"] for k in list_keys() if k["kind"] == "own"]
    if len(own) == 1:
        return own[0]
    if not own:
        raise NotFound(f"no signing key in {keys_dir()}; create one with 'relman keys create NAME'")
    raise RelmanError(f"several signing keys ({', '.join(own)}); choose one with --key NAME")
