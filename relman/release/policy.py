"""Release policy: which phase changes are allowed, which gates guard them, how many
approvals they need, and what happens to the version a new production version replaces.

The policy is data, stored per model in the `policies` table as JSON with a revision number
(each edit adds a row with revision + 1 and an audit event `policy-edit`), so "which rules
applied to this promotion" stays answerable: every gate report records the revision it used.
A model without a stored policy uses `DEFAULT_POLICY`, whose gates guard quality, fidelity and
latency (below); a stored policy is kept as it was written (keys it leaves out take the
default). Files may be JSON or TOML.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Collection, Mapping

from relman.catalog import events as audit
from relman.catalog import integrity
from relman.errors import ReleaseError
from relman.release.rules import parse_rule

PHASES = ("draft", "candidate", "staging", "production", "retired", "rejected")

QUALITY_RULES = (
    "accuracy_delta_vs_production.upper >= -0.01 when classifier and has_production",
    "accuracy_delta_vs_parent.upper >= -0.01 when classifier and has_parent and not has_production",
    "loss_delta_vs_production.lower <= 0.01 when causal_lm and has_production",
    "loss_delta_vs_parent.lower <= 0.01 when causal_lm and has_parent and not has_production",
)
# Language models are judged by what they do, not only by perplexity: multiple-choice accuracy
# (the mc suite) and greedy exact match (the generate suite) must not be significantly worse than
# production's (else the parent's) by more than one point, on the same items; and a compressed
# (quantised, exported...) LM must give the same greedy output as its parent on at least 80 % of
# prompts — a quantised child whose perplexity barely moves can still change a fifth of its
# answers, which users see at once.
GENERATION_AGREEMENT_SHARE = 0.8
LM_RULES = (
    "mc_acc_delta_vs_production.upper >= -0.01 when causal_lm and has_production",
    "mc_acc_delta_vs_parent.upper >= -0.01 when causal_lm and has_parent and not has_production",
    "generate_exact_match_delta_vs_production.upper >= -0.01 when causal_lm and has_production",
    "generate_exact_match_delta_vs_parent.upper >= -0.01 when causal_lm and has_parent and not has_production",
    f"generate_agreement_vs_parent >= {GENERATION_AGREEMENT_SHARE} when causal_lm and compressed",
)
# Top-1 agreement over every row (a classifier's label; an LM's next token at every position).
# Not for causal LMs: an honest INT4 LM agrees on ~92 % of next tokens (the trained LM's INT4
# child in the demo) and still gives its parent's answers; LM_RULES judge LMs by those answers.
FIDELITY_RULE = "fidelity >= 0.99 when compressed and not causal_lm"
LATENCY_RULE = "latency_p50_ratio_vs_production <= 1.10 when has_production"

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
    # to-phase -> rules (see relman.release.gates / rules); every rule must pass. Quality: not
    # significantly worse than production (or, while nothing is in production, the parent) by
    # more than one point — the upper end of the paired 95 % interval of the difference must
    # reach -0.01; compressed children must agree with their parent on >= 99 % of rows;
    # at staging, the paired latency ratio against production must be <= 1.10. Causal LMs also
    # pass LM_RULES (mc and generate not significantly worse; greedy agreement for compressed).
    "gates": {
        "candidate": list(QUALITY_RULES) + list(LM_RULES) + [FIDELITY_RULE],
        "staging": list(QUALITY_RULES) + list(LM_RULES) + [FIDELITY_RULE, LATENCY_RULE],
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
    # approvals for these phases count only when signed with a key trusted here (relman keys)
    "require_signed_approvals": [],
}

_KEYS = set(DEFAULT_POLICY)


def default_policy() -> dict[str, Any]:
    return copy.deepcopy(DEFAULT_POLICY)


def validate(body: Mapping[str, Any], source: str = "policy", *,
             stored_metrics: Collection[str] | None = None) -> dict[str, Any]:
    """Check a policy body (missing keys are taken from the default); returns the full body.
    Every rule is parsed here, so a typo is caught when the policy is set, not at promotion.
    With `stored_metrics` (the catalog's metric names; set and edit pass them, loading a stored
    policy does not) every metric a rule reads must also be known (`metric_names`)."""

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
        if stored_metrics is not None:
            from relman.release.metric_names import check_rules

            check_rules(rules, stored_metrics, f"{source}: gates.{phase}")
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
    rs = full["require_signed_approvals"]
    if not isinstance(rs, list) or any(p not in PHASES for p in rs):
        raise ReleaseError(f"{source}: 'require_signed_approvals' must be a list of phases")
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

        from relman.jsonlimits import MAX_DEPTH, depth

        try:
            body = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ReleaseError(f"{path}: not valid TOML ({e})") from None
        except RecursionError:
            raise ReleaseError(f"{path}: TOML nested too deeply") from None
        if depth(body) > MAX_DEPTH:
            raise ReleaseError(f"{path}: nested too deeply (more than {MAX_DEPTH} levels)")
        return body
    from relman import jsonlimits

    return jsonlimits.loads(raw, f"{path} (use a .toml suffix for TOML)", error=ReleaseError)


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

    from relman.release.metric_names import stored_names

    full = validate(body, source, stored_metrics=stored_names(catalog))
    with catalog.transaction():
        m = catalog.get_model(model)
        row = catalog.conn.execute("SELECT MAX(revision) FROM policies WHERE model_id = ?", [m["id"]]).fetchone()
        revision = (row[0] or 0) + 1
        text = audit.canonical(full)
        catalog.conn.execute(
            "INSERT INTO policies (model_id, revision, body, created_at, created_by) VALUES (?, ?, ?, ?, ?)",
            [m["id"], revision, text, utcnow(), actor])
        integrity.commit_event(catalog.db, at=utcnow(), actor=actor, kind="policy-edit", model=model, version=None,
                               payload={"revision": revision, "source": source, "policy": full})
    return revision


class PolicyTextError(ReleaseError):
    """A policy text that does not parse or validate, with where (1-based line and column)."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        where = f"line {line}, column {column}: " if line is not None else ""
        super().__init__(where + message)
        self.line, self.column, self.reason = line, column, message


