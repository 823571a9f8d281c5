"""The per-example attributions as a stored artifact: one JSON document per version and run.

    {"format": "relman-attributions/1", "version": "m@1.0.1", "version_id": 7, "task": ...,
     "method": "ig", "dataset": "sst2", "dataset_sha": ..., "split": ..., "seed": 0,
     "indices": [...], "compared_with": "m@1.0.0" | null, "options": {...},
     "examples": [{"index", "prediction", "confidence", "target", "score",
                   "features": [{"name", "score"}] (input order),
                   "comprehensiveness", "sufficiency", ["grid", "image"] (images)}]}

Written by the worker (explain suite or explain job) as a blob referenced from
`evaluation_artifacts`; read by the CLI, the GUI and the model card, which never compute
attributions themselves. Reading re-hashes the blob (it is small) so an edited file is noticed.
Light: json only, importable at CLI/GUI start.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from relman.errors import EvaluationError, IntegrityError
from relman.evaluate.explain import ARTIFACT_KIND, FORMAT


def document(*, version: Any, method: str, dataset: Any, split: str | None, seed: int, indices: list[int],
             examples: list[dict[str, Any]], compared_with: str | None = None,
             options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"format": FORMAT, "version": version.ref, "version_id": version.id, "task": version.task,
            "manifest_sha256": version.manifest_sha256, "method": method, "dataset": dataset.name,
            "dataset_sha": dataset.sha256, "split": split, "seed": int(seed), "indices": list(indices),
            "compared_with": compared_with, "options": dict(options or {}), "examples": examples}


def write(doc: Mapping[str, Any], folder: Path, name: str) -> Path:
    path = Path(folder) / name
    path.write_text(json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False), encoding="utf-8")
    return path


def method_key(method: str, options: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """The settings that change a method's attributions of one example: attributions with
    equal keys (same version, data and example) are interchangeable."""
    base = {"method": method, "baseline": options.get("baseline")}  # issue 27: the image baseline changed
    if method == "ig":
        return dict(base, ig_steps=options.get("ig_steps"))
    if method in ("shap", "lime"):
        return dict(base, shap_samples=options.get("shap_samples"), seed=int(seed))
    return base


def meta_of(doc: Mapping[str, Any]) -> dict[str, Any]:
    """What the catalog row records, so a reuse check never opens the blob."""
    return {"dataset_sha": doc["dataset_sha"], "split": doc["split"], "seed": doc["seed"], "indices": doc["indices"],
            "compared_with": doc.get("compared_with"), "options": doc.get("options", {}),
            "method_key": method_key(doc["method"], doc.get("options", {}), doc["seed"]),
            "n_examples": len(doc["examples"])}


def reusable(catalog: Any, version_id: int, *, dataset: Any, split: str | None, key: Mapping[str, Any],
             indices: list[int]) -> list[dict[str, Any]] | None:
    """Stored attributions of `version_id` for exactly these settings and examples (the
    version's files are immutable, so they are the attributions a new run would compute), or
    None. An unreadable blob is skipped, never trusted."""
    from relman.errors import RelmanError

    for row in reversed(catalog.evaluation_artifacts(version_id, ARTIFACT_KIND)):
        meta = row["meta"]
        if (row["dataset_id"] != dataset.id or meta.get("dataset_sha") != dataset.sha256
                or meta.get("split") != split or meta.get("method_key") != dict(key)
                or not set(indices) <= set(meta.get("indices") or [])):
            continue
        try:
            return select(load(catalog, row), indices)["examples"]
        except RelmanError:
            continue
    return None


def load(catalog: Any, row: Mapping[str, Any]) -> dict[str, Any]:
    """The document behind an `evaluation_artifacts` row (hash checked)."""
    try:
        doc = json.loads(catalog.read_blob(row["sha256"]).decode("utf-8"))
    except IntegrityError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IntegrityError(f"attributions blob {row['sha256'][:12]} is not valid JSON ({e})") from None
    if doc.get("format") != FORMAT:
        raise IntegrityError(f"attributions blob {row['sha256'][:12]} has format {doc.get('format')!r}, not {FORMAT}")
    return doc


def find(catalog: Any, version_id: int, *, method: str | None = None, dataset_id: int | None = None,
         indices: list[int] | None = None) -> dict[str, Any] | None:
    """The newest stored attributions of a version that cover `indices` (all of them), with
    this method and dataset; None when there are none."""
    rows = catalog.evaluation_artifacts(version_id, ARTIFACT_KIND)
    for row in reversed(rows):
        if method and row["method"] != method:
            continue
        if dataset_id is not None and row["dataset_id"] != dataset_id:
            continue
        if indices is not None and not set(indices) <= set(row["meta"].get("indices") or []):
            continue
        return row
    return None


def select(doc: Mapping[str, Any], indices: list[int] | None) -> dict[str, Any]:
    """The document restricted to `indices` (in that order)."""
    if indices is None:
        return dict(doc)
    by_index = {e["index"]: e for e in doc["examples"]}
    missing = [i for i in indices if i not in by_index]
    if missing:
        raise EvaluationError(f"the stored attributions lack examples {missing[:5]}")
    return dict(doc, examples=[by_index[i] for i in indices])


def public_json(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The `relman explain --json` shape: version, method, examples with index, prediction
    (and confidence) and features in input order."""
    return {"version": doc["version"], "method": doc["method"], "dataset": doc.get("dataset"),
            "examples": [{"index": e["index"], "prediction": e["prediction"], "confidence": e.get("confidence"),
                          "features": [{"name": f["name"], "score": f["score"]} for f in e["features"]]}
                         for e in doc["examples"]]}


def render_text(example: Mapping[str, Any], top: int = 5) -> str:
    """One line for a card or a terminal: the prediction and the strongest features."""
    feats = sorted(example["features"], key=lambda f: -abs(f["score"]))[:top]
    conf = example.get("confidence")
    conf_txt = f" ({conf:.2f})" if isinstance(conf, (int, float)) else ""
    parts = ", ".join(f"{f['name']!s} {f['score']:+.3f}" for f in feats)
    return f"#{example['index']}: {example['prediction']!s}{conf_txt} ← {parts}"
