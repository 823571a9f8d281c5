"""Phase changes: promote, reject, rollback, canary rollout, and the history that answers
"what was in production on date D".

Every change re-reads the version inside one write transaction (BEGIN IMMEDIATE), evaluates
the gates there, updates the phase, stores the transition with its gate report and appends
the audit event, so two people promoting at once queue up instead of both acting on a stale
phase, and the audit chain never forks. After the commit the channels manifest is re-written
when a folder is configured (`relman channels set-dir`).
"""

from __future__ import annotations

import json
from datetime import datetime, time, timezone
from typing import Any, Callable

from relman.catalog.integrity import commit_event, require_intact
from relman.errors import IntegrityError, ReleaseError
from relman.release.gates import GateReport, check_artifacts, evaluate_gates
from relman.release.policy import PHASES, allowed_targets, get_policy


class GateFailed(ReleaseError):
    """A promotion the gates refuse; `report` holds every rule and its result."""

    def __init__(self, message: str, report: GateReport) -> None:
        super().__init__(message)
        self.report = report


def _now() -> str:
    from relman.catalog.catalog import utcnow

    return utcnow()


def _move(catalog: Any, v: Any, to_phase: str, *, report: dict[str, Any], override: bool, why: str, who: str,
          at: str) -> int:
    """Set the phase (and the canary share that goes with it) and store the transition row."""
    share = 0.0 if to_phase == "staging" else None
    catalog.conn.execute("UPDATE versions SET phase = ?, canary_share = ? WHERE id = ?", [to_phase, share, v.id])
    cur = catalog.conn.execute(
        "INSERT INTO transitions (version_id, from_phase, to_phase, gate_report, override, why, who, at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [v.id, v.phase, to_phase, json.dumps(report, default=str), int(override), why, who, at])
    return int(cur.lastrowid)


def _after_change(catalog: Any, result: dict[str, Any]) -> dict[str, Any]:
    from relman.release.channels import refresh_if_configured

    try:
        path = refresh_if_configured(catalog)
        if path is not None:
            result["channels"] = str(path)
    except ReleaseError as e:  # the change is committed; say what did not follow it
        result["channels_error"] = str(e)
    return result


def _fire(catalog: Any, event: str, payload: dict[str, Any], *, who: str, to_phase: str | None = None
          ) -> dict[str, Any]:
    """Queue the hooks `event` triggers (relman.release.hooks): called once the transaction has
    ended, so a hook never runs inside it and never undoes it."""
    from relman.release import hooks

    return hooks.fire(catalog, event, payload, model=payload.get("model"), to_phase=to_phase, who=who)


def _fire_refusal(catalog: Any, e: ReleaseError | IntegrityError, *, who: str, model: str | None,
                  version: str | None = None, to_phase: str | None = None) -> None:
    """A refused change (gates, or a catalog that fails verification): its hooks are queued and
    the queued jobs ride on the exception (`e.hooks`) for the CLI and GUI to report."""
    if catalog.conn.in_transaction:  # nested in a caller's transaction: it decides what stands
        return
    event = "gate-failed" if isinstance(e, GateFailed) else "integrity-failed"
    payload: dict[str, Any] = {"model": model, "version": version, "ref": f"{model}@{version}" if version else None,
                               "to": to_phase, "who": who, "error": str(e)}
    if isinstance(e, GateFailed):
        payload["failing"] = [{"rule": r.rule, "reason": r.reason} for r in e.report.failing]
    e.hooks = _fire(catalog, event, payload, who=who)  # type: ignore[union-attr]


def promote(catalog: Any, version_id: int, to_phase: str, *, why: str = "", who: str,
            override: bool = False, progress: Callable[[int, int, int, int], None] | None = None) -> dict[str, Any]:
    """Move a version to `to_phase` if the policy allows it and every gate passes.

    With `override`, failing gates are recorded and ignored; `why` is then required and an
    `override` event is added. A disallowed transition is refused even with override (edit
    the policy instead). Promotion to production retires (or demotes, per policy) the
    previous production version in the same transaction. `progress` follows the artifact
    re-hash (see gates.check_artifacts); it may raise to stop before anything is written."""
    why = (why or "").strip()
    if override and not why:
        raise ReleaseError("--override needs --why: say why the gates are being overridden")
    if to_phase not in PHASES:
        raise ReleaseError(f"unknown phase '{to_phase}' (phases: {', '.join(PHASES)})")
    replaced: list[dict[str, str]] = []
    pre = catalog.get_version(version_id)
    integrity = None
    if to_phase in get_policy(catalog, pre.model)[0].get("verify_artifacts", []):
        integrity = check_artifacts(catalog, pre.id, progress=progress)  # before the lock: hashing can take a while
    try:
        tid, v, rep, failing, report = _promote_in_transaction(catalog, version_id, to_phase, why=why, who=who,
                                                               override=override, integrity=integrity,
                                                               replaced=replaced)
    except (GateFailed, IntegrityError) as e:
        _fire_refusal(catalog, e, who=who, model=pre.model, version=pre.version, to_phase=to_phase)
        raise
    result = {"ref": v.ref, "model": v.model, "version": v.version, "from": v.phase, "to": to_phase, "transition": tid,
              "override": bool(override and failing), "report": rep, "replaced": replaced}
    result = _after_change(catalog, result)
    if not catalog.conn.in_transaction:
        event = "rejected" if to_phase == "rejected" else "promoted"
        payload = {k: result[k] for k in ("ref", "model", "version", "from", "to", "transition", "override",
                                          "replaced")}
        result.update(_fire(catalog, event, {**payload, "why": why, "who": who, "gates_passed": report.passed},
                            who=who, to_phase=to_phase))
    return result


def _promote_in_transaction(catalog: Any, version_id: int, to_phase: str, *, why: str, who: str, override: bool,
                            integrity: Any, replaced: list[dict[str, str]]) -> tuple[int, Any, dict[str, Any],
                                                                                     list[str], GateReport]:
    """The checks and writes of `promote`, in one write transaction."""
    with catalog.transaction():
        v = catalog.get_version(version_id)
        if v.phase == to_phase:
            raise ReleaseError(f"{v.ref} is already in {to_phase}")
        policy, revision = get_policy(catalog, v.model)
        targets = allowed_targets(policy, v.phase)
        if to_phase not in targets:
            raise ReleaseError(f"the policy of {v.model} (revision {revision}) does not allow {v.phase} → {to_phase} "
                               f"for {v.ref} (allowed from {v.phase}: {', '.join(targets) or 'nothing'})")
        if to_phase == "staging":
            other = [o for o in catalog.versions(v.model) if o.phase == "staging" and o.id != v.id]
            if other:
                raise ReleaseError(f"{other[0].ref} is already in staging (one canary per model); promote, reject or "
                                   "move it back to candidate first")
        report = evaluate_gates(catalog, v, to_phase, policy=policy, revision=revision, integrity=integrity)
        catalog._checkpoint_keep = True  # a release transition keeps its own checkpoint file
        if not report.passed and not override:
            raise GateFailed(f"gates refuse {v.ref} → {to_phase}: {report.failing_text()} "
                             "(fix them, or --override --why \"...\")", report)
        at = _now()
        rep = report.to_dict()
        tid = _move(catalog, v, to_phase, report=rep, override=override and not report.passed, why=why, who=who, at=at)
        failing = [r.rule for r in report.failing]
        kind = "reject" if to_phase == "rejected" else "promote"
        commit_event(catalog.db, at=at, actor=who, kind=kind, model=v.model, version=v.version,
                     payload={"from": v.phase, "to": to_phase, "why": why, "override": bool(override and failing),
                              "gates_passed": report.passed, "failing": failing, "transition": tid,
                              "policy_revision": revision})
        if override and failing:
            commit_event(catalog.db, at=at, actor=who, kind="override", model=v.model, version=v.version,
                         payload={"to": to_phase, "why": why, "failing": failing, "transition": tid})
        if to_phase == "production":
            dest = "retired" if policy["previous_production"] == "retire" else "candidate"
            for old in catalog.versions(v.model):
                if old.phase == "production" and old.id != v.id:
                    note = {"replaced_by": v.ref, "policy_revision": revision}
                    otid = _move(catalog, old, dest, report=note, override=False, why=f"replaced by {v.ref}",
                                 who=who, at=at)
                    commit_event(catalog.db, at=at, actor=who, kind="retire" if dest == "retired" else "demote",
                                 model=old.model, version=old.version,
                                 payload={"from": "production", "to": dest, "why": f"replaced by {v.ref}",
                                          "transition": otid})
                    replaced.append({"version": old.version, "to": dest})
    return tid, v, rep, failing, report


def reject(catalog: Any, version_id: int, *, why: str = "", who: str) -> dict[str, Any]:
    """Move a version to `rejected` (where the policy allows it); no gates guard a rejection."""
    why = (why or "").strip()
    pre = catalog.get_version(version_id)
    try:
        v, tid = _reject_in_transaction(catalog, version_id, why=why, who=who)
    except IntegrityError as e:
        _fire_refusal(catalog, e, who=who, model=pre.model, version=pre.version, to_phase="rejected")
        raise
    result = _after_change(catalog, {"ref": v.ref, "model": v.model, "version": v.version, "from": v.phase,
                                     "to": "rejected", "transition": tid})
    if not catalog.conn.in_transaction:
        result.update(_fire(catalog, "rejected", {**{k: result[k] for k in ("ref", "model", "version", "from", "to",
                                                                             "transition")}, "why": why, "who": who},
                            who=who))
    return result


def _reject_in_transaction(catalog: Any, version_id: int, *, why: str, who: str) -> tuple[Any, int]:
    with catalog.transaction():
        v = catalog.get_version(version_id)
        policy, revision = get_policy(catalog, v.model)
        if "rejected" not in allowed_targets(policy, v.phase):
            hint = " (use 'relman rollback' for the production version)" if v.phase == "production" else ""
            raise ReleaseError(f"the policy of {v.model} does not allow rejecting {v.ref} from {v.phase}{hint}")
        require_intact(catalog, f"reject {v.ref}")
        at = _now()
        tid = _move(catalog, v, "rejected", report={"policy_revision": revision}, override=False, why=why, who=who,
                    at=at)
        commit_event(catalog.db, at=at, actor=who, kind="reject", model=v.model, version=v.version,
                     payload={"from": v.phase, "to": "rejected", "why": why, "transition": tid})
    return v, tid


def previous_production(catalog: Any, model: str, current_id: int | None) -> Any | None:
    """The version that was in production before `current_id` (skipping rejected ones)."""
    rows = catalog.conn.execute(
        "SELECT t.version_id FROM transitions t JOIN versions v ON v.id = t.version_id"
        " JOIN models m ON m.id = v.model_id"
        " WHERE m.name = ? AND t.to_phase = 'production' ORDER BY t.id DESC", [model]).fetchall()
    seen: set[int] = set()
    for (vid,) in rows:
        if vid == current_id or vid in seen:
            continue
        seen.add(vid)
        cand = catalog.get_version(vid)
        if cand.phase != "rejected":
            return cand
    return None


def rollback_plan(catalog: Any, model: str) -> dict[str, Any]:
    """What `rollback` would do, without doing it (the GUI's confirmation): the production
    version that leaves ("removes", to "removed_to" by the policy's `rollback_to`) and the
    one that returns ("restores"). Refused with the same one-line errors as `rollback`."""
    catalog.get_model(model)
    current = [v for v in catalog.versions(model) if v.phase == "production"]
    if not current:
        raise ReleaseError(f"model '{model}' has no version in production to roll back")
    cur = max(current, key=lambda v: v.created_at)
    prev = previous_production(catalog, model, cur.id)
    if prev is None:
        raise ReleaseError(f"{cur.ref} is the first production version of {model}; "
                           "there is nothing to roll back to")
    policy, _revision = get_policy(catalog, model)
    return {"model": model, "removes": cur.ref, "removed_to": policy["rollback_to"], "restores": prev.ref,
            "restored_from": prev.phase}


def rollback(catalog: Any, model: str, *, why: str = "", who: str) -> dict[str, Any]:
    """Put the previous production version back into production; the current one goes to
    `retired` or `rejected` (policy `rollback_to`). Recorded as two transitions + 'rollback'."""
    why = (why or "").strip()
    try:
        result = _rollback_in_transaction(catalog, model, why=why, who=who)
    except IntegrityError as e:
        _fire_refusal(catalog, e, who=who, model=model)
        raise
    result = _after_change(catalog, result)
    if not catalog.conn.in_transaction:
        payload = {k: result[k] for k in ("ref", "model", "removed", "removed_to", "restored", "restored_from",
                                          "transitions")}
        result.update(_fire(catalog, "rolled-back", {**payload, "version": result["restored"], "why": why,
                                                     "who": who}, who=who))
    return result


def _rollback_in_transaction(catalog: Any, model: str, *, why: str, who: str) -> dict[str, Any]:
    with catalog.transaction():
        catalog.get_model(model)
        current = [v for v in catalog.versions(model) if v.phase == "production"]
        if not current:
            raise ReleaseError(f"model '{model}' has no version in production to roll back")
        cur = max(current, key=lambda v: v.created_at)
        prev = previous_production(catalog, model, cur.id)
        if prev is None:
            raise ReleaseError(f"{cur.ref} is the first production version of {model}; "
                               "there is nothing to roll back to")
        require_intact(catalog, f"roll back {model}")
        policy, revision = get_policy(catalog, model)
        dest = policy["rollback_to"]
        catalog._checkpoint_keep = True
        at = _now()
        note = {"rollback": True, "restores": prev.ref, "removes": cur.ref, "policy_revision": revision}
        t_out = _move(catalog, cur, dest, report=note, override=False, why=why or "rollback", who=who, at=at)
        t_in = _move(catalog, prev, "production", report=note, override=False, why=why or "rollback", who=who, at=at)
        commit_event(catalog.db, at=at, actor=who, kind="rollback", model=model, version=cur.version,
                     payload={"from": "production", "to": dest, "restored": prev.version, "restored_from": prev.phase,
                              "why": why, "transitions": [t_out, t_in]})
    return {"ref": prev.ref, "model": model, "removed": cur.version, "removed_to": dest,
            "restored": prev.version, "restored_from": prev.phase, "transitions": [t_out, t_in]}


def rollout(catalog: Any, version_id: int, share: float, *, who: str, why: str = "") -> dict[str, Any]:
    """Set the canary traffic share (0 < share <= 100, percent) of the staging version.
    Share 100 means the canary carries all traffic: the default policy's production gate
    (`canary_share >= 100`) then passes."""
    try:
        share = float(share)
    except (TypeError, ValueError):
        raise ReleaseError(f"canary share must be a number between 0 and 100, not {share!r}") from None
    if not (0 < share <= 100):
        raise ReleaseError(f"canary share must be > 0 and <= 100 (percent of traffic), not {share:g}")
    with catalog.transaction():
        v = catalog.get_version(version_id)
        if v.phase != "staging":
            raise ReleaseError(f"only the staging version carries a canary share; {v.ref} is in {v.phase}")
        require_intact(catalog, f"change the canary share of {v.ref}")
        catalog.conn.execute("UPDATE versions SET canary_share = ? WHERE id = ?", [share, v.id])
        commit_event(catalog.db, at=_now(), actor=who, kind="rollout", model=v.model, version=v.version,
                     payload={"share": share, "previous": v.canary_share, "why": (why or "").strip()})
    return _after_change(catalog, {"ref": v.ref, "model": v.model, "version": v.version, "share": share,
                                   "previous": v.canary_share})


# -- history -----------------------------------------------------------------------------------
def parse_when(text: str) -> datetime:
    """'YYYY-MM-DD' (the end of that day, UTC) or an ISO date-time (naive = UTC)."""
    text = text.strip()
    try:
        if len(text) == 10:
            d = datetime.fromisoformat(text).date()
            return datetime.combine(d, time.max, tzinfo=timezone.utc)
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ReleaseError(f"'{text}' is not a date (YYYY-MM-DD) or ISO date-time") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def history(catalog: Any, model: str) -> list[dict[str, Any]]:
    """Every phase change and canary step of the model's versions, oldest first."""
    catalog.get_model(model)
    rows = catalog.query(
        "SELECT t.id, t.at, v.version, t.from_phase, t.to_phase, t.who, t.why, t.override, t.gate_report"
        " FROM transitions t JOIN versions v ON v.id = t.version_id JOIN models m ON m.id = v.model_id"
        " WHERE m.name = ? ORDER BY t.id", [model])
    out = []
    for r in rows:
        rep = json.loads(r.pop("gate_report") or "{}")
        r["kind"] = "rollback" if rep.get("rollback") else "transition"
        r["gates_passed"] = rep.get("passed")
        r["override"] = bool(r["override"])
        out.append(r)
    for e in catalog.query("SELECT seq, at, version, actor, payload FROM events WHERE model = ? AND kind = 'rollout'"
                           " ORDER BY seq", [model]):
        p = json.loads(e["payload"])
        out.append({"id": None, "at": e["at"], "version": e["version"], "from_phase": "staging",
                    "to_phase": "staging", "who": e["actor"], "why": p.get("why", ""), "override": False,
                    "kind": "rollout", "share": p.get("share"), "gates_passed": None})
    out.sort(key=lambda r: (datetime.fromisoformat(r["at"]), r["id"] or 0))
    return out


def phases_at(catalog: Any, model: str, when: datetime | str) -> dict[str, str]:
    """Each version's phase at `when` (replaying transitions up to then); versions that did
    not exist yet are left out."""
    if isinstance(when, str):
        when = parse_when(when)
    elif when.tzinfo is None:  # naive = UTC, like parse_when
        when = when.replace(tzinfo=timezone.utc)
    phases: dict[str, str] = {}
    for v in catalog.versions(model):
        if datetime.fromisoformat(v.created_at) <= when:
            phases[v.version] = "draft"
    for r in catalog.query(
            "SELECT t.at, v.version, t.to_phase FROM transitions t JOIN versions v ON v.id = t.version_id"
            " JOIN models m ON m.id = v.model_id WHERE m.name = ? ORDER BY t.id", [model]):
        if datetime.fromisoformat(r["at"]) <= when:
            phases[r["version"]] = r["to_phase"]
    return phases


def production_at(catalog: Any, model: str, when: datetime | str) -> str | None:
    """The version that was in production at `when`, or None."""
    prod = [ver for ver, ph in phases_at(catalog, model, when).items() if ph == "production"]
    return prod[-1] if prod else None
