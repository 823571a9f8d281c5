"""CLI command modules, one per area; each exports `COMMANDS` for `relman.cli` to register."""
