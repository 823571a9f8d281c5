"""Dataset commands: `relman dataset add | ls | show | demo`."""

from __future__ import annotations

from typing import Any

import click

from relman.commands._shared import AppState, emit_json, pass_state, say, table
from relman.data.formats import format_names, get_reader
from relman.units import human_size

FORMAT_CHOICES = format_names()  # the reader table (relman.data.formats)
SHOW_ROWS_MAX_BYTES = 200 * 1024 * 1024  # `show` reads the whole dataset to print a few rows


@click.group("dataset")
def dataset() -> None:
    """Register, list and inspect evaluation datasets."""


@dataset.command("add")
@click.argument("path", type=click.Path(path_type=str))
@click.option("--name", "-n", required=True, help="Dataset name in the catalog.")
@click.option("--format", "fmt", type=click.Choice(FORMAT_CHOICES),
              help="File format (default: from the suffix; a folder is an image folder).")
@click.option("--text-col", default="text", show_default=True, help="Column holding the text (csv/jsonl/parquet).")
@click.option("--label-col", default="label", show_default=True, help="Column holding the label (csv/jsonl/parquet).")
@click.option("--no-labels", is_flag=True, help="The table has no label column (unlabelled data, e.g. for fidelity).")
@click.option("--group-col", help="Column (or NPZ key) holding a group name, for fairness.")
@click.option("--split-col", help="Column (or NPZ key) holding train/validation/test.")
@click.option("--x-key", help="NPZ: key of the image array (N x H x W [x C]).")
@click.option("--y-key", help="NPZ: key of the label array (leave out for unlabelled).")
@click.option("--image-col", help="Parquet: column of encoded image bytes (an image dataset instead of text).")
@click.option("--image-size", help="Image folder: resize every image to N or HxW (default: all must match).")
@click.option("--chunk-chars", type=int, help="Text: fixed-size chunks of N characters instead of lines.")
@click.option("--delimiter", default=",", show_default=True, help="CSV field delimiter (a .tsv file uses tab).")
@click.option("--labels", "labels_text", help="Comma-separated label list: fixes the order, refuses others.")
@click.option("--check-model", "check_model", metavar="MODEL@VERSION",
              help="Refuse the dataset if it has labels this model version does not know.")
