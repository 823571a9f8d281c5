"""Compression commands: compress, recipes, optimize."""

from __future__ import annotations

from typing import Any

import click

from relman.commands._shared import AppState, emit_json, pass_state, table
from relman.units import human_size
from relman.jobs.wait import wait_option


def parse_pairs(pairs: tuple[str, ...]) -> dict[str, str]:
    """`--param k=v` pairs → a dict (values stay strings; the recipe's typed Params parse them)."""
    from relman.errors import RecipeError

    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RecipeError(f"--param expects KEY=VALUE, got '{pair}'")
        if key in out:
            raise RecipeError(f"--param {key} given twice")
        out[key] = value
    return out


def _wait(cat: Any, job_id: int) -> tuple[dict[str, Any], str | None]:
    """Wait for the job and the jobs it queued; (its row, one line on what failed or None)."""
    from relman.jobs.queue import get_job
    from relman.jobs.wait import failure_summary, wait_for_jobs

    rows = wait_for_jobs(cat, [job_id])
    return get_job(cat, job_id), failure_summary(rows)


def _fail_after(problem: str | None) -> None:
    if problem:
        from relman.errors import JobError

        raise JobError(problem)


@click.command()
@click.argument("ref")
@click.argument("recipe")
@click.option("--param", "-p", "pairs", multiple=True, metavar="KEY=VALUE",
              help="A recipe parameter (repeatable); see 'relman recipes'.")
