"""Secure aggregation for file-based federated averaging of LoRA adapters.

Sites that exchange files (no site online with another) agree on a key list: one X25519 public
key per site. Each site masks its weighted adapter update with one pairwise mask per peer and
sends only the masked file; the merging site adds the files and every mask cancels, leaving the
exact weighted sum, so it learns the FedAvg and nothing about any single site's update.

Why this construction (Bonawitz et al., "Practical Secure Aggregation", without the online
rounds Flower's SecAggPlus needs):
- Pair secret: X25519 between the two sites' keys (each computes it from its own private key
  and the peer's public key; no message is exchanged). HKDF-SHA256 over it, salted with the key
  list's digest and bound to the round id, gives the pair's seed for the round; HMAC of the seed
  and a tensor name keys a ChaCha20 stream, the mask of that tensor. The round id is part of
  every seed, so masks never repeat across rounds; a site refuses to mask twice for one round
  id (a marker in the keys folder), since two masked files of one round differ by the
  difference of the true updates.
- Signs: for the pair (i, j) the site with the lower key id adds the mask, the other subtracts
  it, so the pair's masks sum to zero.
- Arithmetic: updates are encoded in fixed point (FRACTION_BITS fractional bits, two's
  complement int64) and masked modulo 2**64 with uniform 64-bit masks. Modular arithmetic makes
  cancellation exact (floating-point masks would lose the update to rounding) and a single
  masked value is uniform whatever the update (a one-time pad), so a masked file alone reveals
  nothing. The encoding's rounding error is at most 2**-33 per value; a value too large for
  the range (|v| x sites >= 2**(63 - FRACTION_BITS)) is refused, never wrapped.

What is masked: the FedAvg of adapters averages each layer's update ΔW = B A (see merge.py),
which is not linear in A and B, so each site masks n_k ΔW_k (dense, out x in) for every adapted
layer, n_k t for every other saved tensor (the head), and its example count n_k itself. The
merger divides the summed update by the summed count: weighted FedAvg, and the weights stay
secret too (only their total is learnt). The count is the adapter's recorded `train_samples`,
a count given by the site, or 1 for every site ("equal"); mixing "equal" with counts is refused.
In clear in each file: the round, the key list, the site's key id, the adapter's config and base
pin, tensor names and shapes, and its privacy ledger (needed to compose ε).

Drop-out rule: the round is refused. The merge needs one masked file from every site in the key
list; with any missing the masks do not cancel, so the merge names the missing sites and stores
nothing. The sites then mask again for a new round id with a key list without the missing site.
Why not reveal the dropped site's pair seeds: in a file exchange a "dropped" site's file may
still arrive later, and with its seeds revealed the merger could unmask it (SecAgg prevents that
with a second, self mask and secret sharing, which needs the online rounds this avoids).
Trust model: honest-but-curious merger; sites do not collude with it. Two sites are the
minimum (with two, each learns the other's update from the result, as with any FedAvg).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from relman import keys
from relman.errors import RecipeError

FORMAT = "relman-secagg-v1"
PREFIX = "relman-x25519"
SUFFIX = ".x25519"  # <name>.x25519.key (PKCS#8 PEM, 0600) / <name>.x25519.pub beside the signing keys
FRACTION_BITS = 32
MASKED_SUFFIX = ".secagg.safetensors"
_COUNT = "__count__"
_ROUND = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


# -- keys -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SiteKey:
    raw: bytes
    name: str

    @property
    def id(self) -> str:
        return keys.key_id(self.raw)

    def line(self) -> str:
        return f"{PREFIX} {base64.b64encode(self.raw).decode()} {self.name}\n"


def key_paths(name: str) -> tuple[Path, Path]:
    d = keys.keys_dir()
    return d / f"{name}{SUFFIX}.key", d / f"{name}{SUFFIX}.pub"


def create_site_key(name: str) -> SiteKey:
    """A new X25519 key pair for secure aggregation (separate from the Ed25519 signing keys: a
    key-agreement key is not a signing key); never overwrites one. Only the public line is
    shared (it goes into the key list); nothing goes into the catalog."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    keys._check_name(name)
    priv_path, pub_path = key_paths(name)
    priv_path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(priv_path.parent, 0o700)
    key = X25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    site = SiteKey(key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw), name)
    try:
        keys._write_exclusive(priv_path, pem, 0o600)
    except FileExistsError:
        raise RecipeError(f"secure-aggregation key '{name}' already exists ({priv_path}); choose another name") from None
    pub_path.write_text(site.line(), encoding="utf-8")
    return site


