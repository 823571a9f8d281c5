"""`relman explain`: attributions of a version's predictions (stored ones reused, else a job)."""

from __future__ import annotations

from typing import Any

import click

from relman.commands._shared import AppState, emit_json, pass_state
from relman.jobs.wait import wait_option


def _print(doc: dict[str, Any], reused: bool) -> None:
    from relman.evaluate.explain import METHOD_TITLES

    how = "stored" if reused else "computed"
    click.echo(f"{doc['version']} · {METHOD_TITLES.get(doc['method'], doc['method'])} · dataset {doc.get('dataset')} "
               f"({how})")
    for e in doc["examples"]:
        conf = e.get("confidence")
        conf_txt = f" ({conf:.3f})" if isinstance(conf, (int, float)) else ""
        click.echo(f"#{e['index']}: {e['prediction']}{conf_txt}")
        click.echo("  " + " ".join(f"{f['name']}:{f['score']:+.3g}" for f in e["features"]))


@click.command()
@click.argument("ref")
@click.option("--dataset", "-d", required=True, help="Registered dataset (name or id) whose rows are explained.")
@click.option("--examples", "-n", "examples", type=int, help="Explain this many seeded rows (default 32).")
@click.option("--example", "-i", "example", type=int, help="Explain only this row (0-based index).")
@click.option("--method", "-m", default="auto", show_default=True,
              type=click.Choice(["auto", "ig", "occlusion", "shap", "lime", "attention"]),
              help="ig (Integrated Gradients, PyTorch versions), attention (attention rollout, PyTorch "
                   "transformers), occlusion, shap or lime (any version, forward pass "
                   "only); auto picks ig when the version has gradients.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the row choice (and of KernelSHAP).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda:N.")
@click.option("--threads", type=int, help="CPU threads for inference (default: the worker's budget).")
@wait_option
@click.option("--json", "as_json", is_flag=True,
              help='Print {"version", "method", "examples": [{"index", "prediction", "features": [{"name", '
                   '"score"}]}]} (features in input order), or the queued job id.')
@pass_state
def explain(state: AppState, ref: str, dataset: str, examples: int | None, example: int | None, method: str,
            seed: int, device: str, threads: int | None, wait: bool, as_json: bool) -> None:
    """Explain the predictions of REF (MODEL@VERSION) on rows of a dataset: which tokens (text) or
    patches (images) each prediction rests on. Stored attributions are reused; otherwise an
    explain job is queued (--wait runs it and prints the result)."""
    from relman.app.explain import plan_explain, queue_explain, randomisation_warning, stored_explanation

    cat = state.catalog()
    params = plan_explain(cat, ref, dataset, examples=examples, example=example, method=method, seed=seed,
                          threads=threads)
    warning = randomisation_warning(cat, params["version_id"])
    if warning and not as_json:
        click.echo(f"WARNING: {warning}", err=True)
    doc = stored_explanation(cat, params)
    if doc is not None:
        emit_json(_public(doc, warning)) if as_json else _print(doc, reused=True)
        return
    job_id = queue_explain(cat, params, device=device)
    if not wait:
        if as_json:
            emit_json({"jobs": [job_id]})
        else:
            click.echo(f"queued job {job_id}: explain {cat.get_version(params['version_id']).ref} "
                       f"({len(params['indices'])} example(s), {params['method']}); add --wait to see the result")
        return
    from relman.jobs.wait import wait_or_raise

    wait_or_raise(cat, [job_id])
    doc = stored_explanation(cat, params)
    if doc is None:  # the job succeeded, so its artifact must be there
        from relman.errors import IntegrityError

        raise IntegrityError(f"job {job_id} succeeded but its attributions are not in the catalog")
    emit_json(_public(doc, warning)) if as_json else _print(doc, reused=False)


def _public(doc: dict[str, Any], warning: str | None) -> dict[str, Any]:
    from relman.evaluate.explain import artifact as art

    out = art.public_json(doc)
    if warning:
        out["warnings"] = [warning]
    return out


COMMANDS: list[click.Command] = [explain]
