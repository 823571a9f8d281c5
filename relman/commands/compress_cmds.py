"""CLI commands for this area (filled in as the area is built)."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