def load_site_key(name: str) -> tuple[Any, SiteKey]:
    """(private key, public SiteKey) of this site's key `name`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    keys._check_name(name)
    priv_path, _ = key_paths(name)
    if not priv_path.is_file():
        raise RecipeError(f"no secure-aggregation key '{name}' in {priv_path.parent}; create it with "
                          f"'relman federated key {name}'")
    key = serialization.load_pem_private_key(priv_path.read_bytes(), password=None)
    if not isinstance(key, X25519PrivateKey):
        raise RecipeError(f"{priv_path} is not an X25519 key")
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return key, SiteKey(raw, name)


def parse_key_line(text: str, where: str) -> SiteKey:
    parts = text.strip().split()
    if len(parts) == 1:
        raise RecipeError(f"{where}: site '{parts[0]}' has no public key (expected '{PREFIX} <base64> <name>'); "
                          "a missing peer key: nothing masked")
    if len(parts) < 3 or parts[0] != PREFIX:
        raise RecipeError(f"{where}: not a secure-aggregation public key (expected '{PREFIX} <base64> <name>')")
    try:
        raw = base64.b64decode(parts[1], validate=True)
    except ValueError:
        raise RecipeError(f"{where}: the key of site '{parts[2]}' is not valid base64") from None
    if len(raw) != 32:
        raise RecipeError(f"{where}: an X25519 public key has 32 bytes, site '{parts[2]}' has {len(raw)}")
    return SiteKey(raw, parts[2])


def read_key_list(path: Path | str) -> list[SiteKey]:
    """The round's key list: one `relman-x25519 <base64> <name>` line per site ('#' comments);
    a site named without a key is a missing peer key and refused. Sorted by key id."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"key list {path} not found")
    sites: list[SiteKey] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            sites.append(parse_key_line(line, f"{path}:{n}"))
    ids = [s.id for s in sites]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise RecipeError(f"{path}: key {dup[0]} is listed twice")
    if len(sites) < 2:
        raise RecipeError(f"{path}: secure aggregation needs at least two sites, the list has {len(sites)}")
    return sorted(sites, key=lambda s: s.id)


def roster_digest(sites: list[SiteKey]) -> str:
    return hashlib.sha256("".join(s.id + "\n" for s in sorted(sites, key=lambda s: s.id)).encode()).hexdigest()


# -- masks ----------------------------------------------------------------------------------------
def pair_seed(private: Any, peer: SiteKey, roster_sha: str, round_id: str) -> bytes:
    """The pair's 32-byte seed for this round: HKDF-SHA256 of the X25519 shared secret."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    shared = private.exchange(X25519PublicKey.from_public_bytes(peer.raw))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=bytes.fromhex(roster_sha),
                info=f"{FORMAT} round {round_id}".encode()).derive(shared)


def mask_stream(seed: bytes, tensor: str, count: int) -> np.ndarray:
    """`count` uniform uint64 values: ChaCha20 keyed by HMAC(seed, tensor name)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    key = hmac.new(seed, f"tensor {tensor}".encode(), hashlib.sha256).digest()
    enc = Cipher(algorithms.ChaCha20(key, b"\0" * 16), mode=None).encryptor()
    return np.frombuffer(enc.update(b"\0" * (8 * count)), dtype="<u8").astype(np.uint64)


def encode(values: np.ndarray, sites: int, what: str) -> np.ndarray:
    """Fixed point, two's complement, as uint64; refuses a value the sum could overflow."""
    scaled = np.rint(np.asarray(values, dtype=np.float64) * float(2 ** FRACTION_BITS))
    limit = float(2 ** 63) / sites
    if not np.all(np.isfinite(scaled)) or (scaled.size and float(np.abs(scaled).max()) >= limit):
        raise RecipeError(f"cannot mask {what}: a value is not finite or too large for the fixed-point range "
                          f"(|value| must stay below {limit / 2 ** FRACTION_BITS:.3g} with {sites} sites)")
    return scaled.astype(np.int64).view(np.uint64)


def decode(summed: np.ndarray) -> np.ndarray:
    return summed.view(np.int64).astype(np.float64) / float(2 ** FRACTION_BITS)


# -- the site's side --------------------------------------------------------------------------------
def adapter_update(folder: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray], list[list[Any]]]:
    """(pin, peft config, tensors to mask, LoRA pairs [a, b, a shape, b shape]) of an adapter
    folder: each pair's dense update B A under the A name, every other tensor as it is."""
    from safetensors.numpy import load_file

    from relman.compress.adapt.merge import lora_pairs
    from relman.modelio import peft_adapter

    pin = peft_adapter.check_adapter_folder(folder)
    cfg = peft_adapter.check_peft_config(folder / peft_adapter.PEFT_CONFIG)
    tensors = load_file(str(folder / peft_adapter.WEIGHTS))
    pairs = lora_pairs(list(tensors))
    paired = {n for p in pairs for n in p}
    out: dict[str, np.ndarray] = {}
    described = []
    for a_name, b_name in pairs:
        a, b = tensors[a_name].astype(np.float64), tensors[b_name].astype(np.float64)
        out[a_name] = b.reshape(b.shape[0], -1) @ a.reshape(a.shape[0], -1)
        described.append([a_name, b_name, list(a.shape), list(b.shape)])
    for name, t in tensors.items():
        if name not in paired:
            if not np.issubdtype(t.dtype, np.floating):
                raise RecipeError(f"adapter tensor {name} is {t.dtype}: only float tensors can be averaged")
            out[name] = t.astype(np.float64)
    return pin, cfg, out, described


