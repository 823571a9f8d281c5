"""Commands that open or feed the desktop application: gui, demo."""

from __future__ import annotations

import click

from relman.cli import AppState, pass_state


@click.command()
@click.option("--headless", is_flag=True, help="Build the demo catalog without opening a window.")
@pass_state
def demo(state: AppState, headless: bool) -> None:
    """Build a demo catalog (no network needed) and show it."""
    from relman.app.demo import build_demo

    cat = state.catalog()
    for line in build_demo(cat):
        click.echo(line)


COMMANDS: list[click.Command] = [demo]
