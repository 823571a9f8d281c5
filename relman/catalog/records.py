"""What the catalog hands out and takes in: metrics, evaluation artifacts, version records,
and the small rules that define them (what makes two measurements the same metric, a
version's identity hash). Plain data, no database: any layer may import these.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from relman.catalog.events import canonical

PHASES = ("draft", "candidate", "staging", "production", "retired", "rejected")


@dataclass(frozen=True)
class Metric:
    """One number to store, with the conditions it was measured under."""

    suite: str
    name: str
    value: float | None
    context: Mapping[str, Any] = field(default_factory=dict)
    dataset_id: int | None = None


@dataclass(frozen=True)
class EvalArtifact:
    """A file an evaluation produced besides numbers (e.g. per-example attributions), stored
    as a blob and referenced from `evaluation_artifacts`."""

    version_id: int
    suite: str
    kind: str
    path: Path
    method: str | None = None
    dataset_id: int | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VersionInfo:
    id: int
    model_id: int
    model: str
    version: str
    format: str
    task: str | None
    architecture: str | None
    params: int | None
    dtype: str | None
    size_bytes: int
    manifest_sha256: str
    recipe: dict[str, Any]
    meta: dict[str, Any]
    phase: str
    canary_share: float | None
    created_at: str
    created_by: str
    deleted_at: str | None = None  # set on a tombstone: the version was deleted
    archived_to: str | None = None  # its blobs were moved to this folder (`relman restore`)

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.version}"

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    @classmethod
    def from_row(cls, r: Mapping[str, Any]) -> "VersionInfo":
        return cls(
            id=r["id"], model_id=r["model_id"], model=r["model"], version=r["version"],
            format=r["format"], task=r["task"], architecture=r["architecture"], params=r["params"],
            dtype=r["dtype"], size_bytes=r["size_bytes"], manifest_sha256=r["manifest_sha256"],
            recipe=json.loads(r["recipe"] or "{}"), meta=json.loads(r["meta"] or "{}"),
            phase=r["phase"], canary_share=r["canary_share"], created_at=r["created_at"],
            created_by=r["created_by"], deleted_at=r.get("deleted_at"), archived_to=r.get("archived_to"),
        )


_VERSION_SELECT = ("SELECT v.*, m.name AS model, t.deleted_at AS deleted_at, x.folder AS archived_to"
                   " FROM versions v JOIN models m ON m.id = v.model_id"
                   " LEFT JOIN tombstones t ON t.version_id = v.id LEFT JOIN archives x ON x.version_id = v.id")
_LIVE = "t.version_id IS NULL"


def metric_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes two measurements "the same metric": the newest row per key is current.
    (suite, name, dataset, device) — a figure on another dataset or device is another metric."""
    ctx = row.get("context") or {}
    if isinstance(ctx, str):
        ctx = json.loads(ctx)
    return (row["suite"], row["name"], row.get("dataset_id") or ctx.get("dataset"), ctx.get("device"))


def manifest_sha(files: Mapping[str, str]) -> str:
    """A version's identity: the sha256 of its sorted (path, blob sha) list."""
    return hashlib.sha256(canonical(sorted(files.items())).encode()).hexdigest()