@click.option("--dataset", "-d", help="Registered dataset: calibration / training data, and the quality evaluation.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda:N.")
@click.option("--model", "-m", help="Model name of the child (default: the parent's).")
@click.option("--version", "version", help="Child version X.Y.Z (default: next patch after the parent).")
@click.option("--no-evaluate", is_flag=True, help="Do not queue the child's evaluation against its parent.")
@click.option("--json", "as_json", is_flag=True, help="Print the job (after --wait, with its result) as JSON.")
@wait_option
@pass_state
def compress(state: AppState, ref: str, recipe: str, pairs: tuple[str, ...], dataset: str | None, device: str,
             model: str | None, version: str | None, no_evaluate: bool, as_json: bool, wait: bool) -> None:
    """Turn REF (MODEL@VERSION; several comma-separated for a merge) into a new child version
    with RECIPE, as a background job. The child is then evaluated against its parent."""
    from relman.app.compress import queue_compression
    from relman.jobs.queue import get_job

    cat = state.catalog()
    job_id = queue_compression(cat, ref, recipe, parse_pairs(pairs), device=device, dataset=dataset, model=model,
                               version=version, evaluate=not no_evaluate)
    if not wait:
        if as_json:
            emit_json(get_job(cat, job_id))
        else:
            click.echo(f"queued compress job {job_id} ({recipe} on {ref}); follow it with 'relman jobs show {job_id}'")
        return
    job, problem = _wait(cat, job_id)
    if as_json:
        emit_json(job)
        _fail_after(problem)
        return
    res = job["result"] or {}
    if job["status"] == "succeeded":  # the child is stored even if its evaluation failed
        click.echo(f"stored {res.get('ref')}: {res.get('format')}, {human_size(res.get('size_bytes'))} "
                   f"(parent {human_size(res.get('parent_size_bytes'))})")
        if res.get("evaluation_job"):
            click.echo(f"evaluated against its parent in job {res['evaluation_job']}: relman show {res.get('ref')}")
        elif res.get("evaluation"):
            click.echo(res["evaluation"])
    _fail_after(problem)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON (with every parameter's type and help).")
def recipes(as_json: bool) -> None:
    """List the compression recipes with their parameters and defaults."""
    from relman.compress.registry import all_recipes

    items = [r.describe() for r in all_recipes()]
    if as_json:
        emit_json(items)
        return
    for r in items:
        tasks = f"; tasks {', '.join(r['tasks'])}" if r["tasks"] else ""
        click.echo(f"{r['name']}: {r['title']}  [{', '.join(r['input_formats'])} -> {r['output_format']}{tasks}]")
        if r["description"]:
            click.echo(f"    {r['description']}")
        for p in r["params"]:
            default = ",".join(map(str, p["default"])) if isinstance(p["default"], list) else p["default"]
            choices = f" ({'|'.join(map(str, p['choices']))})" if p["choices"] else ""
            when = " and ".join(f"{k}={'|'.join(str(x).lower() if isinstance(x, bool) else str(x) for x in v)}"
                                for k, v in (p.get("shown_when") or {}).items())
            applies = f"  [applies when {when}]" if when else ""
            click.echo(f"    --param {p['name'] + '=' + str(default):<30} {p['type']}{choices}  {p['help']}{applies}")
        click.echo("")


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "size":
        return human_size(value)
    if kind == "ms":
        return f"{value:.2f} ms"
    return f"{value:.4f}"


@click.command()
@click.argument("ref")
@click.option("--max-drop", type=float, default=0.01, show_default=True,
              help="Largest quality drop allowed (accuracy points as a fraction; relative for perplexity).")
@click.option("--max-ppl-increase", "max_ppl", metavar="PCT",
              help="Language models: the largest relative perplexity increase on --dataset (text), e.g. 3% or 0.03.")
@click.option("--objective", type=click.Choice(["latency", "size"]), default="latency", show_default=True,
              help="What the best version minimises among those within the budget.")
@click.option("--dataset", "-d", help="Registered dataset for quality and calibration (else synthetic agreement).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda:N.")
@click.option("--model", "-m", help="Model name of the tried versions (default: the parent's).")
@click.option("--recipe", "recipe_names", multiple=True, help="Only try these recipes (repeatable).")
@click.option("--max-candidates", type=int, default=None, help="Try at most this many candidates.")
@click.option("--latency-budget", type=float, default=2.0, show_default=True,
              help="Seconds of latency timing per version (the parent and each candidate, same settings).")
@click.option("--json", "as_json", is_flag=True, help="Print the job (after --wait, with its report) as JSON.")
@wait_option
@pass_state
def optimize(state: AppState, ref: str, max_drop: float, max_ppl: str | None, objective: str, dataset: str | None,
             device: str, model: str | None, recipe_names: tuple[str, ...], max_candidates: int | None,
             latency_budget: float, as_json: bool, wait: bool) -> None:
    """Accuracy-aware search: try recipes on REF until one stays within --max-drop; every tried
    version is kept, the Pareto frontier (quality, size, latency) is marked, and the best
    version within the budget is reported as MODEL@VERSION. A causal language model gets the
    INT4 grid (algorithm × block size × INT8 layers), every candidate tried and ranked."""
    from relman.app.compress import queue_optimization
    from relman.jobs.queue import get_job

    cat = state.catalog()
    job_id = queue_optimization(cat, ref, max_drop=max_drop, objective=objective, dataset=dataset, device=device,
                                model=model, recipes=list(recipe_names) or None, max_candidates=max_candidates,
                                latency_budget_s=latency_budget, max_ppl_increase=_fraction(max_ppl))
    if not wait:
        if as_json:
            emit_json(get_job(cat, job_id))
        else:
            n = len(get_job(cat, job_id)["params"]["candidates"])
            click.echo(f"queued optimize job {job_id} ({n} candidates for {ref}); follow it with "
                       f"'relman jobs show {job_id}'")
        return
    job, problem = _wait(cat, job_id)
    if as_json:
        emit_json(job)
    elif job["status"] == "succeeded":
        click.echo(render_report(job["result"] or {}))
    _fail_after(problem)


def _fraction(text: str | None) -> float | None:
    """'3%' -> 0.03, '0.03' -> 0.03; a one-line error for anything else."""
    if text is None:
        return None
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError:
        raise click.BadParameter(f"expected a percentage like 3% or a fraction like 0.03, got '{text}'") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise click.BadParameter(f"expected a finite percentage, got '{text}'")
    return value


def _ratio(f: dict[str, Any]) -> str:
    """The paired p50 ratio to the parent with its interval ('' when not measured)."""
    r, iv = f.get("latency_ratio"), f.get("latency_ratio_interval")
    if r is None:
        return ""
    return f"{r:.3f}" + (f" [{iv[0]:.3f}, {iv[1]:.3f}]" if iv and f.get("label") != "parent" else "")


def render_report(res: dict[str, Any]) -> str:
    """The search report: every tried version beside the parent, the frontier, the verdict."""
    rows = []
    for f in [res.get("parent")] + list(res.get("tried") or []):
        if not f:
            continue
        rows.append([f["ref"], f["label"], _fmt(f["quality"], "q"), _fmt(f["drop"], "q"), _fmt(f["size_bytes"], "size"),
                     _fmt(f["latency_ms"], "ms"), _ratio(f),
                     "yes" if f["meets"] else ("" if f["label"] == "parent" else "no"), "*" if f["pareto"] else ""])
    lines = [f"quality: {res.get('quality_metric')} ({res.get('quality_source')}); max drop {res.get('max_drop')}; "
             f"objective {res.get('objective')}",
             table(rows, ["VERSION", "TRIED", "QUALITY", "DROP", "SIZE", "P50", "P50 ÷ PARENT (95 %)", "MEETS",
                          "PARETO"])]
    for fail in res.get("failed") or []:
        lines.append(f"skipped {fail['label']}: {fail['error']}")
    lines.append(f"meets = quality drop within {res.get('max_drop')} and {res.get('objective')} below the parent's"
                 + (" (latency: the paired ratio's whole 95 % interval below 1)" if res.get("objective") == "latency"
                    else ""))
    lines.append(f"stopped: {res.get('stopped')}")
    if res.get("search") == "all":
        ranked = res.get("within_budget") or []
        lines.append(f"within the budget, best first ({res.get('objective')}, then "
                     f"{'size' if res.get('objective') == 'latency' else 'latency'}): "
                     + (", ".join(f"{r['ref']} ({r['label']})" for r in ranked) if ranked else "none"))
    best, parent = res.get("best_figures"), res.get("parent") or {}
    if best:
        lines.append(f"best: {best['ref']}  quality {_fmt(best['quality'], 'q')} "
                     f"(parent {_fmt(parent.get('quality'), 'q')}), "
                     f"size {_fmt(best['size_bytes'], 'size')} (parent {_fmt(parent.get('size_bytes'), 'size')}), "
                     f"p50 {_fmt(best['latency_ms'], 'ms')} (parent {_fmt(parent.get('latency_ms'), 'ms')}), "
                     f"paired p50 ratio {_ratio(best) or '-'}")
    else:
        lines.append("best: none of the tried versions stays within the quality budget")
    return "\n".join(lines)


@click.group()
def federated() -> None:
    """Secure aggregation for file-based federated averaging of LoRA adapters: each site masks
    its update with pairwise X25519-derived masks; the merging site sees only masked files and
    their sum is the plain FedAvg. A round missing any listed site is refused."""


@federated.command("key")
@click.argument("name")
def federated_key(name: str) -> None:
    """Create this site's X25519 key pair NAME (kept in the keys folder, never in the catalog);
    prints the public line to add to the round's key list."""
    from relman.compress.adapt import secagg

    site = secagg.create_site_key(name)
    click.echo(site.line().rstrip())
    click.echo(f"add this line to the key list every site of the round uses (key id {site.id})", err=True)


@federated.command("mask")
@click.argument("ref")
@click.option("--keys", "key_list", required=True, type=click.Path(dir_okay=False),
              help="The round's key list: one 'relman-x25519 <base64> <name>' line per site.")
@click.option("--key", "key_name", required=True, help="This site's key name ('relman federated key NAME').")
@click.option("--round", "round_id", required=True, help="The round id all sites use; never reused.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="The masked update file to write.")
@click.option("--samples", type=float, help="Example count to weight by (default: the version's train_samples).")
@pass_state
def federated_mask(state: AppState, ref: str, key_list: str, key_name: str, round_id: str, out: str,
                   samples: float | None) -> None:
    """Write the masked update of this site's adapter version REF for one round."""
    from relman.compress.adapt import secagg

    header = secagg.mask_version(state.catalog(), ref, key_name=key_name, key_list=key_list, round_id=round_id,
                                     out=out, samples=samples)
    click.echo(f"wrote {out}: {ref} masked for round {header['round']} ({len(header['roster'])} sites, "
               f"weight {header['weight_mode']})")


@federated.command("merge")
@click.argument("base")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--rank", type=int, default=0, show_default=True, help="Rank of the merged adapter (0 = the sites' r).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda:N.")
@click.option("--no-evaluate", is_flag=True, help="Do not queue the child's evaluation against its parent.")
@wait_option
@pass_state
def federated_merge(state: AppState, base: str, files: tuple[str, ...], rank: int, device: str, no_evaluate: bool,
                    wait: bool) -> None:
    """FedAvg of one round's masked update FILES onto BASE (merge-fedavg with `masked`)."""
    from pathlib import Path

    from relman.app.compress import queue_compression
    from relman.compress.adapt import secagg
    from relman.errors import RecipeError

    paths = [str(Path(f).resolve()) for f in files]
    if any("," in p for p in paths):
        raise RecipeError("a masked update path may not contain ','")
    secagg.check_round([Path(p) for p in paths])  # a bad round is refused before anything is queued
    cat = state.catalog()
    job_id = queue_compression(cat, base, "merge-fedavg", {"masked": ",".join(paths), "adapter_rank": str(rank)},
                               device=device, evaluate=not no_evaluate)
    if not wait:
        click.echo(f"queued compress job {job_id} (secure-aggregation FedAvg of {len(paths)} sites onto {base}); "
                   f"follow it with 'relman jobs show {job_id}'")
        return
    job, problem = _wait(cat, job_id)
    if job["status"] == "succeeded":
        click.echo(f"stored {(job['result'] or {}).get('ref')}: FedAvg of {len(paths)} masked updates")
    _fail_after(problem)


COMMANDS: list[click.Command] = [compress, recipes, optimize, federated]
