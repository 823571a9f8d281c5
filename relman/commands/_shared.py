"""What every command module shares: the per-invocation state, JSON output and plain tables.

It lives here, below `relman.cli`, so that a command module imports only downwards
(`relman.cli` registers the commands; the commands never import `relman.cli`) and each
`relman/commands/<area>_cmds.py` can be imported on its own. Click and the standard library
only: nothing here may slow the CLI's start-up.
"""

from __future__ import annotations

import json
from typing import Any

import click


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


def say(text: object = "") -> None:
    """`click.echo` for a line that carries text from outside (a path, a name, a row): control
    and invisible characters (U+202E flips what follows) are shown as escapes."""
    from relman.names import terminal_safe

    click.echo(terminal_safe(text))


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str, sort_keys=True))


def table(rows: list[list[Any]], headers: list[str]) -> str:
    """A plain fixed-width table (no extra dependency)."""
    from relman.names import terminal_safe

    cells = [[("" if c is None else terminal_safe(c)) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])
