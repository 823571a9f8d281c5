"""Side-by-side generation: the same prompts through several causal-LM versions, as a job.

The GUI's generation view (and anyone else) calls `queue_generation`: the checks that need no
model (versions exist, are causal LMs, prompts given and within limits) refuse at once; the
job (`generate_job`, kind "generate") lays each version out, generates greedily
(`relman.tasks.generators.generate_version`: torch KV loop, ONNX KV loop or onnxruntime-genai)
and returns every answer with its token count, time to first token and tokens/s as the job's
result. Nothing is stored besides the job row: this is a look at the outputs, not evidence
(the `generate` evaluation suite stores evidence). Exact match: when a prompt has an answer,
the generation's first line, stripped of whitespace and trailing punctuation, compared without
case (the trained LM answers " blue." to "...A:").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relman.errors import EvaluationError

if TYPE_CHECKING:
    from relman.catalog import Catalog

MAX_PROMPTS = 200
MAX_PROMPT_CHARS = 4000
MAX_NEW_TOKENS = 512


def normalise(text: str) -> str:
    lines = text.strip().splitlines()
    return (lines[0] if lines else "").strip().rstrip(".,;:!?").strip().lower()


def exact_match(text: str, answer: str) -> bool:
    return normalise(text) == normalise(answer)


def parse_prompt_lines(text: str) -> list[dict[str, str]]:
    """The view's prompt editor: one prompt per line, `\\n` for a line break inside it, an
    optional expected answer after a tab. Blank lines are skipped."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        prompt, _, answer = line.partition("\t")
        item = {"prompt": prompt.replace("\\n", "\n")}
        if answer.strip():
            item["answer"] = answer.strip()
        out.append(item)
    return out


def format_prompt_lines(items: list[dict[str, str]]) -> str:
    return "\n".join(i["prompt"].replace("\n", "\\n") + (f"\t{i['answer']}" if i.get("answer") else "")
                     for i in items)


def read_prompt_file(path: Path | str) -> list[dict[str, str]]:
    """A JSONL prompt set: one object per line with "prompt" (or "question") and optionally
    "answer" (or "completion" / "target")."""
    from relman.jsonlimits import loads

    items = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = loads(line, f"{Path(path).name} line {n}", error=EvaluationError)
        prompt = row.get("prompt", row.get("question")) if isinstance(row, dict) else None
        if not isinstance(prompt, str):
            raise EvaluationError(f"{Path(path).name} line {n}: no \"prompt\" string")
        answer = next((row[k] for k in ("answer", "completion", "target") if isinstance(row.get(k), str)), None)
        items.append({"prompt": prompt, **({"answer": answer} if answer else {})})
    return items


def check_request(catalog: Catalog, refs: list[str], prompts: list[dict[str, str]], max_new_tokens: int) -> list[Any]:
    if not refs:
        raise EvaluationError("choose at least one version to generate with")
    if not prompts:
        raise EvaluationError("give at least one prompt")
    if len(prompts) > MAX_PROMPTS:
        raise EvaluationError(f"at most {MAX_PROMPTS} prompts at once, not {len(prompts)}")
    if any(not p.get("prompt") or len(p["prompt"]) > MAX_PROMPT_CHARS for p in prompts):
        raise EvaluationError(f"every prompt must be non-empty and at most {MAX_PROMPT_CHARS} characters")
    if not 1 <= int(max_new_tokens) <= MAX_NEW_TOKENS:
        raise EvaluationError(f"max new tokens must be between 1 and {MAX_NEW_TOKENS}")
    versions = [catalog.resolve(r) for r in refs]
    for v in versions:
        if v.task != "causal-lm":
            raise EvaluationError(f"{v.ref} is a {v.task or 'task-less'} model; only causal-lm versions generate")
    return versions


def queue_generation(catalog: Catalog, refs: list[str], prompts: list[dict[str, str]], *, max_new_tokens: int = 32,
                     device: str = "cpu", threads: int | None = 1, actor: str | None = None) -> int:
    """Queue one "generate" job running `prompts` through every version in `refs`."""
    from relman.jobs.queue import enqueue

    versions = check_request(catalog, refs, prompts, max_new_tokens)
    params = {"version_ids": [v.id for v in versions], "prompts": prompts, "max_new_tokens": int(max_new_tokens),
              "threads": threads}
    return enqueue(catalog, "generate", params, device=device, actor=actor)


def generate_job(params: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Kind "generate": {"version_ids", "prompts", "max_new_tokens", "threads"} ->
    {"prompts": [...], "versions": [{"ref", "format", "engine", "outputs": [...], summary}]}."""
    from relman.modelio.loading import materialize_version
    from relman.tasks.generators import generate_version

    catalog = ctx.catalog
    prompts = params["prompts"]
    texts = [p["prompt"] for p in prompts]
    device = ctx.device if str(getattr(ctx, "device", "cpu")).startswith("cuda") else "cpu"
    out: list[dict[str, Any]] = []
    ids = [int(i) for i in params["version_ids"]]
    for k, vid in enumerate(ids):
        v = catalog.get_version(vid)
        ctx.progress(k / len(ids), f"generating with {v.ref}")
        folder = materialize_version(catalog, vid, Path(ctx.workdir))
        def step(done: int, total: int, k: int = k, ref: str = v.ref) -> None:
            ctx.progress((k + done / max(total, 1)) / len(ids), f"{ref}: {done}/{total} prompts")

        gens = generate_version(folder, v.format, texts, max_new_tokens=int(params["max_new_tokens"]), device=device,
                                threads=params.get("threads"), on_prompt=step)
        rows = []
        for p, g in zip(prompts, gens):
            row = {"text": g.text, "new_tokens": g.new_tokens, "ttft_ms": g.ttft_s * 1000.0,
                   "total_ms": g.total_s * 1000.0, "tokens_per_s": g.decode_tokens_per_s, "stopped": g.stopped}
            if p.get("answer"):
                row["exact_match"] = exact_match(g.text, p["answer"])
            rows.append(row)
        out.append({"version_id": vid, "ref": v.ref, "format": v.format, "engine": gens[0].engine if gens else "",
                    "outputs": rows, **summary(rows)})
        ctx.check_cancelled()
    ctx.progress(1.0, f"{len(prompts)} prompts through {len(ids)} versions")
    return {"prompts": prompts, "versions": out, "max_new_tokens": int(params["max_new_tokens"])}


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per version: exact matches (when answers exist), median time to first token, and
    decode tokens/s over all new tokens after the first."""
    import statistics

    matches = [r["exact_match"] for r in rows if "exact_match" in r]
    ttft = [r["ttft_ms"] for r in rows]
    after = sum(max(0, r["new_tokens"] - 1) for r in rows)
    secs = sum(max(0.0, r["total_ms"] - r["ttft_ms"]) for r in rows) / 1000.0
    return {"exact_match": sum(matches) if matches else None, "answered": len(matches),
            "ttft_p50_ms": statistics.median(ttft) if ttft else None,
            "tokens_per_s": after / secs if secs > 0 else None}


def result_of(catalog: Catalog, job_id: int) -> dict[str, Any] | None:
    row = catalog.conn.execute("SELECT result FROM jobs WHERE id = ?", [job_id]).fetchone()
    if row is None or not row[0]:
        return None
    return json.loads(row[0]) if isinstance(row[0], str) else row[0]
