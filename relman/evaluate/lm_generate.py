"""The `generate` suite: greedy answers to questions, scored by normalised exact match.

Each `qa` item's prompt (or an `mcq` item's context, whose answer is then its right choice) is continued greedily by `relman.tasks.generation.generate_greedy` (the
one decoding loop every suite and view uses; stop at a newline by default). The answer is the
output — or, with `gen_regex`, the first match of that pattern in it (its first group when it
has one), as lm-eval's regex filter takes it — normalised as SQuAD does (lower case, punctuation
and the articles a/an/the removed, whitespace collapsed) and compared with each accepted answer.

Metrics: `generate_exact_match` (95 % Wilson interval), `generate_items`,
`generate_new_tokens_mean`; with a parent / production version run on the same prompts in the
same job: `generate_exact_match_delta_vs_parent` / `_vs_production` (paired: McNemar exact p,
Agresti–Min interval), and `generate_agreement_vs_parent` / `_vs_production`, the share of
prompts whose greedy output text equals the reference's (Wilson interval) — a quantised child
that keeps its perplexity but changes its answers shows here first.

Every output is kept: one evaluation artifact (kind `generations`, JSON) per evaluated version
holds each prompt, its accepted answers, the version's output and whether it matched, and the
references' outputs on the same prompts, so `relman generations X --flips` lists the answers a
child flipped against its parent without re-running anything.
"""

from __future__ import annotations

import json
import re
import string
from typing import Any

import numpy as np

from relman.catalog import EvalArtifact, Metric
from relman.errors import EvaluationError
from relman.evaluate.env import SuiteEnv

