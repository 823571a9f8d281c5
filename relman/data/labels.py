"""Label values -> indices into a list of label names, and checks against a model's labels."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from relman.errors import DatasetError

from relman.data.dataset import Dataset


def label_text(value: Any) -> str | None:
    """A label value as the string it names, or None when it is missing (None, NaN, '')."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return None
        if float(value).is_integer():
            return str(int(value))
        return None  # 0.5 is a regression target, not a class
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, str):
        return value.strip() or None  # ' positive' from a hand-edited CSV is 'positive'
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8") or None
        except UnicodeDecodeError:
            return None
    return None


def encode_labels(values: Sequence[Any], given: Sequence[str] | None, *, where: str, column: str,
                  row_name: Callable[[int], str]) -> tuple[np.ndarray, list[str]]:
    """Map each row's label to an index. With `given` labels their order is kept and a value
    outside them is refused; otherwise the names are the sorted distinct values (numeric
    order when every label is an integer, so '10' comes after '9')."""
    names: list[str] = []
    for i, v in enumerate(values):
        t = label_text(v)
        if t is None:
            shown = "empty" if v is None or isinstance(v, str) else f"not a class label ({v!r})"
            if isinstance(v, float | np.floating) and math.isnan(v):
                shown = "NaN"
            raise DatasetError(f"{where} {row_name(i)}: label column '{column}' is {shown}")
        names.append(t)
    if given is not None:
        label_names = [str(g) for g in given]
        if len(set(label_names)) != len(label_names):
            raise DatasetError(f"the given labels repeat a name: {', '.join(label_names)}")
        index = {n: i for i, n in enumerate(label_names)}
        for i, t in enumerate(names):
            if t not in index:
                raise DatasetError(f"{where} {row_name(i)}: label '{t}' in column '{column}' is not one of the "
                                   f"given labels ({', '.join(label_names)})")
    else:
        distinct = set(names)
        if all(_is_int(n) for n in distinct):
            label_names = sorted(distinct, key=int)
        else:
            label_names = sorted(distinct)
        index = {n: i for i, n in enumerate(label_names)}
    return np.fromiter((index[t] for t in names), dtype=np.int64, count=len(names)), label_names


def _is_int(s: str) -> bool:
    try:
        int(s)
    except ValueError:
        return False
    return True


def check_labels(dataset: Dataset, model_labels: Sequence[str]) -> np.ndarray:
    """Check that every label the dataset uses is one the model knows.

    Returns, for each of `dataset.label_names`, the index of the same name in `model_labels`
    (-1 for names no row uses and the model lacks). Raises `DatasetError` naming the labels
    the model does not know. An unlabelled dataset passes with an empty mapping."""
    if dataset.labels is None and not dataset.tags:
        return np.zeros(0, dtype=np.int64)
    model_index = {str(n): i for i, n in enumerate(model_labels)}
    rows = dataset.labels if dataset.labels is not None else np.concatenate(dataset.tags)  # type: ignore[arg-type]
    used = sorted({int(i) for i in np.unique(rows)})
    unknown = [dataset.label_names[i] for i in used if dataset.label_names[i] not in model_index]
    if unknown:
        shown = ", ".join(unknown[:10]) + (f" (+{len(unknown) - 10} more)" if len(unknown) > 10 else "")
        raise DatasetError(f"dataset '{dataset.name}' has labels the model does not know: {shown} "
                           f"(model labels: {', '.join(map(str, model_labels)) or 'none'})")
    return np.array([model_index.get(n, -1) for n in dataset.label_names], dtype=np.int64)


def align_labels(dataset: Dataset, model_labels: Sequence[str]) -> Dataset:
    """The dataset with its label indices re-numbered to the model's label order, so a
    prediction index and a label index mean the same class."""
    from dataclasses import replace

    mapping = check_labels(dataset, model_labels)
    if dataset.labels is None and not dataset.tags:
        return dataset
    return replace(dataset, labels=mapping[dataset.labels] if dataset.labels is not None else None,
                   tags=[mapping[t] for t in dataset.tags] if dataset.tags is not None else None,
                   label_names=[str(n) for n in model_labels])
