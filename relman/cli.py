"""The `relman` command line: the same operations as the GUI, without Qt.

The root group holds `--catalog` and error reporting; the commands themselves live in
`relman/commands/<area>_cmds.py`, one module per area, each exporting `COMMANDS`, and share
`relman.commands._shared` (state, JSON output, tables), never this module. Start-up imports
neither Qt nor torch: commands import heavy modules inside their bodies, and only when they
need them (the `startup-imports-nothing-heavy` contract in pyproject.toml checks it).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from relman import __version__
from relman.commands._shared import AppState
from relman.errors import RelmanError


class RelmanGroup(click.Group):
    """Turns a `RelmanError` into one line on stderr and a non-zero exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RelmanError as e:
            from relman.names import terminal_safe

            click.echo(f"error: {terminal_safe(e)}", err=True)
            ctx.exit(e.exit_code)


@click.group(cls=RelmanGroup, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--catalog", "catalog_path", envvar="RELMAN_CATALOG", type=click.Path(path_type=str),
              help="Catalog folder (default: RELMAN_CATALOG, else the per-user data folder).")
@click.version_option(__version__, prog_name="relman")
@click.pass_context
def cli(ctx: click.Context, catalog_path: str | None) -> None:
    """relman: release manager for machine-learning models.

    With no command, opens the desktop application on the catalog.
    """
    ctx.obj = AppState(catalog_path)
    _announce_where_jobs_run()
    if ctx.invoked_subcommand is None:
        gui = cli.get_command(ctx, "gui")
        if gui is None:
            click.echo(ctx.get_help())
            return
        ctx.invoke(gui)


def _announce_where_jobs_run() -> None:
    """Every command that queues a job says, on stderr, where it will run (issue 26)."""
    import os

    from relman.jobs import queue

    if os.environ.get("RELMAN_JOB_ID") or any(getattr(f, "relman_cli", False) for f in queue.ANNOUNCE):
        return  # a worker's own queued jobs are in its log already; registered once per process

    def say(job_id: int, kind: str, where: str) -> None:
        ctx = click.get_current_context(silent=True)
        while ctx is not None:
            if ctx.params.get("as_json"):
                return  # JSON output: the job row's message says it ("queued; runs ...")
            ctx = ctx.parent
        click.echo(f"job {job_id} ({kind}) {where}", err=True)

    say.relman_cli = True  # type: ignore[attr-defined]
    queue.ANNOUNCE.append(say)


def _register() -> None:
    """The composition root: the commands, and (by importing relman.app) the job kinds of the
    layers above relman.jobs, which every process started through here can then queue or run."""
    import relman.app  # noqa: F401  (registers the app's job kinds: relman/app/job_kinds.py)
    from relman.commands import (bundled_cmds, catalog_cmds, compress_cmds, data_cmds, evaluate_cmds, explain_cmds, generate_cmds,
                                 gui_cmds, hooks_cmds, housekeeping_cmds, jobs_cmds, release_cmds)

    for module in (catalog_cmds, jobs_cmds, data_cmds, evaluate_cmds, explain_cmds, generate_cmds, compress_cmds,
                   release_cmds, hooks_cmds, housekeeping_cmds, gui_cmds, bundled_cmds):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main() -> None:
    cli(prog_name="relman")


if __name__ == "__main__":
    sys.exit(main())
