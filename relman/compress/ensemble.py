"""Recipe "ensemble": several versions of one task combined into one version.

The child stores no weights: its files are a manifest pinning each member by manifest sha256
(relman.modelio.ensemble) plus the members' shared config and preprocessing files. Every
parent becomes a lineage parent with its weight on the edge, so the lineage view shows the
ensemble as a merge of its members, and deleting a member is refused while the ensemble lives.

Members must agree on what the combination means: one task, one label set in one order (a
mean of probabilities over differently ordered classes would be silently wrong) and the same
preprocessing files byte for byte (one tokenisation feeds them all). Anything else is refused
in one line before a file is written. Weights default to equal; `combine=vote` is a weighted
majority vote. The recipe checks that the stored ensemble loads and gives finite outputs
before it hands the folder back.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from relman.compress.registry import ModelSource, RecipeOutput
from relman.context import WorkContext
from relman.errors import RecipeError
from relman.modelio import ensemble as fmt

_SKIP = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".onnx_data", ".data", ".gguf", ".index.json")


def side_folder(source: ModelSource) -> Path:
    """Where a member's config-free preprocessing files live (an adapter's: its base's)."""
    from relman.modelio import peft_adapter

    if peft_adapter.is_adapter_folder(source.folder):
        return peft_adapter.base_folder(source.folder, verify=False)
    return source.folder


def labels_of(source: ModelSource) -> list[str]:
    from relman.modelio.loading import read_config

    id2label = read_config(source.folder).get("id2label") or {}
    return [str(id2label[k]) for k in sorted(id2label, key=int)]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def preprocessing_digest(folder: Path) -> dict[str, str]:
    return {name: _digest(folder / name) for name in fmt.PREPROCESSING_FILES if (folder / name).is_file()}


def check_members(sources: list[ModelSource]) -> list[str]:
    """One task, one label set, one preprocessing; returns the label set."""
    if len(sources) < 2:
        raise RecipeError("ensemble needs at least two member versions")
    if len(sources) > fmt.MAX_MEMBERS:
        raise RecipeError(f"ensemble takes at most {fmt.MAX_MEMBERS} members, got {len(sources)}")
    first = sources[0]
    refs = [s.version.ref for s in sources]
    if len(set(refs)) != len(refs):
        raise RecipeError(f"ensemble names a member twice ({', '.join(refs)})")
    for s in sources[1:]:
        if s.task != first.task:
            raise RecipeError(f"cannot ensemble {s.version.ref} ({s.task or 'no task'}) with {first.version.ref} "
                              f"({first.task or 'no task'}): members must do one task")
    labels = labels_of(first)
    for s in sources[1:]:
        other = labels_of(s)
        if other != labels:
            raise RecipeError(f"cannot ensemble {s.version.ref} (labels {','.join(other) or 'none'}) with "
                              f"{first.version.ref} (labels {','.join(labels) or 'none'}): members must share one "
                              "label set in one order")
    if not labels:
        raise RecipeError(f"{first.version.ref} has no labels (id2label) in its config; an ensemble combines "
                          "class probabilities")
    want = preprocessing_digest(side_folder(first))
    for s in sources[1:]:
        got = preprocessing_digest(side_folder(s))
        if got != want:
            diff = sorted(n for n in set(want) | set(got) if want.get(n) != got.get(n))
            raise RecipeError(f"cannot ensemble {s.version.ref} with {first.version.ref}: they read their inputs "
                              f"differently ({', '.join(diff)} differ); members must share one tokenizer / image "
                              "processor")
    return labels


def resolve_weights(given: list[str], n: int) -> list[float]:
    if not given:
        return [1.0 / n] * n
    if len(given) != n:
        raise RecipeError(f"'weights' has {len(given)} values for {n} members; give one per member")
    try:
        raw = [float(w) for w in given]
    except ValueError:
        raise RecipeError(f"'weights' must be numbers, got {','.join(given)}") from None
    if any(not w >= 0 or w == float("inf") for w in raw) or sum(raw) <= 0:
        raise RecipeError(f"ensemble weights must be finite, non-negative and not all zero, got {','.join(given)}")
    return [w / sum(raw) for w in raw]


def write_folder(sources: list[ModelSource], weights: list[float], combine: str, out: Path) -> dict[str, Any]:
    """The child's files: manifest + the first member's config and preprocessing files."""
    from relman.modelio.loading import read_config

    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(side_folder(sources[0]).iterdir()):
        name = f.name
        if f.is_file() and not name.startswith(".") and not name.lower().endswith(_SKIP) \
                and name != "config.json" and name != "README.md":
            shutil.copyfile(f, out / name)
    (out / "config.json").write_text(json.dumps(read_config(sources[0].folder), indent=2, sort_keys=True),
                                     encoding="utf-8")
    manifest = {
        "format": fmt.FORMAT, "combine": combine, "task": sources[0].task,
        "members": [{"version_id": s.version.id, "ref": s.version.ref, "format": s.format,
                     "manifest_sha256": s.version.manifest_sha256, "weight": w}
                    for s, w in zip(sources, weights)],
    }
    fmt.check_manifest(manifest, "the new ensemble")
    (out / fmt.MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    return manifest


def smoke_test(out: Path, sources: list[ModelSource], task: str) -> None:
    """Load the new ensemble the way a suite will and run it once on the shared preprocessing."""
    import torch

    from relman.modelio.loading import load_preprocessor, read_config

    pointer = {"members": [{"folder": str(s.folder.resolve()), "ref": s.version.ref, "format": s.format,
                            "weight": 0.0} for s in sources]}
    (out / fmt.POINTER).write_text(json.dumps(pointer), encoding="utf-8")
    try:
        model = fmt.load_ensemble(out, task)
        prep = load_preprocessor(out, task)
        if hasattr(prep, "pad_token"):
            inputs = prep(["a check sentence"], return_tensors="pt")
        else:
            cfg = read_config(out)
            size = cfg.get("image_size", 224)
            size = size if isinstance(size, int) else int(size[0])
            inputs = {"pixel_values": torch.zeros(1, int(cfg.get("num_channels", 3)), size, size)}
        with torch.inference_mode():
            logits = model(**inputs)["logits"]
        if not torch.isfinite(logits).all():
            raise RecipeError("the combined ensemble gives non-finite outputs; nothing stored")
    finally:
        (out / fmt.POINTER).unlink(missing_ok=True)


def run(sources: list[ModelSource], params: dict[str, Any], ctx: WorkContext) -> RecipeOutput:
    from relman.catalog import Metric
    from relman.compress.surgery import new_output_folder

    ctx.progress(0.05, "checking the members agree")
    labels = check_members(sources)
    combine = str(params.get("combine") or "mean")
    weights = resolve_weights(list(params.get("weights") or []), len(sources))
    out = new_output_folder(ctx, "ensemble")
    manifest = write_folder(sources, weights, combine, out)
    ctx.progress(0.5, "loading the combined model once")
    smoke_test(out, sources, str(sources[0].task))
    refs = [s.version.ref for s in sources]
    params_total = sum(int(s.version.params or 0) for s in sources) or None
    ctx.progress(1.0, f"combined {len(sources)} members ({combine})")
    return RecipeOutput(
        folder=out, format=fmt.FORMAT, params=params_total, dtype=None,
        meta={"parents": refs, "parent_weights": weights, "labels": labels,
              "ensemble": {"combine": combine, "members": manifest["members"]}},
        metrics=[Metric("compress", "ensemble_members", float(len(sources)),
                        {"weights": dict(zip(refs, weights)), "combine": combine})])