@click.option("--val-fraction", type=float, default=0.0, show_default=True, help="Seeded split: validation share.")
@click.option("--test-fraction", type=float, default=0.0, show_default=True, help="Seeded split: test share.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="Seed of the split.")
@click.option("--json", "as_json", is_flag=True, help="Print the new dataset as JSON.")
@pass_state
def add(state: AppState, path: str, name: str, fmt: str | None, text_col: str, label_col: str, no_labels: bool,
        group_col: str | None, split_col: str | None, x_key: str | None, y_key: str | None, image_col: str | None,
        image_size: str | None, chunk_chars: int | None, delimiter: str, labels_text: str | None,
        check_model: str | None, val_fraction: float, test_fraction: float, seed: int, as_json: bool) -> None:
    """Check a local dataset and store it in the catalog (content-hashed).

    PATH is a CSV/TSV, JSONL, Parquet, NPZ or plain-text file, or a folder with one
    sub-folder of images per class. Nothing is stored unless every row passes the checks."""
    from relman.app.datasets import register_dataset, version_labels
    from relman.data.mapping import parse_image_size

    labels = [s.strip() for s in labels_text.split(",") if s.strip()] if labels_text else None
    cat = state.catalog()
    model_labels = version_labels(cat, check_model) if check_model else None
    d = register_dataset(
        cat, path, name, format=fmt, text_col=text_col, label_col=None if no_labels else label_col,
        group_col=group_col, split_col=split_col, x_key=x_key, y_key=y_key, image_col=image_col,
        image_size=parse_image_size(image_size), chunk_chars=chunk_chars, delimiter=delimiter, labels=labels,
        model_labels=model_labels, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    if as_json:
        emit_json(d)
    else:
        say(f"registered dataset {d['name']}: {d['format']}, {d['kind']}, {d['n_rows']:,} rows, "
                   f"{len(d['labels'])} labels{_splits(d)}, sha256 {d['sha256'][:16]}")


def _splits(d: dict[str, Any]) -> str:
    counts = d["meta"].get("split_counts") or {}
    return (", splits " + " / ".join(f"{k} {v}" for k, v in counts.items())) if counts else ""


@dataset.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_state
def ls(state: AppState, as_json: bool) -> None:
    """List registered datasets."""
    from relman.app.datasets import list_datasets

    rows = list_datasets(state.catalog())
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no datasets yet: relman dataset add PATH --name NAME (or: relman dataset demo digits)")
        return
    click.echo(table([[r["name"], r["format"], r["kind"], f"{r['n_rows']:,}", len(r["labels"]),
                       " / ".join(f"{k} {v}" for k, v in (r["meta"].get("split_counts") or {}).items()) or "-",
                       r["sha256"][:12], r["created_at"][:19].replace("T", " ")] for r in rows],
                     ["NAME", "FORMAT", "KIND", "ROWS", "LABELS", "SPLITS", "SHA256", "CREATED"]))


@dataset.command("show")
@click.argument("name")
@click.option("--rows", "n_rows", type=int, default=5, show_default=True, help="Sample rows to print.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_state
def show(state: AppState, name: str, n_rows: int, as_json: bool) -> None:
    """Show a dataset: mapping, labels, splits, files and a few rows."""
    from relman.app.datasets import describe_dataset, load_dataset

    cat = state.catalog()
    d = describe_dataset(cat, name)
    if as_json:
        emit_json(d)
        return
    say(f"dataset {d['name']}  (id {d['id']})")
    say(f"  {'format':<10}{d['format']} ({d['kind']})")
    say(f"  {'rows':<10}{d['n_rows']:,}{_splits(d)}")
    say(f"  {'labels':<10}{', '.join(d['labels']) or '-'}")
    if d["meta"].get("groups"):
        say(f"  {'groups':<10}{', '.join(d['meta']['groups'])}")
    mapping = {k: v for k, v in d["columns"].items() if v not in (None, "", 0, 0.0) and k != "format"
               and not (k == "delimiter" and k not in get_reader(d["format"]).uses)}
    say(f"  {'mapping':<10}{', '.join(f'{k}={v}' for k, v in mapping.items())}")
    say(f"  {'sha256':<10}{d['sha256']}")
    say(f"  {'source':<10}{d['meta'].get('source', '')}")
    say(f"  {'created':<10}{d['created_at'][:19]} by {d['created_by']}")
    say(f"files ({len(d['files'])}, {human_size(d['size_bytes'])}):")
    for f in d["files"][:10]:
        say(f"  {f['path']:<40} {human_size(f['size']):>10}  {f['sha256'][:16]}")
    if len(d["files"]) > 10:
        say(f"  … {len(d['files']) - 10} more")
    if n_rows > 0 and d["size_bytes"] > SHOW_ROWS_MAX_BYTES:
        say(f"rows: not shown for a dataset over {human_size(SHOW_ROWS_MAX_BYTES)} (load it in Python)")
    elif n_rows > 0:
        ds = load_dataset(cat, d["id"]).head(n_rows)
        click.echo("rows:")
        for i in range(len(ds)):
            x = repr(ds.texts[i][:60]) if ds.texts is not None else f"image {'x'.join(map(str, ds.images.shape[1:]))}"
            y = ds.label_names[ds.labels[i]] if ds.labels is not None else ""
            if ds.tags is not None:  # a token-tagged sentence: its tags, word for word
                y = " ".join(ds.label_names[int(t)] for t in ds.tags[i])[:60]
            extra = [str(a[i]) for a in (ds.groups, ds.split) if a is not None]
            say("  " + "  ".join([x, y, *extra]).rstrip())


@dataset.command("demo")
@click.argument("which", type=click.Choice(["digits", "sentiment", "text"]), default="digits")
@click.option("--name", "-n", help="Dataset name (default: the demo's name).")
@click.option("--rows", "n", type=int, help="Number of rows (default: all 1797 digits / 200 sentences / 100 lines).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
              help="Seed of the generator and split.")
@click.option("--json", "as_json", is_flag=True, help="Print the new dataset as JSON.")
@pass_state
def demo(state: AppState, which: str, name: str | None, n: int | None, seed: int, as_json: bool) -> None:
    """Register bundled demo data (no network): scikit-learn's 8x8 digits, a generated
    sentiment CSV with groups, or plain text for perplexity."""
    from relman.app.datasets import register_demo

    kw: dict[str, Any] = {"seed": seed}
    if n is not None:
        kw["n"] = n
    d = register_demo(state.catalog(), which, name, **kw)
    if as_json:
        emit_json(d)
    else:
        say(f"registered dataset {d['name']}: {d['format']}, {d['kind']}, {d['n_rows']:,} rows, "
                   f"{len(d['labels'])} labels{_splits(d)}")


COMMANDS: list[click.Command] = [dataset]
