"""Release use cases the GUI and the CLI both call (thin; each change is one transaction).

Every function takes the catalog and a version as a `model@version` string, a version id, or
a `VersionInfo`; `who` defaults to RELMAN_USER / the login name. Errors a user can cause are
`RelmanError`s (`GateFailed` carries the full `GateReport` as `.report`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from relman.catalog import Catalog, VersionInfo
from relman.catalog.catalog import current_user
from relman.release import approvals as _approvals
from relman.release import channels as _channels
from relman.release import policy as _policy
from relman.release import workflow as _workflow
from relman.release.gates import GateReport, evaluate_gates
from relman.release.workflow import GateFailed  # noqa: F401  (re-exported for callers)

VersionLike = str | int | VersionInfo


def version_of(catalog: Catalog, ref: VersionLike) -> VersionInfo:
    if isinstance(ref, VersionInfo):
        return catalog.get_version(ref.id)
    if isinstance(ref, int):
        return catalog.get_version(ref)
    return catalog.resolve(ref)


def gates(catalog: Catalog, ref: VersionLike, to_phase: str, *, rehash: bool = True) -> GateReport:
    """Evaluate (without changing anything) the gates for moving `ref` to `to_phase`.
    `rehash=False` reads no artifact: the "artifacts intact" rule then says what is known from
    earlier re-hashes ("pending" otherwise), which is what a view on the GUI thread wants."""
    return evaluate_gates(catalog, version_of(catalog, ref), to_phase, rehash=rehash)


def next_phases(catalog: Catalog, ref: VersionLike) -> list[str]:
    """The phases the policy lets this version move to (for buttons / menus)."""
    v = version_of(catalog, ref)
    pol, _ = _policy.get_policy(catalog, v.model)
    return _policy.allowed_targets(pol, v.phase)


def promote(catalog: Catalog, ref: VersionLike, to_phase: str, *, why: str = "", who: str | None = None,
            override: bool = False, progress: Any = None) -> dict[str, Any]:
    return _workflow.promote(catalog, version_of(catalog, ref).id, to_phase, why=why, who=who or current_user(),
                             override=override, progress=progress)


def verifies_artifacts(catalog: Catalog, ref: VersionLike, to_phase: str) -> bool:
    """Whether promoting `ref` to `to_phase` re-hashes its artifacts (the policy's
    `verify_artifacts`): the GUI runs such promotions as jobs."""
    v = version_of(catalog, ref)
    return to_phase in _policy.get_policy(catalog, v.model)[0].get("verify_artifacts", [])


def reject(catalog: Catalog, ref: VersionLike, *, why: str = "", who: str | None = None) -> dict[str, Any]:
    return _workflow.reject(catalog, version_of(catalog, ref).id, why=why, who=who or current_user())


def rollback(catalog: Catalog, model: str, *, why: str = "", who: str | None = None) -> dict[str, Any]:
    return _workflow.rollback(catalog, model, why=why, who=who or current_user())


def rollback_plan(catalog: Catalog, model: str) -> dict[str, Any]:
    """Which version a rollback of `model` takes out of production and which returns (no change)."""
    return _workflow.rollback_plan(catalog, model)


def approve(catalog: Catalog, ref: VersionLike, to_phase: str, *, by: str | None = None,
            comment: str = "", key: str | None = None) -> dict[str, Any]:
    return _approvals.approve(catalog, version_of(catalog, ref).id, to_phase, by or current_user(), comment,
                              key=key)


def approvals(catalog: Catalog, ref: VersionLike, to_phase: str | None = None) -> list[dict[str, Any]]:
    return _approvals.approvals(catalog, version_of(catalog, ref).id, to_phase)


def rollout(catalog: Catalog, ref: VersionLike, share: float, *, who: str | None = None,
            why: str = "") -> dict[str, Any]:
    return _workflow.rollout(catalog, version_of(catalog, ref).id, share, who=who or current_user(), why=why)


def history(catalog: Catalog, model: str) -> list[dict[str, Any]]:
    return _workflow.history(catalog, model)


def production_at(catalog: Catalog, model: str, when: str) -> str | None:
    return _workflow.production_at(catalog, model, when)


def get_policy(catalog: Catalog, model: str) -> tuple[dict[str, Any], int]:
    return _policy.get_policy(catalog, model)


def set_policy(catalog: Catalog, model: str, body: Mapping[str, Any] | Path | str, *,
               who: str | None = None) -> int:
    """Store a new policy revision from a dict or a .json/.toml file."""
    source = "policy"
    if isinstance(body, (str, Path)):
        source = str(body)
        body = _policy.load_file(body)
    return _policy.set_policy(catalog, model, body, actor=who or current_user(), source=source)


def write_channels(catalog: Catalog, folder: Path | str | None = None) -> Path:
    """Write channels.json to `folder` (default: the configured channels folder)."""
    folder = folder or catalog.get_setting(_channels.SETTING)
    if not folder:
        from relman.errors import ReleaseError

        raise ReleaseError("no channels folder given or configured (relman channels set-dir DIR)")
    return _channels.write_channels(catalog, folder)


def set_channels_dir(catalog: Catalog, folder: Path | str | None, *, who: str | None = None) -> Path | None:
    return _channels.set_channels_dir(catalog, folder, actor=who or current_user())


def channels(catalog: Catalog) -> dict[str, Any]:
    return _channels.build_channels(catalog)


def audit_verify(catalog: Catalog) -> list[dict[str, Any]]:
    """Classified audit-chain problems ([] = the chain verifies)."""
    from relman.release.audit import diagnose

    return [f.to_dict() for f in diagnose(catalog)]