def _claim_round(site: SiteKey, round_id: str) -> Path:
    """Refuse a second masking by this key for this round (masks must never repeat)."""
    d = keys.keys_dir() / "secagg-rounds" / site.id
    d.mkdir(parents=True, exist_ok=True)
    marker = d / hashlib.sha256(round_id.encode()).hexdigest()
    try:
        keys._write_exclusive(marker, (round_id + "\n").encode(), 0o600)
    except FileExistsError:
        raise RecipeError(f"key '{site.name}' already masked an update for round '{round_id}'; masks must never "
                          "repeat, so every round needs a new round id") from None
    return marker


def mask_adapter(folder: Path, *, key_name: str, key_list: Path | str, round_id: str, out: Path | str,
                 samples: float | None, weight_mode: str, privacy: dict[str, Any] | None = None,
                 site_version: str = "") -> dict[str, Any]:
    """Write this site's masked update of the adapter in `folder` to `out`; returns the header.
    Every check (key list, own key, round, values) happens before anything is written; the file
    appears whole (written beside, then renamed) or not at all."""
    from safetensors.numpy import save_file

    out = Path(out)
    if not _ROUND.match(round_id or ""):
        raise RecipeError(f"round id '{round_id}' is not usable (letters, digits, '.', '_', ':', '-'; up to 128)")
    if out.exists():
        raise RecipeError(f"{out} already exists; a masked update is never overwritten")
    if weight_mode not in ("train_samples", "given", "equal"):
        raise RecipeError(f"unknown weight mode '{weight_mode}'")
    count = 1.0 if weight_mode == "equal" else samples
    if count is None or not count > 0 or not np.isfinite(count):
        raise RecipeError(f"the example count must be a positive number, got {samples}")
    sites = read_key_list(key_list)
    private, me = load_site_key(key_name)
    if me.id not in {s.id for s in sites}:
        raise RecipeError(f"this site's key '{key_name}' ({me.id}) is not in the key list {key_list}")
    roster_sha = roster_digest(sites)
    pin, cfg, update, pairs = adapter_update(Path(folder))
    encoded = {name: encode(value * count, len(sites), f"tensor {name}") for name, value in sorted(update.items())}
    encoded[_COUNT] = encode(np.array([count]), len(sites), "the example count")
    marker = _claim_round(me, round_id)
    tmp = out.with_name(out.name + ".part")
    try:
        for peer in sites:
            if peer.id == me.id:
                continue
            seed = pair_seed(private, peer, roster_sha, round_id)
            for name, arr in encoded.items():
                m = mask_stream(seed, name, arr.size).reshape(arr.shape)
                encoded[name] = arr + m if me.id < peer.id else arr - m  # uint64: modulo 2**64
        header = {"format": FORMAT, "round": round_id, "roster_sha256": roster_sha,
                  "roster": [{"id": s.id, "name": s.name, "public": base64.b64encode(s.raw).decode()} for s in sites],
                  "site": me.id, "site_name": me.name, "site_version": site_version,
                  "fraction_bits": FRACTION_BITS, "weight_mode": weight_mode, "pin": pin, "peft_config": cfg,
                  "pairs": pairs, "shapes": {n: list(a.shape) for n, a in encoded.items()}, "privacy": privacy}
        out.parent.mkdir(parents=True, exist_ok=True)
        save_file({n: np.ascontiguousarray(a) for n, a in encoded.items()}, str(tmp),
                  metadata={"relman_secagg": json.dumps(header, sort_keys=True)})
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        marker.unlink(missing_ok=True)  # nothing was sent: the round id may be used again
        raise
    return header


# -- the merging site's side ------------------------------------------------------------------------
def read_header(path: Path | str) -> dict[str, Any]:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"masked update {path} not found")
    try:
        with safe_open(str(path), framework="numpy") as st:
            meta = st.metadata() or {}
    except Exception as e:  # noqa: BLE001 - any unreadable file is one line
        raise RecipeError(f"{path} is not a masked update file ({type(e).__name__})") from None
    try:
        header = json.loads(meta["relman_secagg"])
    except (KeyError, ValueError):
        raise RecipeError(f"{path} is not a relman masked update (no {FORMAT} header)") from None
    if header.get("format") != FORMAT:
        raise RecipeError(f"{path}: unknown masked-update format {header.get('format')!r}")
    return header


