"""Registering, listing and loading datasets (the use cases the CLI and GUI share).

A dataset is parsed and validated completely before anything is written; only then are its
files content-hashed into the blob store and its row, file rows and audit event committed in
one transaction (`Catalog.add_dataset`). `load_dataset` reads the stored blobs back with the
stored column mapping, so a worker process gets exactly the rows that were checked.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

from relman.catalog import Catalog
from relman.data.stored import dataset_files, get_dataset, list_datasets, load_dataset
from relman.errors import DatasetError

DEMOS = ("digits", "sentiment", "text")
__all__ = ["register_dataset", "describe_dataset", "list_datasets", "get_dataset", "dataset_files", "load_dataset",
           "version_labels", "register_demo", "register_demo_digits", "register_demo_sentiment", "register_demo_text", "DEMOS"]


def _check_name(name: str) -> None:
    from relman.names import check_name

    check_name(name, "dataset name")


def register_dataset(
    catalog: Catalog,
    path: Path | str,
    name: str,
    *,
    format: str | None = None,
    text_col: str | None = "text",
    label_col: str | None = "label",
    group_col: str | None = None,
    split_col: str | None = None,
    x_key: str | None = None,
    y_key: str | None = None,
    image_col: str | None = None,
    image_size: tuple[int, int] | None = None,
    chunk_chars: int | None = None,
    delimiter: str = ",",
    labels: Sequence[str] | None = None,
    model_labels: Sequence[str] | None = None,
    val_fraction: float = 0.0,
    test_fraction: float = 0.0,
    seed: int = 0,
    actor: str | None = None,
    source: str | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Check the dataset at `path` with the given column mapping and store it as `name`.

    `format` is guessed from the suffix (a folder is an image folder). `image_col` (Parquet)
    names a column of encoded image bytes, read instead of a text column. `labels` fixes the
    label order and refuses any other label. Split: `split_col`, or `val_fraction` /
    `test_fraction` with `seed` (stored, so the split is reproducible), or neither.
    `model_labels` (e.g. a model version's labels) refuses a dataset with labels the model lacks.
    `source` is recorded instead of the path (e.g. 'demo:digits'). `progress(bytes stored,
    bytes in all)` follows the copy into the store, after every check has passed.
    Returns the dataset as `describe_dataset` does."""
    from relman.data.mapping import ColumnMapping
    from relman.data.formats import get_reader
    from relman.data.readers import file_entries, guess_format, normalise, read_entries

    _check_name(name)
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\r\n\"":
        raise DatasetError(f"--delimiter must be exactly one character (not a quote or line break), got {delimiter!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise DatasetError(f"--seed must be a whole number from 0 to {2**32 - 1}, got {seed!r}")
    labels = [str(x) for x in labels] if labels else None
    if catalog.conn.execute("SELECT 1 FROM datasets WHERE name = ?", [name]).fetchone():
        raise DatasetError(f"dataset '{name}' already exists; choose another --name")
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    fmt = format or guess_format(path)
    mapping = normalise(ColumnMapping(
        format=fmt, text_col=text_col, label_col=label_col, group_col=group_col, split_col=split_col, x_key=x_key,
        y_key=y_key, image_col=image_col, image_size=image_size, chunk_chars=chunk_chars, delimiter=delimiter,
        val_fraction=float(val_fraction), test_fraction=float(test_fraction), seed=int(seed)), path)
    entries = file_entries(path, fmt)
    where = str(path) if get_reader(fmt).folder else path.name
    ds = read_entries(entries, mapping, name=name, labels=labels, where=where)  # every check, nothing written
    if model_labels is not None:
        from relman.data.labels import check_labels

        check_labels(ds, model_labels)
    meta: dict[str, Any] = {"source": source or str(path.resolve()), "split_counts": ds.meta["split_counts"]}
    if ds.images is not None:
        meta["image_shape"] = list(ds.images.shape[1:])
    if ds.groups is not None:
        meta["groups"] = sorted({str(g) for g in ds.groups})
    row = catalog.add_dataset(name, {rel: f for rel, f in entries}, format=fmt, kind=ds.kind,
                              columns=mapping.to_json(), labels=ds.label_names, n_rows=len(ds), meta=meta,
                              actor=actor, progress=progress)
    return describe_dataset(catalog, row)


def version_labels(catalog: Catalog, ref: str) -> list[str]:
    """The class labels of a model version (`MODEL@VERSION`), as recorded at import."""
    v = catalog.resolve(ref)
    labels = v.meta.get("labels")
    if not labels:
        raise DatasetError(f"{v.ref} records no class labels to check the dataset against")
    return [str(x) for x in labels]


def describe_dataset(catalog: Catalog, row_or_name: dict[str, Any] | str | int) -> dict[str, Any]:
    """Everything `relman dataset show` prints, as plain data."""
    row = get_dataset(catalog, row_or_name["id"] if isinstance(row_or_name, dict) else row_or_name)
    files = dataset_files(catalog, row["id"])
    return {**row, "files": files, "size_bytes": sum(f["size"] for f in files)}




# -- demo data ----------------------------------------------------------------------------------
def register_demo_digits(catalog: Catalog, name: str = "digits", *, n: int | None = None,
                         val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0,
                         actor: str | None = None) -> dict[str, Any]:
    """scikit-learn's bundled 8x8 digits, written as NPZ ('images', 'labels') and registered
    with a seeded split."""
    from relman.data import demo

    with _tmp(catalog) as tmp:
        path = demo.write_digits_npz(tmp / "digits.npz", n=n)
        return register_dataset(catalog, path, name, format="npz", x_key="images", y_key="labels",
                                labels=demo.DIGIT_LABELS, val_fraction=val_fraction, test_fraction=test_fraction,
                                seed=seed, actor=actor, source="demo:digits (scikit-learn)")


def register_demo_sentiment(catalog: Catalog, name: str = "sentiment", *, n: int = 200, seed: int = 0,
                            val_fraction: float = 0.0, test_fraction: float = 0.0,
                            actor: str | None = None) -> dict[str, Any]:
    """A generated sentiment CSV (text, label negative/positive, group) in the tiny BERT's words."""
    from relman.data import demo

    with _tmp(catalog) as tmp:
        path = demo.sentiment_csv(tmp / "sentiment.csv", n=n, seed=seed)
        return register_dataset(catalog, path, name, format="csv", text_col="text", label_col="label",
                                group_col="group", labels=demo.SENTIMENT_LABELS, val_fraction=val_fraction,
                                test_fraction=test_fraction, seed=seed, actor=actor,
                                source=f"demo:sentiment (n={n}, seed={seed})")


def register_demo_text(catalog: Catalog, name: str = "text", *, n: int = 100, seed: int = 0,
                       actor: str | None = None) -> dict[str, Any]:
    """A generated plain-text file (one sentence a line) for language-model perplexity."""
    from relman.data import demo

    with _tmp(catalog) as tmp:
        path = demo.lm_text(tmp / "text.txt", n=n, seed=seed)
        return register_dataset(catalog, path, name, format="text", actor=actor,
                                source=f"demo:text (n={n}, seed={seed})")


def register_demo(catalog: Catalog, which: str, name: str | None = None, **kw: Any) -> dict[str, Any]:
    if which == "digits":
        return register_demo_digits(catalog, name or "digits", **kw)
    if which == "sentiment":
        return register_demo_sentiment(catalog, name or "sentiment", **kw)
    if which == "text":
        return register_demo_text(catalog, name or "text", **kw)
    raise DatasetError(f"unknown demo dataset '{which}' (known: {', '.join(DEMOS)})")


class _tmp:
    """A temporary folder inside the catalog (same file system as the blob store)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def __enter__(self) -> Path:
        self.catalog.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix="relman-demo-", dir=self.catalog.tmp_dir))
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


