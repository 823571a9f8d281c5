"""Release policy: which phase changes are allowed, which gates guard them, how many
approvals they need, and what happens to the version a new production version replaces.

The policy is data, stored per model in the `policies` table as JSON with a revision number
(each edit adds a row with revision + 1 and an audit event `policy-edit`), so "which rules
applied to this promotion" stays answerable: every gate report records the revision it used.
A model without a stored policy uses `DEFAULT_POLICY`. Files may be JSON or TOML.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Mapping

from relman.catalog import events as audit
from relman.errors import ReleaseError
from relman.release.rules import parse_rule

PHASES = ("draft", "candidate", "staging", "production", "retired", "rejected")

DEFAULT_POLICY: dict[str, Any] = {
    # from-phase -> phases it may move to (promote / reject / demote)
    "transitions": {
        "draft": ["candidate", "rejected"],
        "candidate": ["staging", "draft", "rejected"],
        "staging": ["production", "candidate", "rejected"],
        "production": ["retired"],
        "retired": ["candidate", "staging"],
        "rejected": [],
    },
    # to-phase -> rules (see relman.release.gates / rules); every rule must pass
    "gates": {
        "candidate": [],
        "staging": [],
        # share 100 = the canary already carries all traffic: the version is ready for production
        "production": ["canary_share >= 100"],
    },
    # to-phase -> approvals needed (added as the rule `approvals >= N`)
    "approvals": {"staging": 1, "production": 1},
    # the production version a promotion replaces: "retire" (-> retired) or "demote" (-> candidate)
    "previous_production": "retire",
    # the production version a rollback removes goes to: "retired" or "rejected"
    "rollback_to": "retired",
    # re-hash the version's blobs as part of the gates for these phases
    "verify_artifacts": ["staging", "production"],
}

_KEYS = set(DEFAULT_POLICY)


def default_policy() -> dict[str, Any]:
    return copy.deepcopy(DEFAULT_POLICY)


def validate(body: Mapping[str, Any], source: str = "policy") -> dict[str, Any]:
    """Check a policy body (missing keys are taken from the default); returns the full body.
    Every rule is parsed here, so a typo is caught when the policy is set, not at promotion."""

    if not isinstance(body, Mapping):
        raise ReleaseError(f"{source}: a policy must be a table/object, not {type(body).__name__}")
    unknown = set(body) - _KEYS
    if unknown:
        raise ReleaseError(f"{source}: unknown policy key(s) {', '.join(sorted(unknown))} "
                           f"(known: {', '.join(sorted(_KEYS))})")
    full = default_policy()
    for key, value in body.items():
        full[key] = copy.deepcopy(value)
    tr = full["transitions"]
    if not isinstance(tr, Mapping):
        raise ReleaseError(f"{source}: 'transitions' must map a phase to a list of phases")
    for frm, tos in tr.items():
        if frm not in PHASES:
            raise ReleaseError(f"{source}: transitions: unknown phase '{frm}' (phases: {', '.join(PHASES)})")
        if not isinstance(tos, list) or any(t not in PHASES for t in tos):
            raise ReleaseError(f"{source}: transitions.{frm} must be a list of phases from {', '.join(PHASES)}")
    gates = full["gates"]
    if not isinstance(gates, Mapping):
        raise ReleaseError(f"{source}: 'gates' must map a phase to a list of rules")
    for phase, rules in gates.items():
        if phase not in PHASES:
            raise ReleaseError(f"{source}: gates: unknown phase '{phase}'")
        if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules):
            raise ReleaseError(f"{source}: gates.{phase} must be a list of rule strings")
        for rule in rules:
            try:
                parse_rule(rule)
            except ReleaseError as e:
                raise ReleaseError(f"{source}: gates.{phase}: {e}") from None
    appr = full["approvals"]
    if not isinstance(appr, Mapping) or any(p not in PHASES for p in appr) or \
            any(not isinstance(n, int) or isinstance(n, bool) or n < 0 for n in appr.values()):
        raise ReleaseError(f"{source}: 'approvals' must map a phase to a whole number >= 0")
    if full["previous_production"] not in ("retire", "demote"):
        raise ReleaseError(f"{source}: 'previous_production' must be \"retire\" or \"demote\"")
    if full["rollback_to"] not in ("retired", "rejected"):
        raise ReleaseError(f"{source}: 'rollback_to' must be \"retired\" or \"rejected\"")
    va = full["verify_artifacts"]
    if not isinstance(va, list) or any(p not in PHASES for p in va):
        raise ReleaseError(f"{source}: 'verify_artifacts' must be a list of phases")
    return full


def load_file(path: Path | str) -> dict[str, Any]:
    """Read a policy from a .json or .toml file (not yet validated)."""
    path = Path(path).expanduser()
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ReleaseError(f"cannot read policy file {path} ({e.strerror or e})") from None
    if path.suffix.lower() == ".toml":
        import tomllib

        try:
            return tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ReleaseError(f"{path}: not valid TOML ({e})") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReleaseError(f"{path}: not valid JSON ({e}); use a .toml suffix for TOML") from None


def get_policy(catalog: Any, model: str) -> tuple[dict[str, Any], int]:
    """(policy body, revision) for `model`; revision 0 means the built-in default."""
    m = catalog.get_model(model)
    row = catalog.conn.execute(
        "SELECT body, revision FROM policies WHERE model_id = ? ORDER BY revision DESC LIMIT 1", [m["id"]]).fetchone()
    if not row:
        return default_policy(), 0
    return validate(json.loads(row[0]), f"stored policy of {model}"), int(row[1])


def set_policy(catalog: Any, model: str, body: Mapping[str, Any], *, actor: str, source: str = "policy") -> int:
    """Store a new revision of `model`'s policy with its audit event; returns the revision."""
    from relman.catalog.catalog import utcnow

    full = validate(body, source)
    with catalog.transaction():
        m = catalog.get_model(model)
        row = catalog.conn.execute("SELECT MAX(revision) FROM policies WHERE model_id = ?", [m["id"]]).fetchone()
        revision = (row[0] or 0) + 1
        text = audit.canonical(full)
        catalog.conn.execute(
            "INSERT INTO policies (model_id, revision, body, created_at, created_by) VALUES (?, ?, ?, ?, ?)",
            [m["id"], revision, text, utcnow(), actor])
        audit.append(catalog.db, at=utcnow(), actor=actor, kind="policy-edit", model=model, version=None,
                     payload={"revision": revision, "source": source, "policy": full})
    return revision


def allowed_targets(policy: Mapping[str, Any], from_phase: str) -> list[str]:
    return list(policy["transitions"].get(from_phase, []))
