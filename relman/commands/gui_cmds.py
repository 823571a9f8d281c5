"""Commands that open or feed the desktop application: gui, demo.

Both import Qt only inside their bodies (through relman.ui), so `relman --help` and every
other command start without Qt.
"""

from __future__ import annotations

from pathlib import Path

import click

from relman.commands._shared import AppState, pass_state
from relman.errors import RelmanError


@click.command()
@click.option("--catalog", "catalog_opt", type=click.Path(path_type=str),
              help="Catalog folder to open (default: --catalog before the command, RELMAN_CATALOG, the last "
                   "catalog opened, else the per-user data folder).")
@pass_state
def gui(state: AppState, catalog_opt: str | None) -> None:
    """Open the desktop application on a catalog."""
    import os

    from relman.ui.app import has_display, run_gui

    if not has_display() and not os.environ.get("QT_QPA_PLATFORM"):
        raise RelmanError("no display to open the window on (DISPLAY/WAYLAND_DISPLAY unset); use "
                          "'relman demo --headless --screenshots DIR' for pictures, or the CLI commands")

    code = run_gui(catalog_opt or state.catalog_path)
    if code:
        raise SystemExit(code)


@click.command()
@click.option("--headless", is_flag=True, help="Do not open a window: build the demo, write the screenshots, exit.")
@click.option("--screenshots", "shots", type=click.Path(path_type=Path, file_okay=False),
              help="Write a PNG of each main view into this folder (headless default: ./demo-output).")
@click.option("--all-sizes", is_flag=True,
              help="Screenshots of every view at 1024x700 and 1600x1000, light and dark (docs/screenshots).")
@click.option("--train-seconds", type=float, default=15.0, show_default=True,
              help="CPU time budget for training the demo ViT on the digits.")
@click.option("--no-jobs", is_flag=True, help="Only train, import and register (skip compression/evaluation jobs).")
@click.option("--minilm", is_flag=True, help="Also adapt the real all-MiniLM-L6-v2 (when installed) with LoRA into a "
                                             "sentiment classifier, merge, quantise and promote it (minutes of CPU).")
@click.option("--no-lm", is_flag=True, help="Skip the language-model path (the small LM trained here: INT4, the "
                                            "generation gate refusing a broken child, LoRA on a planted instruction).")
@click.option("--build-only", is_flag=True, help="Build the demo catalog and exit: no window, no screenshots (the "
                                                "window's \"Load the demo catalog\" runs this in a child process).")
@pass_state
def demo(state: AppState, headless: bool, shots: Path | None, train_seconds: float, no_jobs: bool,
         minilm: bool = False, all_sizes: bool = False, no_lm: bool = False, build_only: bool = False) -> None:
    """Build a demo catalog (no network needed) and show it.

    Trains a small ViT on scikit-learn's digits, registers it and the digits dataset, runs
    compression and evaluation jobs, promotes a version to production, then opens the window
    (or, with --headless or no display, writes screenshots and exits)."""
    from relman.app.demo import build_demo
    from relman.ui.app import has_display

    cat = state.catalog()
    first_job = cat.conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM jobs").fetchone()[0]
    for line in build_demo(cat, train_seconds=train_seconds, run_jobs=not no_jobs, minilm=minilm,
                           lm=not no_lm):
        click.echo(line)
    failed = cat.conn.execute("SELECT COUNT(*) FROM jobs WHERE id >= ? AND status = 'failed'",
                              [first_job]).fetchone()[0]
    root = cat.root
    cat.close()
    state._catalog = None
    if build_only:
        if failed:
            raise RelmanError(f"{failed} demo job(s) failed; 'relman --catalog {root} jobs' shows why")
        click.echo(f"demo catalog ready at {root}")
        return
    headless = headless or not has_display()
    if shots is None and headless:
        shots = Path("demo-output")
        click.echo(f"demo catalog ready at {root}; no window (headless), so screenshots go to {shots.resolve()}")
    from relman.ui.app import close_window, open_window, screenshot_matrix, screenshots

    app, window = open_window(root, headless=headless)
    window.set_selection([v.id for v in window.snapshot.versions if v.phase == "production"][:1])
    if shots is not None and all_sizes:
        for path in screenshot_matrix(window, shots):
            click.echo(f"screenshot {path}")
    elif shots is not None:
        window.resize(1400, 860)
        for path in screenshots(window, shots, dark_views=("board", "compare")):
            click.echo(f"screenshot {path}")
    if not headless:
        app.exec()
    close_window(app, window)
    if failed:  # the demo doubles as a smoke test of the whole stack: say so loudly
        raise RelmanError(f"{failed} demo job(s) failed; 'relman --catalog {root} jobs' shows why")


COMMANDS: list[click.Command] = [gui, demo]
