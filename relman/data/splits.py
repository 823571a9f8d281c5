"""Train / validation / test splits: a given split column, checked, or a seeded split.

A seeded split is a pure function of (row count, fractions, seed); the fractions and seed are
stored with the dataset, so every load reproduces it exactly.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from relman.data.dataset import SPLITS
from relman.errors import DatasetError


def check_split_values(values: Sequence[Any], *, where: str, column: str,
                       row_name: Callable[[int], str]) -> np.ndarray:
    """The split column as an object array; a value other than train/validation/test is refused."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        s = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
        if not isinstance(s, str) or s.strip() not in SPLITS:
            raise DatasetError(f"{where} {row_name(i)}: split column '{column}' holds {v!r}; "
                               f"allowed values are {', '.join(SPLITS)}")
        out[i] = s.strip()
    return out


def seeded_split(n: int, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """Assign `round(n * fraction)` rows (at least one when the fraction is > 0) to validation
    and test by a permutation from `numpy.random.default_rng(seed)`; the rest are train."""
    n_val = _count(n, val_fraction)
    n_test = _count(n, test_fraction)
    if n_val + n_test >= n:
        raise DatasetError(f"a {val_fraction:g}/{test_fraction:g} validation/test split of {n} rows leaves "
                           "no rows for training")
    order = np.random.default_rng(seed).permutation(n)
    split = np.full(n, "train", dtype=object)
    split[order[:n_test]] = "test"
    split[order[n_test:n_test + n_val]] = "validation"
    return split


def _count(n: int, fraction: float) -> int:
    if fraction <= 0:
        return 0
    return max(1, int(round(n * fraction)))


def split_counts(split: np.ndarray | None) -> dict[str, int]:
    if split is None:
        return {}
    return {s: int(np.sum(split == s)) for s in SPLITS if np.any(split == s)}
