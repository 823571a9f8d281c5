"""Catalog commands: init, import, ls, show, log, verify, diff."""

from __future__ import annotations

import click

from relman.commands._shared import AppState, emit_json, pass_state, table
from relman.names import terminal_safe
from relman.tasks.specs import task_names
from relman.units import human_size


@click.command()
@pass_state
def init(state: AppState) -> None:
    """Create (or upgrade) the catalog folder."""
    cat = state.catalog()
    click.echo(terminal_safe(f"catalog ready at {cat.root}"))


@click.command("import")
@click.argument("path", type=click.Path(path_type=str))
@click.option("--model", "-m", required=True, help="Model (family) name, e.g. 'minilm'.")
@click.option("--version", "version", help="Version X.Y.Z (default: next minor version).")
@click.option("--task", type=click.Choice(task_names()), help="Override the task guessed from config.json.")
@click.option("--new-architecture", is_flag=True,
              help="Allow a different architecture or task under an existing model name.")
@click.option("--json", "as_json", is_flag=True, help="Print the new version as JSON.")
@pass_state
def import_(state: AppState, path: str, model: str, version: str | None, task: str | None, new_architecture: bool,
            as_json: bool) -> None:
    """Import a model: a Hugging Face folder, a .safetensors file, an .onnx file (with its
    external data) or a torch state dict (.bin/.pt, loaded with weights_only=True)."""
    from relman.app.models import describe_version, import_model

    cat = state.catalog()
    v = import_model(cat, path, model, version=version, task=task, new_architecture=new_architecture)
    if as_json:
        emit_json(describe_version(cat, v))
    else:
        click.echo(f"imported {v.ref}: {v.format}, task {v.task or '?'}, {v.params or 0:,} params, "
                   f"{human_size(v.size_bytes)}")
        if v.meta.get("left_out"):
            click.echo(terminal_safe(f"left out (not needed, not stored): {', '.join(v.meta['left_out'])}"))


