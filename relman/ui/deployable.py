"""Deployable size: a version's own bytes plus those of every version it cannot run without.

Why: a 0.3 MB LoRA adapter is not a 0.3 MB model; it runs only with its pinned 87 MB base
loaded. The same holds for a fairness post-processor (its pinned parent) and an ensemble
(its members, each with what *it* needs). A size axis that plots own bytes puts such
versions on the size front by mistake.

What "needs" means is each format's own pin, as its materializer resolves it
(relman.modelio.loading.MATERIALIZERS), read from the version's metadata:

- `peft-adapter`: `meta.adapter` — the base by `base_version_id` when that version's manifest
  still equals `base_manifest_sha256`, else any whole-model version with that manifest (as
  `peft_adapter.find_base`), else by `base_ref`;
- `fair-threshold`: `meta.postprocessor.parent` (a ref);
- `ensemble`: `meta.parents` (the member refs).

The closure is taken once per distinct version (an ensemble of an adapter and its own base
ships the base once). When a needed version is missing from the catalog, the deployable size
is unknown (None): such a version cannot be deployed from here, and the plot must not show it
as small. No Qt, no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from relman.ui.snapshot import VersionRow

NEEDS_OTHERS = ("peft-adapter", "fair-threshold", "ensemble")


def needed_refs(v: "VersionRow", meta: dict[str, Any], by_id: dict[int, "VersionRow"],
                by_manifest: dict[str, "VersionRow"]) -> list[str]:
    """The refs `v`'s format pins as needed to run it (not recursive)."""
    if v.format == "peft-adapter":
        pin = meta.get("adapter") or {}
        pinned_id = pin.get("base_version_id")
        base = by_id.get(pinned_id) if isinstance(pinned_id, int) else None
        want = pin.get("base_manifest_sha256")
        if base is not None and want and base.manifest_sha256 != want:
            base = None  # the id now names altered bytes: the pin is by manifest
        if base is None and want:
            base = by_manifest.get(want)
        ref = base.ref if base is not None else pin.get("base_ref")
        return [ref] if isinstance(ref, str) else []
    if v.format == "fair-threshold":
        parent = (meta.get("postprocessor") or {}).get("parent")
        return [parent] if isinstance(parent, str) else []
    if v.format == "ensemble":
        return [p for p in meta.get("parents") or [] if isinstance(p, str)]
    return []


def attach_deployable(versions: list["VersionRow"], metas: dict[int, dict[str, Any]]) -> None:
    """Set each version's `ships_with` (refs, in the order met) and `base_bytes` (their bytes),
    or `deployable_missing` (the refs not found) when something it needs is not here."""
    by_id = {v.id: v for v in versions}
    by_ref = {v.ref: v for v in versions}
    by_manifest: dict[str, "VersionRow"] = {}
    for v in sorted(versions, key=lambda v: v.id):
        if v.manifest_sha256 and v.format not in NEEDS_OTHERS:
            by_manifest.setdefault(v.manifest_sha256, v)
    direct = {v.id: needed_refs(v, metas.get(v.id, {}), by_id, by_manifest)
              for v in versions if v.format in NEEDS_OTHERS}
    for v in versions:
        if v.id not in direct:
            continue
        seen: list[str] = []
        missing: list[str] = []
        stack = list(reversed(direct[v.id]))
        while stack:
            ref = stack.pop()
            if ref in seen or ref in missing or ref == v.ref:
                continue
            other = by_ref.get(ref)
            if other is None:
                missing.append(ref)
                continue
            seen.append(ref)
            stack.extend(reversed(direct.get(other.id, [])))
        v.ships_with = seen
        v.deployable_missing = missing
        v.base_bytes = sum(by_ref[r].size_bytes for r in seen)
