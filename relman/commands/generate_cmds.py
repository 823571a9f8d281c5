"""`relman generate`: the same prompts through one or more causal-LM versions, side by side
(the GUI's Generate view as a command; a "generate" job, relman/app/generation.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from relman.commands._shared import AppState, emit_json, pass_state
from relman.jobs.wait import wait_option


def _print(result: dict[str, Any]) -> None:
    versions = result["versions"]
    for i, p in enumerate(result["prompts"]):
        click.echo(f"[{i}] {p['prompt']!r}" + (f"  (expected {p['answer']!r})" if p.get("answer") else ""))
        first = versions[0]["outputs"][i]["text"] if versions else ""
        for k, v in enumerate(versions):
            out = v["outputs"][i]
            mark = ("✓ " if out["exact_match"] else "✗ ") if "exact_match" in out else ""
            differs = " (differs)" if k > 0 and out["text"] != first else ""
            click.echo(f"    {v['ref']}: {mark}{out['text']!r}{differs}")
    for v in versions:
        parts = [f"engine {v['engine']}"]
        if v.get("exact_match") is not None:
            parts.append(f"exact match {v['exact_match']}/{v['answered']}")
        if v.get("tokens_per_s"):
            parts.append(f"{v['tokens_per_s']:.1f} tokens/s")
        if v.get("ttft_p50_ms") is not None:
            parts.append(f"time to first token {v['ttft_p50_ms']:.1f} ms (median)")
        click.echo(f"{v['ref']}: " + ", ".join(parts))


@click.command()
@click.argument("refs", nargs=-1, required=True)
@click.option("--prompt", "-p", "prompts", multiple=True, help="A prompt (repeatable).")
@click.option("--prompts", "-f", "prompt_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help='A JSONL prompt set: {"prompt": ..., "answer": ...} per line (answer optional).')
@click.option("--max-new-tokens", "-n", type=int, default=32, show_default=True, help="New tokens per prompt at most.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda:N.")
@click.option("--threads", type=int, default=1, show_default=True, help="CPU threads for inference.")
@wait_option
@click.option("--json", "as_json", is_flag=True,
              help='Print the job result {"prompts", "versions": [{"ref", "engine", "outputs": [{"text", '
                   '"new_tokens", "ttft_ms", "tokens_per_s", "exact_match"?}], ...}]}, or the queued job id.')
@pass_state
def generate(state: AppState, refs: tuple[str, ...], prompts: tuple[str, ...], prompt_file: Path | None,
             max_new_tokens: int, device: str, threads: int, wait: bool, as_json: bool) -> None:
    """Greedy answers of REF... (causal-LM versions, MODEL@VERSION) to the same prompts, side by
    side, with exact match when the prompt set has answers, tokens/s and time to first token.
    Queues one generate job (--wait runs it and prints the answers)."""
    from relman.app.generation import queue_generation, read_prompt_file, result_of

    cat = state.catalog()
    items = [{"prompt": p} for p in prompts] + (read_prompt_file(prompt_file) if prompt_file else [])
    job_id = queue_generation(cat, list(refs), items, max_new_tokens=max_new_tokens, device=device, threads=threads)
    if not wait:
        if as_json:
            emit_json({"jobs": [job_id]})
        else:
            click.echo(f"queued job {job_id}: {len(items)} prompt(s) through {len(refs)} version(s); "
                       "add --wait to see the answers")
        return
    from relman.jobs.wait import wait_or_raise

    wait_or_raise(cat, [job_id])
    result = result_of(cat, job_id) or {"prompts": items, "versions": []}
    emit_json(result) if as_json else _print(result)


COMMANDS: list[click.Command] = [generate]