SUITE = "generate"
ARTIFACT_KIND = "generations"
SCHEMA = "relman-generations/1"

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalise(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def extract(output: str, pattern: re.Pattern[str] | None) -> str:
    """The answer within an output: the first regex match (its first group if any), else all of it."""
    if pattern is None:
        return output
    m = pattern.search(output)
    if m is None:
        return ""
    return m.group(1) if m.groups() else m.group(0)


def is_match(output: str, answers: list[str], pattern: re.Pattern[str] | None) -> bool:
    got = normalise(extract(output, pattern))
    return any(got == normalise(a) for a in answers)


def compile_regex(raw: str) -> re.Pattern[str] | None:
    if not raw:
        return None
    try:
        return re.compile(raw)
    except re.error as e:
        raise EvaluationError(f"gen_regex {raw!r} is not a valid regular expression ({e})") from None


def generate_for(runner: Any, prompts: list[str], options: dict[str, Any]) -> list[Any]:
    """Greedy outputs of one runner's version (its loaded torch model, or the ONNX seam)."""
    from relman.tasks.generation import generate_greedy

    model = getattr(runner.backend, "model", None) if runner.fmt != "onnx" else None
    return generate_greedy(runner.folder, runner.fmt, prompts, max_new_tokens=int(options.get("gen_max_new_tokens", 16)),
                           stop_at_newline=bool(options.get("gen_stop_at_newline", True)), device=runner.device,
                           threads=runner.threads, model=model, tokenizer=runner.preprocessor if model is not None else None)


def qa_items(env: SuiteEnv) -> tuple[Any, list[dict[str, Any]]]:
    ds = env.eval_data(SUITE)
    if ds.kind == "mcq" and ds.items is not None:  # a multiple-choice item asks for its right choice
        return ds, [{"prompt": it["context"], "answers": [it["choices"][it["gold"]].strip()]} for it in ds.items]
    if ds.kind != "qa" or ds.items is None:
        raise EvaluationError(f"suite '{SUITE}' needs question/answer items (a dataset of format qa or an "
                              f"lm-eval generate_until task), but dataset '{ds.name}' holds {ds.kind} data")
    return ds, ds.items


def run(env: SuiteEnv) -> list[Metric]:
    from relman.evaluate import stats

    pattern = compile_regex(str(env.options.get("gen_regex") or ""))
    runner = env.runner()
    ds, items = qa_items(env)
    prompts = [it["prompt"] for it in items]
    others = env.comparators() if env.options.get("paired", True) else []
    env.progress(0.0, f"generate {len(prompts)} prompts")
    gens = generate_for(runner, prompts, env.options)
    ok = np.array([is_match(g.text, it["answers"], pattern) for g, it in zip(gens, items)], dtype=bool)
    n = len(items)
    settings = {"max_new_tokens": int(env.options.get("gen_max_new_tokens", 16)),
                "stop_at_newline": bool(env.options.get("gen_stop_at_newline", True)),
                "regex": pattern.pattern if pattern is not None else None, "decoding": "greedy",
                "normalisation": "SQuAD (lower case, no punctuation or articles)"}
    out = [
        env.metric(SUITE, "generate_exact_match", float(ok.mean()), n=n, interval=list(stats.wilson(float(ok.sum()), n)),
                   interval_level=0.95, method="Wilson", **settings),
        env.metric(SUITE, "generate_items", float(n)),
        env.metric(SUITE, "generate_new_tokens_mean", float(np.mean([g.new_tokens for g in gens])), **settings),
    ]
    references: dict[str, Any] = {}
    for k, cmp in enumerate(others):
        env.progress(0.5 * (k + 1) / (len(others) + 1) + 0.5, f"generate vs {'/'.join(cmp.scopes)}")
        r_gens = generate_for(cmp.runner, prompts, env.options)
        r_ok = np.array([is_match(g.text, it["answers"], pattern) for g, it in zip(r_gens, items)], dtype=bool)
        same = np.array([a.text == b.text for a, b in zip(gens, r_gens)], dtype=bool)
        d = stats.paired_proportion_delta(ok, r_ok)
        for scope in cmp.scopes:
            references[scope] = {"ref": cmp.ref, "outputs": [g.text for g in r_gens], "correct": r_ok.tolist()}
            out.append(env.metric(SUITE, f"generate_exact_match_delta_vs_{scope}", d["value"], paired=True,
                                  reference=cmp.ref, interval=[d["lower"], d["upper"]], interval_level=0.95,
                                  n=d["n"], method=d["method"], mcnemar_p=d["mcnemar_p"],
                                  reference_value=float(r_ok.mean()), child_only_wrong=d["child_only_wrong"],
                                  child_only_right=d["child_only_right"], **settings))
            out.append(env.metric(SUITE, f"generate_agreement_vs_{scope}", float(same.mean()), paired=True,
                                  reference=cmp.ref, interval=list(stats.wilson(float(same.sum()), n)),
                                  interval_level=0.95, n=n, method="Wilson", differing=int(n - same.sum()),
                                  **settings))
    if env.model.info is not None:
        doc = {"schema": SCHEMA, "version": env.model.info.ref, "dataset": ds.name, "dataset_sha": ds.sha256,
               "settings": settings,
               "items": [{"prompt": it["prompt"], "answers": it["answers"], "output": g.text, "correct": bool(c),
                          "new_tokens": g.new_tokens, "token_ids": g.token_ids}
                         for it, g, c in zip(items, gens, ok)],
               "references": references}
        path = env.scratch() / f"generations-{env.model.info.id}.json"
        path.write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
        env.artifacts.append(EvalArtifact(
            version_id=env.model.info.id, suite=SUITE, kind=ARTIFACT_KIND, path=path, method="greedy",
            dataset_id=ds.id, meta={"items": n, "exact_match": float(ok.mean()),
                                    "references": {s: r["ref"] for s, r in references.items()}}))
    return out


def flips(doc: dict[str, Any], scope: str = "parent") -> list[dict[str, Any]]:
    """Items whose correctness differs between the version and its reference (`scope`) in a stored
    generations document: each with the prompt, answers, both outputs and which way it flipped."""
    ref = (doc.get("references") or {}).get(scope)
    if ref is None:
        return []
    rows = []
    for it, r_out, r_ok in zip(doc["items"], ref["outputs"], ref["correct"]):
        if bool(it["correct"]) != bool(r_ok):
            rows.append({"prompt": it["prompt"], "answers": it["answers"], "output": it["output"],
                         "reference_output": r_out, "flip": "lost" if r_ok else "gained"})
    return rows