@click.command("ls")
@click.argument("model", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_state
def ls(state: AppState, model: str | None, as_json: bool) -> None:
    """List models and their versions."""
    cat = state.catalog()
    if model:
        cat.get_model(model)
    versions = cat.versions(model)
    if as_json:
        from relman.app.tags import all_tags

        tags = all_tags(cat)
        emit_json([{"model": v.model, "version": v.version, "phase": v.phase, "format": v.format, "task": v.task,
                    "params": v.params, "size_bytes": v.size_bytes, "created_at": v.created_at,
                    "recipe": v.recipe.get("name"), "tags": tags.get(v.id, [])} for v in versions])
        return
    if not versions:
        click.echo("no models yet: relman import PATH --model NAME")
        return
    rows = [[v.model, v.version, v.phase, v.format, v.task or "", f"{v.params or 0:,}", human_size(v.size_bytes),
             v.recipe.get("name", ""), v.created_at[:19].replace("T", " ")] for v in versions]
    click.echo(table(rows, ["MODEL", "VERSION", "PHASE", "FORMAT", "TASK", "PARAMS", "SIZE", "RECIPE", "CREATED"]))


@click.command()
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_state
def show(state: AppState, ref: str, as_json: bool) -> None:
    """Show a version: metadata, files, lineage, metrics. REF is MODEL[@VERSION|latest|PHASE]."""
    from relman.app.models import describe_version

    cat = state.catalog()
    d = describe_version(cat, cat.resolve(ref))
    if as_json:
        emit_json(d)
        return
    echo = lambda text: click.echo(terminal_safe(text))  # noqa: E731  (config fields are not ours)
    echo(f"{d['model']}@{d['version']}  [{d['phase']}]")
    for key in ("format", "task", "architecture", "dtype"):
        echo(f"  {key:<13}{d[key] or ''}")
    echo(f"  {'params':<13}{d['params'] or 0:,}")
    echo(f"  {'size':<13}{human_size(d['size_bytes'])} ({d['size_bytes']:,} bytes)")
    echo(f"  {'created':<13}{d['created_at'][:19]} by {d['created_by']}")
    echo(f"  {'manifest':<13}{d['manifest_sha256']}")
    if d["recipe"]:
        echo(f"  {'recipe':<13}{d['recipe']}")
    if d["canary_share"] is not None:
        echo(f"  {'canary':<13}{d['canary_share']:g} %")
    adapter = d["meta"].get("adapter") if d["format"] == "peft-adapter" else None
    if adapter:
        echo(f"  {'adapter of':<13}{adapter.get('base_ref')} (manifest "
                   f"{str(adapter.get('base_manifest_sha256'))[:16]}, r={adapter.get('r')}, "
                   f"alpha={adapter.get('lora_alpha')}, on {','.join(adapter.get('target_modules') or [])})")
    ledger = d["meta"].get("privacy")
    if ledger:
        eps = ledger.get("epsilon")
        bound = "no DP bound (mixed parents)" if eps is None else f"epsilon={eps:.4g} delta={ledger.get('delta'):g}"
        extra = "" if ledger.get("noise_multiplier") is None else (
            f", noise={ledger['noise_multiplier']:.4g} q={ledger['sample_rate']:.4g} steps={ledger['steps']} "
            f"clip={ledger['max_grad_norm']:g}")
        echo(f"  {'privacy':<13}{bound} ({ledger.get('accountant')}{extra})")
    if d.get("tags"):
        echo(f"  {'tags':<13}{', '.join(d['tags'])}")
    if d.get("archived_to"):
        echo(f"  {'archived in':<13}{d['archived_to']} (relman restore {d['model']}@{d['version']})")
    echo(f"  {'parents':<13}{', '.join(d['parents']) or '-'}")
    echo(f"  {'children':<13}{', '.join(d['children']) or '-'}")
    click.echo("files:")
    for f in d["files"]:
        echo(f"  {f['path']:<40} {human_size(f['size']):>10}  {f['sha256'][:16]}")
    if d["metrics"]:
        click.echo("metrics:")
        rows = [[m["suite"], m["name"], "" if m["value"] is None else f"{m['value']:.6g}", m["dataset"] or "",
                 m["context"].get("device", "")] for m in d["metrics"]]
        click.echo("  " + table(rows, ["SUITE", "METRIC", "VALUE", "DATASET", "DEVICE"]).replace("\n", "\n  "))


@click.command("log")
@click.option("--model", help="Only events about this model.")
@click.option("--limit", "-n", type=int, default=50, show_default=True, help="Newest N events.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_state
def log_(state: AppState, model: str | None, limit: int, as_json: bool) -> None:
    """Show the audit log (newest last)."""
    events = state.catalog().events(model=model, limit=limit)
    if as_json:
        emit_json(events)
        return
    rows = [[e["seq"], e["at"][:19].replace("T", " "), e["actor"], e["kind"],
             f"{e['model']}@{e['version']}" if e["model"] and e["version"] else (e["model"] or ""),
             _summary(e["payload"])] for e in events]
    click.echo(table(rows, ["SEQ", "AT", "ACTOR", "EVENT", "SUBJECT", "DETAILS"]) if rows else "no events")


def _summary(payload: dict) -> str:
    keys = [k for k in ("why", "to", "from", "recipe", "job", "format", "share", "tag") if payload.get(k)]
    text = ", ".join(f"{k}={payload[k]}" for k in keys)
    return text[:80]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print problems as JSON.")
@pass_state
def verify(state: AppState, as_json: bool) -> None:
    """Re-hash every stored blob, check the audit chain, its signed checkpoint and every row a
    release decision rests on (each must match the audit event that committed it); exit 1 on
    any problem, naming what changed."""
    from relman.catalog.integrity import check_state

    cat = state.catalog()
    cleaned = cat.clean_stale()
    problems = cat.verify_store()
    state_problems, notes = check_state(cat)
    audit = [p for p in state_problems if p.startswith("audit chain")]
    rows = [p for p in state_problems if not p.startswith("audit chain")]
    orphans = cat.orphan_blobs()
    integrity = cat.conn.execute("PRAGMA integrity_check").fetchone()[0]
    failed = bool(problems or audit or rows or orphans or integrity != "ok")
    tampered = [*problems, *audit, *rows] + ([] if integrity == "ok" else [f"database: {integrity}"])
    hooks: dict = {}
    if tampered:  # catalog-wide "integrity-failed" hooks (orphans are housekeeping, not tampering)
        from relman.release.hooks import fire

        hooks = fire(cat, "integrity-failed", {"source": "verify", "findings": tampered[:50],
                                               "error": f"relman verify found {len(tampered)} problem(s)"},
                     model=None)
    if as_json:
        emit_json({"ok": not failed, "blobs": problems, "audit": audit, "rows": rows, "orphans": orphans,
                   "integrity": integrity, "notes": notes, "cleaned": cleaned, **hooks})
    else:
        for p in problems:
            click.echo(f"BLOB   {terminal_safe(p)}")
        for p in audit:
            click.echo(f"AUDIT  {terminal_safe(p)}")
        for p in rows:
            click.echo(f"ROW    {terminal_safe(p)}")
        for o in orphans:
            click.echo(f"ORPHAN {cat.store.path(o)} (stored but not referenced by any version or dataset; 'relman gc' removes it)")
        if integrity != "ok":
            click.echo(f"DB     {terminal_safe(integrity)}")
        for n in notes:
            click.echo(f"note:  {terminal_safe(n)}")
        for j in hooks.get("hook_jobs", []):
            click.echo(f"hook:  {terminal_safe(j['what'])} queued as job {j['job']} (integrity-failed)")
        for r in hooks.get("hooks_refused", []) + ([hooks["hooks_error"]] if "hooks_error" in hooks else []):
            click.echo(f"warning: {terminal_safe(r)}")
        n = len(cat.referenced_shas())
        if not failed:
            click.echo(f"ok: {n} blobs intact, audit chain of {len(cat.events())} events verifies, every tracked "
                       "row matches its audit record")
        else:
            count = len(problems) + len(audit) + len(rows) + len(orphans) + (integrity != "ok")
            click.echo(f"FAILED: {count} problem(s) found", err=True)
    if failed:
        raise SystemExit(1)


@click.command()
@click.argument("ref_a")
@click.argument("ref_b")
@click.option("--top", type=click.IntRange(min=0), default=20, show_default=True,
              help="Show the N most changed tensors (0: all).")
@click.option("--json", "as_json", is_flag=True)
@pass_state
def diff(state: AppState, ref_a: str, ref_b: str, top: int, as_json: bool) -> None:
    """What changed from REF_A to REF_B: per tensor (relative change, cosine, zeros, dtype,
    shape; tensors in only one of them) and in the architecture (config.json, surgery)."""
    from relman.app.diff import diff_versions, render

    result = diff_versions(state.catalog(), ref_a, ref_b)
    if as_json:
        emit_json(result)
    else:
        click.echo(render(result, top or None))


COMMANDS = [init, import_, ls, show, log_, verify, diff]
