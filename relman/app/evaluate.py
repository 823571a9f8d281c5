"""Queueing evaluations: one "evaluate" job per version, all with the same settings.

Everything that can be checked without torch is checked here, before any job is queued (suite
names, options, whether the suites apply to each version's task, whether the dataset exists
and is needed), and the jobs are queued in one transaction: a refused request queues nothing.
Versions evaluated together get identical parameters (dataset, suites, device, batch sizes,
sequence lengths, threads, sample cap, options), so their numbers are comparable; each still
runs in its own worker process so latency and memory are measured without interference.
"""

from __future__ import annotations

from typing import Any, Sequence

from relman.catalog import Catalog
from relman.evaluate.plan import plan_evaluation

__all__ = ["plan_evaluation", "queue_evaluation"]


def queue_evaluation(catalog: Catalog, refs: Sequence[str], dataset: str | int | None = None,
                     suites: Sequence[str] | None = None, device: str = "auto", *,
                     batch_sizes: Sequence[int] | None = None, seq_lens: Sequence[int] | None = None,
                     threads: int | None = None, max_samples: int | None = None, parent: str | None = None,
                     options: dict[str, Any] | None = None, actor: str | None = None) -> list[int]:
    """Queue one evaluate job per version in `refs`; returns the job ids (in `refs` order)."""
    from relman.jobs.queue import enqueue

    plans = plan_evaluation(catalog, refs, dataset=dataset, suites=suites, batch_sizes=batch_sizes,
                            seq_lens=seq_lens, threads=threads, max_samples=max_samples, parent=parent,
                            options=options)
    with catalog.transaction():
        return [enqueue(catalog, "evaluate", p, device=device, actor=actor) for p in plans]

