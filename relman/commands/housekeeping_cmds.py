"""Disk and catalog housekeeping: delete, gc, du, archive, restore, tag, untag, search."""

from __future__ import annotations

import click

from relman.commands._shared import AppState, emit_json, pass_state, say, table
from relman.units import human_size


@click.command()
@click.argument("ref")
@click.option("--why", required=True, help="Why the version goes (recorded in the audit log).")
@click.option("--dry-run", is_flag=True, help="Say what would be deleted and freed; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_state
def delete(state: AppState, ref: str, why: str, dry_run: bool, as_json: bool) -> None:
    """Delete a version: it leaves listings, its files are released, lineage keeps a
    tombstone and the audit log records who, when, why and its manifest sha256."""
    from relman.app.housekeeping import delete_version

    r = delete_version(state.catalog(), ref, why=why, dry_run=dry_run)
    if as_json:
        emit_json(r)
    elif dry_run:
        say(f"would delete {r['ref']}: frees {human_size(r['unique_bytes'])}, keeps "
                   f"{human_size(r['shared_bytes'])} shared with other versions ({r['files']} files)")
    else:
        say(f"deleted {r['ref']} (manifest {r['manifest_sha256'][:16]}…): freed {human_size(r['freed_bytes'])}"
                   f" in {r['freed_blobs']} blobs, kept {human_size(r['shared_bytes'])} shared")


@click.command()
@click.option("--dry-run", is_flag=True, help="Report what would be removed; remove nothing.")
@click.option("--logs-older-than", "logs_days", type=float,
              help="Prune logs/scratch of jobs finished more than this many days ago (default: setting "
                   "gc.logs_max_age_days, else 30).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_state
def gc(state: AppState, dry_run: bool, logs_days: float | None, as_json: bool) -> None:
    """Remove blobs nothing references (crash-safe) and old job logs; print the bytes freed."""
    from relman.app.housekeeping import collect_garbage

    r = collect_garbage(state.catalog(), dry_run=dry_run, logs_older_than_days=logs_days)
    if as_json:
        emit_json(r)
        return
    verb = "would free" if dry_run else "freed"
    say(f"{verb} {human_size(r['bytes_freed'])} ({r['bytes_freed']:,} bytes): {r['blobs']} unreferenced "
               f"blobs ({human_size(r['blob_bytes'])}), {r['job_files']} job logs/scratch folders older than "
               f"{r['logs_older_than_days']:g} days ({human_size(r['job_file_bytes'])})"
               + (f", {r['scratch_folders']} scratch folders of killed bundle imports "
                  f"({human_size(r['scratch_bytes'])})" if r["scratch_folders"] else ""))


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@pass_state
def du(state: AppState, as_json: bool) -> None:
    """Disk use: bytes by model, version, dataset and logs; unique vs shared (deduplicated)."""
    from relman.app.disk import disk_usage

    r = disk_usage(state.catalog())
    if as_json:
        emit_json(r)
        return
    t = r["totals"]
    hs = human_size
    say(f"catalog {r['catalog']}: {hs(t['catalog_bytes'])} on disk, {hs(r['free_bytes'])} free")
    say(f"  blobs {hs(t['blob_bytes'])} ({t['blobs']}): unique {hs(t['unique_bytes'])}, shared "
               f"{hs(t['shared_bytes'])}, pending {hs(t['pending_bytes'])}, garbage {hs(t['garbage_bytes'])} "
               "(relman gc)")
    say(f"  database {hs(t['db_bytes'])}, logs {hs(t['logs_bytes'])}, scratch {hs(t['tmp_bytes'])}")
    if r["models"]:
        click.echo(table([[m["model"], m["versions"], hs(m["bytes"]), hs(m["unique_bytes"]), hs(m["shared_bytes"])]
                          for m in r["models"]], ["MODEL", "VERSIONS", "BYTES", "UNIQUE", "SHARED"]))
    if r["versions"]:
        click.echo(table([[v["ref"], v["phase"], hs(v["bytes"]), hs(v["unique_bytes"]), hs(v["shared_bytes"]),
                           v["archived_to"] or ""] for v in r["versions"]],
                         ["VERSION", "PHASE", "BYTES", "UNIQUE", "SHARED", "ARCHIVED IN"]))
    if r["datasets"]:
        click.echo(table([[d["dataset"], hs(d["bytes"]), hs(d["unique_bytes"]), hs(d["shared_bytes"])]
                          for d in r["datasets"]], ["DATASET", "BYTES", "UNIQUE", "SHARED"]))


@click.command()
@click.argument("ref")
@click.option("--to", "folder", required=True, type=click.Path(path_type=str, file_okay=False),
              help="Folder (e.g. on another disk) that receives the version's files.")
@pass_state
def archive(state: AppState, ref: str, folder: str) -> None:
    """Move a retired version's files to FOLDER, keeping its record (relman restore brings them back)."""
    from relman.app.housekeeping import archive_version

    r = archive_version(state.catalog(), ref, folder)
    say(f"archived {r['ref']} to {r['to']} ({r['files']} files); freed {human_size(r['freed_bytes'])}")


@click.command()
@click.argument("ref")
@pass_state
def restore(state: AppState, ref: str) -> None:
    """Bring an archived version's files back into the catalog, each one verified by hash."""
    from relman.app.housekeeping import restore_version

    r = restore_version(state.catalog(), ref)
    say(f"restored {r['ref']} from {r['from']} ({r['files']} files, {human_size(r['size_bytes'])}), verified")


@click.command()
@click.argument("ref")
@click.argument("name")
@pass_state
def tag(state: AppState, ref: str, name: str) -> None:
    """Tag a version (MODEL@TAG then resolves to it while the tag is unique in the model)."""
    from relman.app.tags import tag_version

    r = tag_version(state.catalog(), ref, name)
    say(f"{r['ref']}: tags {', '.join(r['tags'])}")


@click.command()
@click.argument("ref")
@click.argument("name")
@pass_state
def untag(state: AppState, ref: str, name: str) -> None:
    """Remove a tag from a version."""
    from relman.app.tags import untag_version

    r = untag_version(state.catalog(), ref, name)
    say(f"{r['ref']}: tags {', '.join(r['tags']) or '-'}")


@click.command()
@click.argument("query", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_state
def search(state: AppState, query: tuple[str, ...], as_json: bool) -> None:
    """Find versions: tag:NAME recipe:NAME phase:NAME model:/format:/task:, metric conditions
    such as 'accuracy>0.9' or 'latency_p95_ms<=20' (quote them in the shell), and plain words."""
    from relman.app.search import search as run_search

    rows = run_search(state.catalog(), list(query))
    if as_json:
        emit_json([{"model": r.model, "version": r.version, "phase": r.phase, "format": r.format, "task": r.task,
                    "recipe": r.recipe, "tags": r.tags, "metrics": dict(r.metrics)} for r in rows])
        return
    if not rows:
        click.echo("no version matches")
        return
    click.echo(table([[f"{r.model}@{r.version}", r.phase, r.format, r.recipe, ", ".join(r.tags)] for r in rows],
                     ["VERSION", "PHASE", "FORMAT", "RECIPE", "TAGS"]))


@click.command("disk-settings")
@click.option("--warn-below", help="Warn in the GUI's status bar below this much free space (e.g. 5GB).")
@click.option("--reserve", help="Refuse jobs that would leave less than this free (e.g. 1GB).")
@click.option("--logs-max-age", "logs_days", type=float, help="relman gc prunes job logs older than this (days).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_state
def disk_settings_cmd(state: AppState, warn_below: str | None, reserve: str | None, logs_days: float | None,
                      as_json: bool) -> None:
    """Show (and with options, change) the catalog's disk thresholds."""
    from relman.app.disk import disk_settings

    r = disk_settings(state.catalog(), warn_below=warn_below, reserve=reserve, logs_max_age_days=logs_days)
    if as_json:
        emit_json(r)
        return
    say(f"warn below {human_size(r['warn_free_bytes'])} free; keep {human_size(r['reserve_bytes'])} free "
               f"when queueing jobs; gc prunes job logs older than {r['logs_max_age_days']:g} days")


COMMANDS = [delete, gc, du, archive, restore, tag, untag, search, disk_settings_cmd]
