"""`relman evaluate` (queue metric suites on versions) and `relman suites` (list them)."""

from __future__ import annotations

from typing import Any

import click

from relman.commands._shared import AppState, emit_json, pass_state, table
from relman.jobs.wait import wait_option


def _csv_ints(values: tuple[str, ...], what: str) -> list[int] | None:
    from relman.errors import EvaluationError

    items = [v.strip() for raw in values for v in raw.split(",") if v.strip()]
    try:
        return [int(v) for v in items] or None
    except ValueError:
        raise EvaluationError(f"{what} takes whole numbers (e.g. 1,8), got '{', '.join(values)}'") from None


def _options(pairs: tuple[str, ...]) -> dict[str, Any]:
    from relman.errors import EvaluationError

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise EvaluationError(f"--option '{pair}' is not NAME=VALUE")
        out[key.strip()] = value.strip()
    return out


@click.command()
@click.argument("refs", nargs=-1, required=True)
@click.option("--dataset", "-d", help="Registered dataset (name or id); needed by quality, fidelity, robustness, "
                                      "fairness.")
@click.option("--suite", "-s", "suites", multiple=True,
              help="Suites to run, comma-separated or repeated (default: size,latency[,quality]). "
                   "See 'relman suites'.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda:N.")
@click.option("--batch-size", "-b", "batch_sizes", multiple=True,
              help="Latency batch sizes, e.g. 1,8 (memory uses the first). Default 1,8.")
@click.option("--seq-len", "seq_lens", multiple=True, help="Latency sequence lengths for text models. Default 128.")
@click.option("--threads", type=int, help="CPU threads for inference (default: the worker's budget).")
@click.option("--max-samples", type=int, help="Evaluate on at most this many rows (the first ones).")
@click.option("--parent", help="Version to compare against in the fidelity suite (default: the first parent).")
@click.option("--option", "-o", "option_pairs", multiple=True, metavar="NAME=VALUE",
              help="A suite option, e.g. min_samples=500 or positive_label=yes. Repeatable.")
@wait_option
@click.option("--json", "as_json", is_flag=True, help="Print the job ids (or, with --wait, the metrics) as JSON.")
@pass_state
def evaluate(state: AppState, refs: tuple[str, ...], dataset: str | None, suites: tuple[str, ...], device: str,
             batch_sizes: tuple[str, ...], seq_lens: tuple[str, ...], threads: int | None, max_samples: int | None,
             parent: str | None, option_pairs: tuple[str, ...], wait: bool, as_json: bool) -> None:
    """Evaluate versions REF... (MODEL@VERSION) with metric suites: one job per version, all with
    the same data, device and settings. Results appear in 'relman show REF'."""
    from relman.app.evaluate import queue_evaluation

    cat = state.catalog()
    names = [n.strip() for raw in suites for n in raw.split(",") if n.strip()] or None
    job_ids = queue_evaluation(cat, list(refs), dataset=dataset, suites=names, device=device,
                               batch_sizes=_csv_ints(batch_sizes, "--batch-size"),
                               seq_lens=_csv_ints(seq_lens, "--seq-len"), threads=threads, max_samples=max_samples,
                               parent=parent, options=_options(option_pairs))
    if not wait:
        if as_json:
            emit_json({"jobs": job_ids})
        else:
            for ref, j in zip(refs, job_ids):
                click.echo(f"queued job {j}: evaluate {ref}")
        return
    from relman.jobs.wait import wait_or_raise

    # Timing suites measured side by side would disturb each other: when this process drives
    # the queue itself, it runs the jobs one at a time (each still in its own worker process).
    timing = names is None or any(n in ("latency", "memory") for n in names)
    wait_or_raise(cat, job_ids, cpu_slots=1 if timing else None)
    results = []
    for ref in refs:
        v = cat.resolve(ref)
        results.append({"ref": v.ref, "metrics": {m["name"]: m["value"] for m in cat.metrics(v.id)}})
    if as_json:
        emit_json({"jobs": job_ids, "results": results})
        return
    for r in results:
        click.echo(r["ref"])
        rows = [[k, "" if val is None else f"{val:.6g}"] for k, val in sorted(r["metrics"].items())]
        click.echo("  " + table(rows, ["METRIC", "VALUE"]).replace("\n", "\n  "))


@click.command("suites")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def suites_cmd(as_json: bool) -> None:
    """List the evaluation suites, the tasks they apply to and their options."""
    from relman.evaluate.registry import SUITES, all_suite_names

    items = [SUITES[n] for n in all_suite_names()]
    if as_json:
        emit_json([{"name": s.name, "title": s.title, "dataset": s.dataset, "tasks": list(s.tasks),
                    "description": s.description,
                    "options": [{"name": o.name, "type": o.type.__name__, "default": o.default, "help": o.help}
                                for o in s.options]} for s in items])
        return
    rows = [[s.name, s.dataset, ", ".join(s.tasks), ", ".join(f"{o.name}={o.default}" for o in s.options)]
            for s in items]
    click.echo(table(rows, ["SUITE", "DATASET", "TASKS", "OPTIONS"]))


