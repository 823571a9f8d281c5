"""Model cards: a Hugging Face-compatible README.md generated from the catalog.

YAML front-matter (library_name, pipeline_tag, tags, model-index results per dataset and split,
each value with its interval as "0.912 ± 0.011" and relman's exact fields beside it;
base_model and base_model_relation, stated for every recipe) followed
by lineage, recipe, datasets, metrics with the conditions they were measured under, the last
gate report, approvals, and the fields only a person can fill in (intended use, limitations),
kept in the catalog settings under `card:<model>@<version>` so they survive re-generation.
The YAML is written by hand with JSON-quoted scalars (YAML is a superset of JSON), so no YAML
library is needed and nothing user-typed can break the block.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

from relman.catalog import integrity
from relman.errors import ReleaseError
from relman.tasks.specs import find_task

CARD_FIELDS = ("intended_use", "limitations", "license", "description")
LIBRARIES = {"hf": "transformers", "onnx": "onnx", "safetensors": "safetensors", "torch": "pytorch",
             "peft-adapter": "peft", "hf-reshaped": "transformers"}
# Hugging Face's `base_model_relation` (the Hub's model tree), stated for every built-in recipe:
# the Hub guesses when it is missing, and guesses wrong for multi-parent recipes (two base models
# read as a merge: distillation is not one) and for folders without weights it recognises.
# Pruning and low-rank surgery change the weights themselves, as training does ("finetune");
# ONNX export and the other format conversions are filed with quantizations, the Hub's group for
# the same model in another runtime's format. tests/test_modelcard_lineage.py checks that every
# registered recipe has an entry here, so a new recipe cannot be left to the Hub's guess.
def hub_relations() -> dict[str, str]:
    """recipe name -> base_model_relation, as each recipe declares it (Recipe.hub_relation)."""
    from relman.compress.registry import all_recipes

    return {r.name: r.hub_relation for r in all_recipes() if r.hub_relation}


def base_model_relation(v: Any) -> str | None:
    """adapter | merge | quantized | finetune for a derived version (a LoRA fine-tune's adapter
    is "adapter", a merge of adapters "merge"); None for an import, or a recipe this install
    does not know (a plugin's: better no claim than a wrong one)."""
    recipe = (v.recipe or {}).get("name")
    if v.format == "peft-adapter" and recipe != "merge-fedavg":
        return "adapter"
    return hub_relations().get(recipe or "")


def hub_lineage(catalog: Any, v: Any) -> dict[str, Any]:
    """`base_model` (the parents' refs; for an adapter the base it is pinned to) and
    `base_model_relation`, the fields the Hub reads to draw its model tree."""
    parents = [f"{p['model']}@{p['version']}" for p in catalog.parents(v.id)]
    pin = v.meta.get("adapter") or {}
    if v.format == "peft-adapter" and pin.get("base_ref"):  # an adapter: its base; a merge of adapters: the sites
        merged = (v.recipe or {}).get("name") == "merge-fedavg"
        parents = [p for p in parents if p != pin["base_ref"]] if merged else [pin["base_ref"]]
    if not parents:
        return {}
    out: dict[str, Any] = {"base_model": parents[0] if len(parents) == 1 else parents}
    relation = base_model_relation(v)
    if relation:
        out["base_model_relation"] = relation
    return out


def privacy_lines(ledger: Mapping[str, Any]) -> list[str]:
    """The privacy section of a card: the guarantee and what it rests on."""
    eps = ledger.get("epsilon")
    lines = ["## Privacy", ""]
    if eps is None:
        lines.append(f"No differential-privacy bound: {ledger.get('note', 'not all training data was protected')}.")
    else:
        lines.append(f"Trained with differential privacy: (ε = {float(eps):.4g}, δ = {float(ledger['delta']):.3g}) "
                     f"per {ledger.get('unit', 'training row')}.")
    lines += ["", "| | |", "|---|---|"]
    for key in ("mechanism", "accountant", "target_epsilon", "noise_multiplier", "sample_rate", "steps", "epochs",
                "max_grad_norm", "train_samples", "covers", "library", "inherited_from"):
        if ledger.get(key) is not None:
            lines.append(f"| {key} | {_md(ledger[key])} |")
    for site in ledger.get("sites") or []:
        lines.append(f"| site {_md(site['parent'])} | ε = {float(site['epsilon']):.4g}, δ = {float(site['delta']):.3g} |")
    if ledger.get("assumption"):
        lines += ["", f"Assumption: {ledger['assumption']}."]
    lines.append("")
    return lines


def _key(v: Any) -> str:
    return f"card:{v.model}@{v.version}"


def card_fields(catalog: Any, v: Any) -> dict[str, str]:
    fields = dict(v.meta.get("card") or {})
    fields.update(catalog.get_setting(_key(v), {}) or {})
    return {k: str(val) for k, val in fields.items() if k in CARD_FIELDS}


def set_card_fields(catalog: Any, version_id: int, values: Mapping[str, str], *, actor: str) -> dict[str, str]:
    """Store user-written card fields (intended_use, limitations, license, description)."""
    from relman.catalog.catalog import utcnow

    bad = [k for k in values if k not in CARD_FIELDS]
    if bad:
        raise ReleaseError(f"unknown model-card field(s) {', '.join(bad)} (fields: {', '.join(CARD_FIELDS)})")
    with catalog.transaction():
        v = catalog.get_version(version_id)
        fields = card_fields(catalog, v)
        fields.update({k: str(val) for k, val in values.items()})
        catalog.set_setting(_key(v), fields)
        integrity.commit_event(catalog.db, at=utcnow(), actor=actor, kind="card-edit", model=v.model, version=v.version,
                               payload={"fields": sorted(values)})
    return fields


def _q(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(float(value)) if isinstance(value, float) else str(value)
    return json.dumps(str(value))


def _yaml(obj: Any, indent: int = 0) -> list[str]:
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(obj, Mapping):
        for k, val in obj.items():
            if isinstance(val, (Mapping, list)) and val:
                lines.append(f"{pad}{k}:")
                lines.extend(_yaml(val, indent + 1))
            elif isinstance(val, (Mapping, list)):
                lines.append(f"{pad}{k}: {'{}' if isinstance(val, Mapping) else '[]'}")
            else:
                lines.append(f"{pad}{k}: {_q(val)}")
    elif isinstance(obj, list):
        for item in obj:
            sub = _yaml(item, indent + 1) if isinstance(item, (Mapping, list)) else [f"{pad}  {_q(item)}"]
            first = sub[0].lstrip()
            lines.append(f"{pad}- {first}")
            lines.extend(sub[1:])
    else:
        lines.append(pad + _q(obj))
    return lines


def _md(text: Any) -> str:
    """A table cell: no pipes or newlines that would break the Markdown table."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _dataset_of(m: Mapping[str, Any]) -> str | None:
    return m.get("dataset") or (m.get("context") or {}).get("dataset")


def _ancestry(catalog: Any, v: Any, depth: int = 12) -> list[tuple[int, dict[str, Any]]]:
    out: list[tuple[int, dict[str, Any]]] = []
    frontier = [(1, v.id)]
    seen = {v.id}
    while frontier:
        level, vid = frontier.pop(0)
        if level > depth:
            break
        for p in catalog.parents(vid):
            if p["parent_id"] in seen:
                continue
            seen.add(p["parent_id"])
            out.append((level, p))
            frontier.append((level + 1, p["parent_id"]))
    return out


def _interval(context: Mapping[str, Any]) -> tuple[float, float, float] | None:
    """(low, high, level) of a metric's interval: `interval` + `interval_level` (quality,
    fidelity, timing ratios) or `ci95` (explanations); None when it has none."""
    iv, level = context.get("interval"), context.get("interval_level", 0.95)
    if iv is None and context.get("ci95") is not None:
        iv, level = context["ci95"], 0.95
    try:
        lo, hi = float(iv[0]), float(iv[1])  # type: ignore[index]
    except (TypeError, ValueError, IndexError, KeyError):
        return None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    return lo, hi, float(level)


def plus_minus(value: float, lo: float, hi: float) -> str:
    """"0.912 ± 0.011": the value with the interval's half-width, both to the half-width's second
    significant digit (the exact, possibly asymmetric, bounds go in relman's own fields)."""
    half = (hi - lo) / 2
    if half <= 0 or not math.isfinite(half):
        return f"{value:.4g} ± 0"
    digits = max(0, 1 - math.floor(math.log10(half)))
    return f"{value:.{digits}f} ± {half:.{digits}f}"


def index_metric(m: Mapping[str, Any]) -> dict[str, Any]:
    """One `model-index` metric. The schema's `value` holds one scalar, so a metric with an
    interval states it there as "0.912 ± 0.011"; `relman` keeps the number, the exact bounds,
    the level, the sample count and when it was measured, for tools that read them."""
    ctx = m["context"] or {}
    value = float(m["value"])
    out: dict[str, Any] = {"type": m["name"], "value": value, "name": f"{m['suite']}/{m['name']}"}
    iv = _interval(ctx)
    own: dict[str, Any] = {"value": value, "suite": m["suite"], "measured_at": str(m["created_at"])}
    if iv is not None:
        lo, hi, level = iv
        out["value"] = plus_minus(value, lo, hi)
        own.update({"interval": [lo, hi], "interval_level": level})
    for key in ("n", "split", "max_samples"):
        if ctx.get(key) is not None:
            own[key] = ctx[key]
    out["relman"] = own
    return out


def _dataset_sha(catalog: Any, name: str) -> str | None:
    row = catalog.conn.execute("SELECT sha256 FROM datasets WHERE name = ?", [name]).fetchone()
    return row[0] if row else None


def last_gate_report(catalog: Any, version_id: int) -> dict[str, Any] | None:
    row = catalog.conn.execute("SELECT gate_report FROM transitions WHERE version_id = ?"
                               " AND gate_report LIKE '%\"rules\"%' ORDER BY id DESC LIMIT 1", [version_id]).fetchone()
    return json.loads(row[0]) if row else None


def gguf_file_name(paths: list[str] | None = None) -> str:
    """The .gguf file a gguf version ships (model.gguf when relman wrote it)."""
    names = [p for p in (paths or []) if p.endswith(".gguf")]
    return names[0] if names else "model.gguf"


def ollama_modelfile(info: Mapping[str, Any], gguf_name: str = "model.gguf") -> str:
    """An Ollama Modelfile for a GGUF file whose writer's summary is `info` (a gguf version's
    meta["gguf"]): the file, greedy decoding, the tokenizer's control tokens as stop words. The
    chat template inside the GGUF is jinja, which llama.cpp and LM Studio apply; Ollama wants its
    own Go TEMPLATE, so the prompt is passed through as written."""
    lines = [f"FROM ./{gguf_name}", 'TEMPLATE """{{ .Prompt }}"""', "PARAMETER temperature 0"]
    for stop in info.get("stop_tokens") or []:
        lines.append(f"PARAMETER stop {json.dumps(stop)}")
    return "\n".join(lines) + "\n"


def gguf_usage_lines(name: str, info: Mapping[str, Any], gguf_name: str = "model.gguf") -> list[str]:
    """How to run a GGUF file in llama.cpp, LM Studio and Ollama (a model card section)."""
    kind = ""
    if info.get("file_type"):
        types = info.get("tensor_types")
        kind = f" ({info['file_type']}" + (f": {', '.join(f'{n} {k}' for k, n in sorted(types.items()))} tensors)"
                                           if types else ")")
    tag = name.lower().replace("@", "-")
    return ["## Running it", "",
            f"`{gguf_name}` is one GGUF file{kind} with the tokenizer and chat template inside.", "",
            (f"- **llama.cpp**: `llama-cli -m {gguf_name} -p \"Q: ...\" -n 32 --temp 0`, or serve it with "
             f"`llama-server -m {gguf_name}` (an OpenAI-compatible API that applies the chat template in the file)."),
            (f"- **LM Studio**: `lms import {gguf_name}` (or copy it under `~/.lmstudio/models/<publisher>/{tag}/`), "
             "then load it from the model list."),
            (f"- **Ollama**: with the `Modelfile` below (written beside the file by `relman export --format gguf`): "
             f"`ollama create {tag} -f Modelfile`, then `ollama run {tag}`."), "",
            "```", ollama_modelfile(info, gguf_name).rstrip("\n"), "```", ""]


def render_card(catalog: Any, v: Any) -> str:
    from relman.release.approvals import approvals

    fields = card_fields(catalog, v)
    spec = find_task(v.task)  # the pipeline tag comes from the task table
    metrics = catalog.metrics(v.id)
    results = []
    by_dataset: dict[str, list[dict[str, Any]]] = {}
    by_split: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for m in metrics:
        if m["value"] is not None and _dataset_of(m):
            by_dataset.setdefault(str(_dataset_of(m)), []).append(m)
            by_split.setdefault((str(_dataset_of(m)), str((m["context"] or {}).get("split") or "")), []).append(m)
    for (ds, split), ms in sorted(by_split.items()):
        dataset: dict[str, Any] = {"name": ds, "type": ds}
        if split:
            dataset["split"] = split
        sha = next((m["context"].get("dataset_sha") for m in ms if m["context"].get("dataset_sha")), None) \
            or _dataset_sha(catalog, ds)
        if sha:
            dataset["revision"] = sha  # the exact rows: the catalog's sha256 of the dataset
        results.append({"task": {"type": spec.pipeline_tag if spec else (v.task or "other")}, "dataset": dataset,
                        "metrics": [index_metric(m) for m in ms]})
    tags = ["relman", v.format] + ([v.task] if v.task else []) + ([v.recipe["name"]] if v.recipe.get("name") else [])
    meta: dict[str, Any] = {}
    if v.format in LIBRARIES:
        meta["library_name"] = LIBRARIES[v.format]
    if spec is not None:
        meta["pipeline_tag"] = spec.pipeline_tag
    if fields.get("license"):
        meta["license"] = fields["license"]
    meta["tags"] = list(dict.fromkeys(tags))
    if by_dataset:
        meta["datasets"] = sorted(by_dataset)
    if results:
        meta["model-index"] = [{"name": f"{v.model}-{v.version}", "results": results}]
    meta.update(hub_lineage(catalog, v))
    meta["relman"] = {"model": v.model, "version": v.version, "phase": v.phase, "manifest_sha256": v.manifest_sha256,
                      "parents": [f"{p['model']}@{p['version']}" for p in catalog.parents(v.id)]}
    lines = ["---", *_yaml(meta), "---", "", f"# {v.model} {v.version}", ""]
    if fields.get("description"):
        lines += [fields["description"], ""]
    lines += ["| | |", "|---|---|", f"| phase | {v.phase} |", f"| format | {v.format} |", f"| task | {v.task or ''} |",
              f"| architecture | {v.architecture or ''} |", f"| parameters | {v.params or 0:,} |",
              f"| dtype | {v.dtype or ''} |", f"| size | {v.size_bytes:,} bytes |",
              f"| created | {v.created_at[:19]} by {v.created_by} |",
              f"| manifest sha256 | `{v.manifest_sha256}` |", ""]
    hint = f"_Not filled in yet: `relman card {v.ref} --set {{}}=\"...\"`_"
    lines += ["## Intended use", "", fields.get("intended_use") or hint.format("intended_use"), "",
              "## Limitations", "", fields.get("limitations") or hint.format("limitations"), ""]
    lines += ["## Lineage", ""]
    anc = _ancestry(catalog, v)
    if not anc:
        lines.append("Imported directly (no parent version in the catalog).")
    for level, p in anc:
        pv = catalog.get_version(p["parent_id"])
        how = pv.recipe.get("name") or "import"
        rel = f" ({p['relation']})" if p["relation"] else ""
        lines.append(f"{'  ' * (level - 1)}- {p['model']}@{p['version']}{rel}, made by {how}")
    lines.append("")
    pin = v.meta.get("adapter") or {}
    if v.format == "peft-adapter" and pin:
        lines += ["## Adapter", "", f"A LoRA adapter (r = {pin.get('r')}, alpha = {pin.get('lora_alpha')}, on "
                  f"{', '.join(pin.get('target_modules') or [])}) of **{pin.get('base_ref')}**, pinned to that base's "
                  f"manifest sha256 `{pin.get('base_manifest_sha256')}`: relman refuses to load it onto anything else. "
                  "With PEFT: `PeftModel.from_pretrained(base_model, this_folder)`.", ""]
    post = v.meta.get("postprocessor") or {}
    if v.format == "fair-threshold" and post:
        lines += ["## Post-processing: per-group thresholds", "",
                  f"**The group attribute is needed at prediction time.** This version runs **{post.get('parent')}** "
                  f"(pinned by manifest sha256) and decides '{post.get('positive_label')}' with thresholds fitted per "
                  f"group ({', '.join(post.get('groups') or [])}) by Fairlearn's ThresholdOptimizer under "
                  f"{post.get('constraint')}; a row without a group, or of a group not listed, cannot be decided. "
                  "Outside relman: run the parent, take the softmax probability of that label, and apply "
                  "`postprocess.py` (standard library) with `relman_postprocessor.json`. Its outputs are "
                  "decisions, not calibrated probabilities; ONNX export of this version is refused (the rule is "
                  "not a graph).", ""]
    if v.format == "gguf":
        lines += gguf_usage_lines(f"{v.model}-{v.version}", v.meta.get("gguf") or {},
                                  gguf_file_name([a["path"] for a in catalog.artifacts(v.id)]))
    if v.meta.get("privacy"):
        lines += privacy_lines(v.meta["privacy"])
    if v.recipe:
        lines += ["## Recipe", "", "```json", json.dumps(v.recipe, indent=2, sort_keys=True, default=str), "```", ""]
    ds_rows = []
    for name in sorted(by_dataset):
        row = catalog.conn.execute("SELECT sha256, n_rows, format FROM datasets WHERE name = ?", [name]).fetchone()
        ds_rows.append(f"| {name} | {row[2] if row else ''} | {row[1] if row else ''} | "
                       f"{('`' + row[0][:16] + '`') if row else 'not in this catalog'} |")
    if ds_rows:
        lines += ["## Datasets", "", "| dataset | format | rows | sha256 |", "|---|---|---|---|", *ds_rows, ""]
    lines += ["## Metrics", ""]
    if metrics:
        lines += ["| suite | metric | value | dataset | conditions | measured |", "|---|---|---|---|---|---|"]
        for m in metrics:
            ctx = ", ".join(f"{k}={m['context'][k]}" for k in sorted(m["context"])
                            if k not in ("dataset", "interval", "interval_level", "ci95"))[:160]
            val = "" if m["value"] is None else f"{m['value']:.6g}"
            iv = _interval(m["context"] or {}) if m["value"] is not None else None
            if iv is not None:  # the interval beside the value, as in model-index
                val = f"{plus_minus(float(m['value']), iv[0], iv[1])} ({iv[2]:.0%}: {iv[0]:.4g} to {iv[1]:.4g})"
            lines.append(f"| {_md(m['suite'])} | {_md(m['name'])} | {val} | {_md(_dataset_of(m) or '')} | {_md(ctx)} | "
                         f"{m['created_at'][:19]} |")
    else:
        lines.append("No metrics recorded yet.")
    lines.append("")
    from relman.release.explain_card import explainability_lines

    lines += explainability_lines(catalog, v, metrics)
    rep = last_gate_report(catalog, v.id)
    lines += ["## Release", ""]
    if rep:
        lines += [f"Last gate report ({rep.get('from_phase')} → {rep.get('to_phase')}, policy revision "
                  f"{rep.get('policy_revision')}, {str(rep.get('evaluated_at', ''))[:19]}): "
                  f"{'passed' if rep.get('passed') else 'FAILED'}", "",
                  "| rule | result | detail |", "|---|---|---|"]
        for r in rep.get("rules", []):
            lines.append(f"| `{_md(r['rule'])}` | {r['status']} | {_md(r['reason'])} |")
        if not rep.get("rules"):
            lines.append("| (no rules guard this phase) | | |")
        lines.append("")
    else:
        lines += ["No gate report yet (never promoted).", ""]
    appr = approvals(catalog, v.id)
    if appr:
        lines += ["| approved for | by | at | comment | valid |", "|---|---|---|---|---|"]
        for a in appr:
            lines.append(f"| {a['to_phase']} | {_md(a['by'])} | {a['at'][:19]} | {_md(a['comment'])} | "
                         f"{'yes' if a['valid'] else 'no (metrics changed since)'} |")
    else:
        lines.append("No approvals.")
    origin = v.meta.get("imported_bundle")
    if origin:
        hist = v.meta.get("origin") or {}
        lines += ["", "## Origin", "",
                  f"Imported from bundle `{origin.get('file')}` signed by key {origin.get('key_name')} "
                  f"({origin.get('key_id')}), exported {str(origin.get('exported_at'))[:19]} by "
                  f"{origin.get('exported_by')}; phase there: {origin.get('source_phase')}."]
        if origin.get("missing_parents"):
            lines.append(f"Parents not in this catalog: {', '.join(origin['missing_parents'])}.")
        if hist.get("transitions"):
            lines += ["", "| at (source) | change | who | why |", "|---|---|---|---|"]
            for t in hist["transitions"]:
                lines.append(f"| {str(t['at'])[:19]} | {t['from_phase']} → {t['to_phase']} | {_md(t['who'])} | "
                             f"{_md(t['why'])} |")
    lines += ["", f"_Generated by relman from catalog {catalog.root}._", ""]
    return "\n".join(lines)


def write_model_card(catalog: Any, version_id: int, path: Path | str) -> Path:
    from relman.fsutil import atomic_write

    path = Path(path).expanduser()
    if not path.parent.is_dir():
        raise ReleaseError(f"folder {path.parent} does not exist")
    atomic_write(path, render_card(catalog, catalog.get_version(version_id)).encode("utf-8"))
    return path
