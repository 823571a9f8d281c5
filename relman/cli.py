"""The `relman` command line: the same operations as the GUI, without Qt.

The root group holds what every command shares (`--catalog`, error reporting, JSON output);
the commands themselves live in `relman/commands/<area>.py`, one module per area, each
exporting `COMMANDS`. Start-up imports neither Qt nor torch: commands import heavy modules
inside their bodies, and only when they need them.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from relman import __version__
from relman.errors import RelmanError


class RelmanGroup(click.Group):
    """Turns a `RelmanError` into one line on stderr and a non-zero exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RelmanError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(e.exit_code)


class AppState:
    """Per-invocation state: where the catalog is, opened on first use."""

    def __init__(self, catalog_path: str | None) -> None:
        self.catalog_path = catalog_path
        self._catalog = None

    def catalog(self, create: bool = True):  # -> Catalog (import kept lazy for start-up)
        if self._catalog is None:
            from relman.catalog import open_catalog

            self._catalog = open_catalog(self.catalog_path, create=create)
        return self._catalog


pass_state = click.make_pass_decorator(AppState)


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str, sort_keys=True))


def table(rows: list[list[Any]], headers: list[str]) -> str:
    """A plain fixed-width table (no extra dependency)."""
    cells = [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])


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
    if ctx.invoked_subcommand is None:
        gui = cli.get_command(ctx, "gui")
        if gui is None:
            click.echo(ctx.get_help())
            return
        ctx.invoke(gui)


def _register() -> None:
    from relman.commands import (catalog_cmds, compress_cmds, data_cmds, evaluate_cmds, explain_cmds, gui_cmds,
                                 housekeeping_cmds, jobs_cmds, release_cmds)

    for module in (catalog_cmds, jobs_cmds, data_cmds, evaluate_cmds, explain_cmds, compress_cmds, release_cmds,
                   housekeeping_cmds, gui_cmds):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main() -> None:
    cli(prog_name="relman")


if __name__ == "__main__":
    sys.exit(main())