def metric_flags(context: dict[str, Any]) -> str:
    """Short marks for a measurement's conditions: load, other jobs beside it, its interval."""
    marks = []
    if context.get("under_load"):
        marks.append(f"load {context.get('load_avg_1m') or 0:.1f}")
    if context.get("beside_jobs") or context.get("concurrent_jobs"):
        marks.append(f"beside jobs {','.join(str(j) for j in context.get('other_jobs', [])) or '?'}")
    if isinstance(context.get("interval"), (list, tuple)) and len(context["interval"]) == 2:
        lo, hi = context["interval"]
        marks.append(f"95% [{lo:.4g}, {hi:.4g}]")
    if context.get("bounded_by"):
        marks.append(f"bounded by {context['bounded_by']}")
    return "; ".join(marks)


@click.command("metrics")
@click.argument("ref")
@click.option("--all", "show_all", is_flag=True, help="Every measurement ever stored (history), not only the "
                                                    "current one per suite, metric, dataset and device.")
@click.option("--name", "names", multiple=True, help="Only these metric names (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of objects with name, value, suite, "
                                                     "dataset, context, measured_at.")
@pass_state
def metrics_cmd(state: AppState, ref: str, show_all: bool, names: tuple[str, ...], as_json: bool) -> None:
    """Metrics of REF: the current measurement of each (suite, metric, dataset, device), or with
    --all the whole history (re-evaluating appends, nothing is overwritten), oldest first, with
    the conditions each was measured under (load, other jobs running, 95 % interval)."""
    cat = state.catalog()
    v = cat.resolve(ref)
    rows = cat.metrics(v.id, latest=not show_all)
    if names:
        rows = [r for r in rows if r["name"] in names]
    items = [{"name": r["name"], "value": r["value"], "suite": r["suite"],
              "dataset": r["dataset"] or r["context"].get("dataset"), "context": r["context"],
              "measured_at": r["measured_at"], "job": r["job_id"]} for r in rows]
    if as_json:
        emit_json(items)
        return
    click.echo(f"{v.ref}: {'all' if show_all else 'current'} measurements ({len(items)})")
    table_rows = [[i["suite"], i["name"], "" if i["value"] is None else f"{i['value']:.6g}", i["dataset"] or "",
                   i["measured_at"][:19].replace("T", " "), metric_flags(i["context"])] for i in items]
    click.echo(table(table_rows, ["SUITE", "METRIC", "VALUE", "DATASET", "MEASURED", "CONDITIONS"]))


@click.command("generations")
@click.argument("ref")
@click.option("--flips", is_flag=True, help="Only the prompts whose answer was right for one version and wrong for "
                                           "the other (REF against its parent, or --against production).")
@click.option("--against", type=click.Choice(["parent", "production"]), default="parent", show_default=True,
              help="The reference whose outputs (stored in the same evaluation) REF is compared with.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as a JSON list.")
@pass_state
def generations_cmd(state: AppState, ref: str, flips: bool, against: str, as_json: bool) -> None:
    """Greedy outputs stored by REF's newest `generate` evaluation: each prompt, the accepted
    answers, REF's output and the reference's output on the same prompt. With --flips, only the
    answers REF lost or gained against its parent (or production)."""
    import json

    from relman.errors import NotFound
    from relman.evaluate.lm_generate import ARTIFACT_KIND
    from relman.evaluate.lm_generate import flips as find_flips

    cat = state.catalog()
    v = cat.resolve(ref)
    arts = cat.evaluation_artifacts(v.id, kind=ARTIFACT_KIND)
    if not arts:
        raise NotFound(f"{v.ref} has no stored generations (run: relman evaluate {v.ref} --suite generate "
                       "--dataset D --wait)")
    doc = json.loads(cat.read_blob(arts[-1]["sha256"]).decode("utf-8"))
    refs = doc.get("references") or {}
    if flips:
        if against not in refs:
            raise NotFound(f"{v.ref}'s generations were not compared with a {against} version "
                           f"(compared with: {', '.join(refs) or 'none'})")
        rows = find_flips(doc, against)
    else:
        other = refs.get(against)
        rows = [{"prompt": it["prompt"], "answers": it["answers"], "output": it["output"], "correct": it["correct"],
                 **({"reference_output": other["outputs"][i]} if other else {})} for i, it in enumerate(doc["items"])]
    if as_json:
        emit_json(rows)
        return
    from relman.names import terminal_safe as printable

    head = f"{v.ref}: {len(rows)} {'flipped answers' if flips else 'generations'}"
    if against in refs:
        head += f" (against {against} {refs[against]['ref']})"
    click.echo(head)
    cols = ["PROMPT", "ANSWER", "OUTPUT"] + (["REFERENCE", "FLIP"] if flips else ["OK"])
    body = [[printable(r["prompt"])[:48], printable("|".join(r["answers"]))[:20], printable(r["output"])[:30]]
            + ([printable(r["reference_output"])[:30], r["flip"]] if flips else ["yes" if r["correct"] else "no"])
            for r in rows]
    click.echo(table(body, cols))


COMMANDS: list[click.Command] = [evaluate, suites_cmd, metrics_cmd, generations_cmd]