def validate_text(text: str, source: str = "policy", *,
                  stored_metrics: Collection[str] | None = None) -> dict[str, Any]:
    """Parse and validate a policy written as JSON (what the GUI editor holds); errors carry
    the line and column — of the broken rule's token for a malformed gate rule (or of the
    unknown metric it names, when `stored_metrics` is given)."""
    try:
        body = json.loads(text)
    except json.JSONDecodeError as e:
        raise PolicyTextError(f"not valid JSON ({e.msg})", e.lineno, e.colno) from None
    try:
        return validate(body, source, stored_metrics=stored_metrics)
    except ReleaseError as e:
        rule = None
        for rules in (body.get("gates") or {}).values() if isinstance(body, dict) else ():
            for r in rules if isinstance(rules, list) else ():
                if isinstance(r, str) and f"rule '{r}'" in str(e):
                    rule = r
        if rule is not None:
            col_in_rule = _column_in(str(e)) or 1
            at = text.find(json.dumps(rule))
            if at >= 0:
                line = text.count("\n", 0, at) + 1
                column = at - (text.rfind("\n", 0, at) + 1) + 2 + (col_in_rule - 1)  # +1 quote, 1-based
                raise PolicyTextError(str(e), line, column) from None
        raise PolicyTextError(str(e)) from None


def _column_in(message: str) -> int | None:
    import re

    m = re.search(r"\(column (\d+)\)", message)
    return int(m.group(1)) if m else None


def revisions(catalog: Any, model: str) -> list[dict[str, Any]]:
    """Every stored revision of `model`'s policy, newest first (revision, created_at/by, body)."""
    m = catalog.get_model(model)
    rows = catalog.query("SELECT revision, created_at, created_by, body FROM policies WHERE model_id = ?"
                         " ORDER BY revision DESC", [m["id"]])
    for r in rows:
        r["body"] = json.loads(r["body"])
    return rows


def allowed_targets(policy: Mapping[str, Any], from_phase: str) -> list[str]:
    return list(policy["transitions"].get(from_phase, []))
