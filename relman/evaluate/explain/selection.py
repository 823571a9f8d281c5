"""Which rows are explained: one named example, or N seeded rows. numpy only, so the CLI can
choose them (and check an index) before queueing."""

from __future__ import annotations

import numpy as np

from relman.errors import EvaluationError


def select_examples(n_rows: int, n: int | None, seed: int, example: int | None = None) -> list[int]:
    """The rows explained: one named example, or `n` seeded rows (sorted; all when fewer)."""
    if example is not None:
        if not 0 <= int(example) < n_rows:
            raise EvaluationError(f"example index {example} is out of range (the data has {n_rows} rows: "
                                  f"0..{n_rows - 1})")
        return [int(example)]
    n = min(int(n or n_rows), n_rows)
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n_rows, size=n, replace=False))
