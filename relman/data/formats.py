"""The reader table: every dataset format, the module that reads it, and what it needs. Data only.

Registration names the reading function as "module:function" without importing it, so the CLI
(`--format` choices), the GUI's dataset dialog and `ColumnMapping`'s checks list the formats at
start-up cost; the reader module (numpy, pyarrow, Pillow …) is imported only when a dataset is
read. A new format is one `relman/data/read_<format>.py` module plus one `register(Reader(...))`
entry below.

A file reader is called as `read(path, mapping, *, name, labels, where) -> Dataset`; a folder
reader (`folder=True`) as `read(entries, mapping, *, name, labels, where)` with the
(relative path, file) pairs its `entries` function lists.
"""

from __future__ import annotations

from relman import targets
from dataclasses import dataclass, field
from typing import Any, Callable

from relman.errors import DatasetError

# The ColumnMapping fields a reader may use; `normalise` clears the ones it does not.
MAPPING_FIELDS = ("text_col", "label_col", "group_col", "split_col", "x_key", "y_key", "image_col", "image_size",
                  "chunk_chars", "delimiter")
_TABLE_FIELDS = ("text_col", "label_col", "group_col", "split_col")


@dataclass(frozen=True)
class Reader:
    name: str                              # the format name stored with the dataset ("csv")
    title: str                             # how messages name its files ("CSV")
    target: str                            # "module:function" that reads it, imported when used
    kind: str                              # the dataset kind it produces (relman.data.dataset.Kind)
    suffixes: tuple[str, ...] = ()         # file suffixes that mean this format (guess_format)
    uses: tuple[str, ...] = ()             # the ColumnMapping fields it reads (see MAPPING_FIELDS)
    folder: bool = False                   # reads a folder of files instead of one file
    entries: str = ""                      # folder readers: "module:function" listing (rel, file) pairs
    suffix_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)  # e.g. .tsv → tab delimiter
    description: str = ""

    def function(self) -> Callable[..., Any]:
        return _resolve(self.target)

    def list_entries(self) -> Callable[..., Any]:
        return _resolve(self.entries)


def _resolve(target: str) -> Callable[..., Any]:
    fn: Callable[..., Any] = targets.resolve(target)
    return fn


READERS: dict[str, Reader] = {}


def register(reader: Reader) -> Reader:
    if reader.name in READERS:
        raise ValueError(f"dataset format {reader.name} registered twice")
    unknown = set(reader.uses) - set(MAPPING_FIELDS)
    if unknown:
        raise ValueError(f"format {reader.name} uses unknown mapping fields {sorted(unknown)}")
    READERS[reader.name] = reader
    return reader


def format_names() -> list[str]:
    return list(READERS)


def get_reader(name: str) -> Reader:
    try:
        return READERS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset format '{name}' (known: {', '.join(READERS)})") from None


def format_of_suffix(suffix: str) -> str | None:
    suffix = suffix.lower()
    return next((r.name for r in READERS.values() if suffix in r.suffixes), None)


def folder_format() -> str | None:
    """The format a folder is read as when none is given (the image folder)."""
    return next((r.name for r in READERS.values() if r.folder), None)


register(Reader(
    name="csv", title="CSV", target="relman.data.read_csv:read_csv", kind="text", suffixes=(".csv", ".tsv"),
    uses=_TABLE_FIELDS + ("delimiter",), suffix_defaults={".tsv": {"delimiter": "\t"}},
    description="a header row, then one row per example (a .tsv file is tab-separated)"))
register(Reader(
    name="jsonl", title="JSON Lines", target="relman.data.read_jsonl:read_jsonl", kind="text",
    suffixes=(".jsonl", ".ndjson"), uses=_TABLE_FIELDS, description="one JSON object per line"))
register(Reader(
    name="parquet", title="Parquet", target="relman.data.read_parquet:read_parquet", kind="text",
    suffixes=(".parquet", ".pq"), uses=_TABLE_FIELDS + ("image_col", "image_size"),
    description="a Parquet table; an image column of encoded bytes makes it an image dataset"))
register(Reader(
    name="images", title="image folder", target="relman.data.read_images:read_image_entries", kind="image",
    uses=("image_size",), folder=True, entries="relman.data.read_images:folder_entries",
    description="one sub-folder per class, image files inside"))
register(Reader(
    name="npz", title="NumPy .npz", target="relman.data.read_npz:read_npz", kind="image", suffixes=(".npz",),
    uses=("x_key", "y_key", "group_col", "split_col"), description="named arrays: images, labels, groups, splits"))
register(Reader(
    name="text", title="plain text", target="relman.data.read_text:read_text", kind="lm",
    suffixes=(".txt", ".text"), uses=("chunk_chars",), description="one example a line, or fixed-size chunks"))
register(Reader(
    name="conll", title="CoNLL", target="relman.data.read_conll:read_conll", kind="tokens",
    suffixes=(".conll", ".bio", ".iob2"), description="token<TAB>BIO tag lines, a blank line between sentences"))
register(Reader(
    name="mcq", title="multiple-choice JSON Lines (OpenCompass mcq)", target="relman.data.read_lm_items:read_mcq",
    kind="mcq", description="question, A, B, C … (the options), answer (the right letter): one object a line"))
register(Reader(
    name="qa", title="question/answer JSON Lines", target="relman.data.read_lm_items:read_qa", kind="qa",
    description="question, answer (a text or a list of accepted texts): one object a line, for greedy generation"))
register(Reader(
    name="lm-eval", title="lm-evaluation-harness task YAML", target="relman.data.read_lmeval:read_lmeval",
    kind="mcq", suffixes=(".yaml", ".yml"), folder=True, entries="relman.data.read_lmeval:task_entries",
    description="an lm-eval task file with dataset_path: json and local data_files (stored with it); "
                "multiple_choice gives mcq items, generate_until question/answer items"))
register(Reader(
    name="sft", title="instruction JSON Lines", target="relman.data.read_sft:read_sft", kind="sft",
    uses=("split_col",), description="fine-tuning rows for language models: {prompt, completion} or chat "
                                     "{messages: [{role, content}...]} objects, one per line"))
