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
    if threads is not None:
        import os

        most = max(1, os.cpu_count() or 1) * 4
        if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= most:
            raise EvaluationError(f"--threads must be a whole number from 1 to {most}, got {threads}")
        common["threads"] = int(threads)
    if max_samples is not None:
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or not 1 <= max_samples <= 2**53:
            raise EvaluationError(f"--max-samples must be at least 1, got {max_samples} (leave it out for all rows)")
        common["max_samples"] = int(max_samples)
    if dataset_id is not None:
        common["dataset"] = dataset_id
    plans = []
    for v in versions:
        chosen = registry.ordered(suites) if suites else registry.default_suites(v.task, dataset_id is not None)
        chosen = _suites_for_format(v, chosen, explicit=bool(suites))
        check_request(v.task, chosen, dataset_id is not None, v.ref)
        if common.get("seq_lens"):
            _check_seq_lens(catalog, v, common["seq_lens"])
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
        elif "explain" in chosen:  # compared with its parent when it has one (or --parent)
            from relman.evaluate.explain import check_task

            check_task(v.task, v.ref)
            pid = parent_id if parent_id is not None else next((p["parent_id"] for p in catalog.parents(v.id)), None)
            if pid is not None and pid != v.id:
                params["parent_version_id"] = pid
        plans.append(params)
    return plans


def _suites_for_format(v: Any, chosen: list[str], *, explicit: bool) -> list[str]:
    """A gguf version has no runtime in relman yet: only suites that read its files apply.
    Named ones are refused (one line, before queueing); the defaults are narrowed."""
    if v.format != "gguf":
        return chosen
    from relman.modelio.gguf_file import evaluable_suites

    allowed = evaluable_suites()
    bad = [s for s in chosen if s not in allowed]
    if bad and explicit:
        raise EvaluationError(f"{v.ref} is a gguf version: relman measures it with {', '.join(allowed)} only "
                              f"(no GGUF runtime here for {', '.join(bad)}; its card says how to run it in llama.cpp)")
    return [s for s in chosen if s in allowed]


def _check_seq_lens(catalog: Any, v: Any, seq_lens: Sequence[int]) -> None:
    """Refuse sequence lengths beyond what the model's config allows, instead of silently
    measuring a shorter one in the worker."""
    import json

    arts = {a["path"]: a["sha256"] for a in catalog.artifacts(v.id)}
    if "config.json" not in arts:
        return
    try:
        config = json.loads(catalog.store.path(arts["config.json"]).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    limits = [int(x) for x in (config.get("max_position_embeddings"), config.get("n_positions"))
              if isinstance(x, int) and 0 < x < 10**6]
    if limits and max(seq_lens) > min(limits):
        raise EvaluationError(f"--seq-len {max(seq_lens)} is longer than {v.ref} takes ({min(limits)} positions); "
                              f"choose at most {min(limits)}")