_SAME = ("round", "roster_sha256", "fraction_bits", "pairs", "shapes")


def check_round(paths: list[Path]) -> list[dict[str, Any]]:
    """Every file's header, after checking they form one complete round of one adapter setup.
    A site of the key list without a file (a drop-out) refuses the round."""
    if not paths:
        raise RecipeError("no masked update files given")
    headers = [read_header(p) for p in paths]
    first = headers[0]
    for p, h in zip(paths[1:], headers[1:]):
        for key in _SAME:
            if h.get(key) != first.get(key):
                raise RecipeError(f"{p} is not from the same round as {paths[0]}: its {key} differs")
        for key in ("base_manifest_sha256", "task", "config_overrides"):
            if (h["pin"].get(key) or None) != (first["pin"].get(key) or None):
                raise RecipeError(f"{p} adapts another base or head than {paths[0]} ({key} differs)")
        for key in ("r", "lora_alpha", "target_modules", "modules_to_save"):
            a, b = first["peft_config"].get(key), h["peft_config"].get(key)
            if (sorted(a) if isinstance(a, list) else a) != (sorted(b) if isinstance(b, list) else b):
                raise RecipeError(f"{p} has another {key} than {paths[0]}: {b} vs {a}")
    modes = {h["weight_mode"] == "equal" for h in headers}
    if len(modes) > 1:
        raise RecipeError("some sites weighted their update by example count and some equally; mask again with "
                          "one rule for all")
    seen: dict[str, Path] = {}
    for p, h in zip(paths, headers):
        if h["site"] in seen:
            raise RecipeError(f"{p} and {seen[h['site']]} are both from site {h['site_name']} ({h['site']})")
        seen[h["site"]] = p
    roster = {s["id"]: s["name"] for s in first["roster"]}
    strangers = sorted(set(seen) - set(roster))
    if strangers:
        raise RecipeError(f"{seen[strangers[0]]} is from a site ({strangers[0]}) outside the round's key list")
    missing = [f"{roster[i]} ({i})" for i in sorted(set(roster) - set(seen))]
    if missing:
        raise RecipeError(f"round '{first['round']}' is missing the masked update of {', '.join(missing)}: a round "
                          "with a dropped site is refused (its masks cannot cancel); mask again for a new round "
                          "with a key list without it")
    return headers


def unmask_sum(paths: list[Path]) -> tuple[list[dict[str, Any]], dict[str, np.ndarray], float]:
    """(headers, the weighted sum of every tensor, the total example count) of a complete round."""
    from safetensors.numpy import load_file

    headers = check_round(paths)
    total: dict[str, np.ndarray] = {}
    for p in paths:
        for name, arr in load_file(str(p)).items():
            if arr.dtype != np.uint64 or list(arr.shape) != headers[0]["shapes"].get(name):
                raise RecipeError(f"{p}: tensor {name} does not match its header")
            total[name] = total[name] + arr if name in total else arr.copy()
    if set(total) != set(headers[0]["shapes"]):
        raise RecipeError(f"the masked files do not hold the tensors their headers list ({paths[0]})")
    count = float(decode(total.pop(_COUNT))[0])
    if not count > 0:
        raise RecipeError("the unmasked example count is not positive: the files do not belong together")
    return headers, {n: decode(a) for n, a in total.items()}, count


def mask_version(catalog: Any, ref: str, *, key_name: str, key_list: Path | str, round_id: str, out: Path | str,
                 samples: float | None = None) -> dict[str, Any]:
    """`relman federated mask`: this site's adapter version `ref` masked for the round. The
    weight is `samples` when given, else the version's recorded train_samples, else equal."""
    import tempfile

    from relman.modelio import peft_adapter
    from relman.modelio.loading import materialize_version

    version = catalog.resolve(ref)
    if version.format != peft_adapter.FORMAT:
        raise RecipeError(f"{version.ref} is '{version.format}': secure aggregation masks LoRA adapter updates")
    if samples is not None:
        mode = "given"
    else:
        recorded = version.meta.get("train_samples")
        if recorded is None:
            recorded = catalog.metric_values(version.id).get("train_samples")
        samples, mode = (float(recorded), "train_samples") if recorded is not None else (None, "equal")
    ledger = version.meta.get("privacy")
    with tempfile.TemporaryDirectory(prefix="relman-secagg-") as tmp:
        folder = materialize_version(catalog, version.id, Path(tmp))
        return mask_adapter(folder, key_name=key_name, key_list=key_list, round_id=round_id, out=out,
                            samples=samples, weight_mode=mode, site_version=version.ref,
                            privacy=ledger if (ledger or {}).get("epsilon") is not None else None)
