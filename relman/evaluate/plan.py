"""Planning evaluations: the checked job parameters for each version, without queueing.

Everything that can be checked without torch is checked here, from catalog rows alone: suite
names and options, whether the suites apply to each version's task, whether the dataset exists
and can serve them, and which parent fidelity compares with. Versions planned together get
identical parameters, so their numbers are comparable. It sits in `relman.evaluate` (not in
`relman.app`) so that the compress job can plan its child's evaluation without importing the
use-case layer; `relman.app.evaluate.queue_evaluation` queues what it returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from relman.errors import EvaluationError

if TYPE_CHECKING:
    from relman.catalog import Catalog


def plan_evaluation(catalog: "Catalog", refs: Sequence[str], *, dataset: str | int | None = None,
                    suites: Sequence[str] | None = None, batch_sizes: Sequence[int] | None = None,
                    seq_lens: Sequence[int] | None = None, threads: int | None = None,
                    max_samples: int | None = None, parent: str | None = None,
                    options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The job parameters for each version (checked), without queueing anything."""
    from relman.evaluate import registry
    from relman.evaluate.job import _int_list, check_dataset_row, check_request

    if not refs:
        raise EvaluationError("name at least one version to evaluate (MODEL@VERSION)")
    versions = [catalog.resolve(r) for r in refs]
    dataset_id = None
    dataset_row = None
    if dataset is not None:
        from relman.data.stored import get_dataset

        dataset_row = get_dataset(catalog, dataset)
        dataset_id = dataset_row["id"]
    parent_id = catalog.resolve(parent).id if parent else None
    common: dict[str, Any] = {}
    if batch_sizes:
        common["batch_sizes"] = _int_list(list(batch_sizes), "batch_sizes", [])
    if seq_lens:
        common["seq_lens"] = _int_list(list(seq_lens), "seq_lens", [])
    if threads:
        common["threads"] = int(threads)
    if max_samples:
        if int(max_samples) < 1:
            raise EvaluationError(f"max_samples must be at least 1, got {max_samples}")
        common["max_samples"] = int(max_samples)
    if dataset_id is not None:
        common["dataset"] = dataset_id
    plans = []
    for v in versions:
        chosen = registry.ordered(suites) if suites else registry.default_suites(v.task, dataset_id is not None)
        check_request(v.task, chosen, dataset_id is not None, v.ref)
        if dataset_row is not None and any(registry.get_suite(s).dataset != "none" for s in chosen):
            check_dataset_row(v.task, chosen, dataset_row, v.ref)
        opts = registry.resolve_options(chosen, options)
        params = dict(common, version_id=v.id, suites=chosen,
                      options={k: opts[k] for k in (options or {})})
        if "fidelity" in chosen:
            pid = parent_id
            if pid is None:
                parents = catalog.parents(v.id)
                if not parents:
                    raise EvaluationError(f"fidelity compares {v.ref} with its parent, but it has none "
                                          "(name one with --parent)")
                pid = parents[0]["parent_id"]
            if pid == v.id:
                raise EvaluationError(f"fidelity of {v.ref} against itself means nothing; choose another --parent")
            params["parent_version_id"] = pid
        plans.append(params)
    return plans
