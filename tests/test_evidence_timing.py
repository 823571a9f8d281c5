"""Trustworthy timing: timing jobs run alone on their device, and a child is timed against its
parent / production in the same job, in interleaved rounds, with a ratio and a 95 % interval
that finds a planted slowdown and finds none between identical copies."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from relman.jobs import queue
from relman.jobs.queue import enqueue, get_job
from relman.jobs.testing import HoldPoint, drive_until, job_status


def ts(job: dict, key: str) -> datetime:
    return datetime.fromisoformat(job[key])


def spin(ms: float):
    """A call that takes `ms` of wall time (busy-waiting: no sleep granularity)."""
    def call() -> None:
        end = time.perf_counter() + ms / 1000
        while time.perf_counter() < end:
            pass
    return call


# -- the method, on planted calls ----------------------------------------------------------------
def test_interleaved_rounds_find_a_planted_2x_and_no_difference_between_equals():
    from relman.evaluate.latency import interleaved_rounds, round_ratios
    from relman.evaluate.stats import bootstrap_median_ratio

    t = interleaved_rounds([spin(1.0), spin(0.5), spin(0.5)], warmup=2, min_samples=200, time_budget_s=120,
                           single_thread=True)
    assert t.rounds >= 20 and all(w.shape[1] == 10 for w in t.wall)  # >= 200 timed calls per model
    assert sum(int(c.sum()) for c in t.clean[:1]) >= 40  # the undisturbed calls the ratios use
    slow = bootstrap_median_ratio(round_ratios(t.wall[0], t.wall[1], t.clean[0], t.clean[1]))
    assert slow["lower"] > 1.0, slow  # excludes 1.0
    assert slow["lower"] <= 2.0 * 1.1 and slow["upper"] >= 2.0 * 0.9, slow  # at the planted factor
    same = bootstrap_median_ratio(round_ratios(t.wall[1], t.wall[2], t.clean[1], t.clean[2]))
    assert same["lower"] <= 1.05 and same["upper"] >= 0.95, same  # reaches 1.0, give or take 5 %


def test_a_call_whose_thread_was_not_running_is_marked_descheduled():
    from relman.evaluate.latency import interleaved_rounds

    t = interleaved_rounds([lambda: time.sleep(0.002), spin(0.5)], warmup=0, min_samples=10, time_budget_s=0.3,
                           calls_per_round=2, single_thread=True)
    assert not t.clean[0].any()  # off the CPU for 2 ms of each call: never "clean"
    assert t.bounded and t.descheduled_share(0) == 1.0  # no round with a clean call of each


def test_time_budget_bounds_the_rounds_and_says_so():
    from relman.evaluate.latency import interleaved_rounds

    t = interleaved_rounds([spin(2.0), spin(2.0)], warmup=0, min_samples=10_000, time_budget_s=0.1)
    assert t.bounded and 5 <= t.rounds < 100


# -- the latency suite with a parent and a production version, in one job ------------------------------
@pytest.fixture(scope="module")
def bert_pair(tmp_path_factory):
    """A small BERT and the same weights with four times the layers (a planted slower child)."""
    from relman.modelio import tiny

    d = tmp_path_factory.mktemp("paired")
    return (tiny.tiny_bert_classifier(d / "base", hidden=64, layers=1, intermediate=128),
            tiny.tiny_bert_classifier(d / "deep", hidden=64, layers=6, intermediate=128))


def _files(folder):
    return {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}


def _evaluate(catalog, version_id, **params):
    from relman.evaluate.job import run
    from relman.jobs.context import JobContext

    ctx = JobContext(catalog, device="cpu")
    try:
        return run({"version_id": version_id, "threads": 1, "suites": ["latency"], "batch_sizes": [1],
                    "seq_lens": [16], **params}, ctx)
    finally:
        ctx.cleanup()


@pytest.mark.heavy
def test_paired_latency_ratio_finds_a_slower_child_and_not_an_identical_copy(catalog, bert_pair):
    from relman.app import release
    from relman.app.models import import_model

    base_dir, deep_dir = bert_pair
    base = import_model(catalog, base_dir, "p")
    release.set_policy(catalog, "p", {"approvals": {}, "gates": {"candidate": [], "staging": [], "production": []},
                                      "verify_artifacts": []})
    for phase in ("candidate", "staging", "production"):
        release.promote(catalog, base, phase)
    copy = catalog.add_version("p", _files(base_dir), format="hf", task="text-classification",
                               parents=[(base.id, None)])
    deep = catalog.add_version("p", _files(deep_dir), format="hf", task="text-classification",
                               parents=[(base.id, None)])
    for v in (copy, deep):
        _evaluate(catalog, v.id)

    def ratio(v, scope):
        m = {r["name"]: r for r in catalog.metrics(v.id)}[f"latency_p50_ratio_vs_{scope}"]
        return m["value"], m["context"]

    value, ctx = ratio(deep, "parent")
    lo, hi = ctx["interval"]
    assert lo <= value <= hi and lo > 1.3, (value, ctx)  # clearly slower; the interval excludes 1.0
    assert ctx["samples"] >= 200 and ctx["rounds"] >= 20 and ctx["reference"] == base.ref
    assert ctx["threads"] == 1 and ctx["paired_with"] == [base.ref]
    assert ratio(deep, "production")[0] == value  # production is the parent: timed once, stored for both
    value, ctx = ratio(copy, "parent")
    lo, hi = ctx["interval"]
    # an identical copy: the interval reaches 1.0 give or take 5 % (two copies of the same
    # weights in memory can differ by a few % on a machine loaded 5x over; the planted child
    # above is 3x slower)
    assert lo <= 1.05 and hi >= 0.95, (value, ctx)
    # the child's absolute figures are kept, labelled with their conditions
    p50 = {r["name"]: r for r in catalog.metrics(deep.id)}["latency_p50_ms"]
    assert p50["context"]["samples"] >= 200 and "load_avg_1m" in p50["context"]


@pytest.mark.heavy
def test_unpaired_option_and_a_root_version_store_no_ratios(catalog, bert_pair):
    from relman.app.models import import_model

    base = import_model(catalog, bert_pair[0], "solo")
    _evaluate(catalog, base.id, options={"min_samples": 20})
    names = {r["name"] for r in catalog.metrics(base.id)}
    assert "latency_p50_ms" in names and not any("ratio" in n for n in names)


# -- the exclusive slot ---------------------------------------------------------------------------
@pytest.mark.heavy
def test_a_latency_job_runs_alone_and_queued_jobs_keep_their_order(catalog, make_runner, tmp_path, bert_pair,
                                                                    monkeypatch):
    from relman.app.models import import_model

    v = import_model(catalog, bert_pair[0], "x")
    hold = HoldPoint(monkeypatch, "write_version.start", tmp_path)
    runner = make_runner(cpu_slots=2)
    before = enqueue(catalog, "write_version", device="cpu")
    timing = enqueue(catalog, "evaluate", {"version_id": v.id, "suites": ["latency"], "batch_sizes": [1],
                                           "seq_lens": [16], "options": {"min_samples": 20}}, device="cpu")
    after = enqueue(catalog, "sleep", {"seconds": 0.1, "steps": 1}, device="cpu")
    drive_until(runner, lambda: hold.logged(catalog, before), 60, "the first job to hold")
    for _ in range(5):  # a free slot, yet neither the timing job nor the one behind it may start
        runner.tick()
    assert [job_status(catalog, j) for j in (before, timing, after)] == ["running", "queued", "queued"]
    hold.release()
    drive_until(runner, lambda: all(job_status(catalog, j) in queue.FINISHED for j in (before, timing, after)),
                180, "all three jobs")
    a, t, b = (get_job(catalog, j) for j in (before, timing, after))
    assert [j["status"] for j in (a, t, b)] == ["succeeded"] * 3, t["error"]
    assert ts(t, "started_at") >= ts(a, "finished_at")  # drained first
    assert ts(b, "started_at") >= ts(t, "finished_at")  # nothing beside it, FIFO behind it
    p50 = {r["name"]: r for r in catalog.metrics(v.id)}["latency_p50_ms"]
    assert p50["context"]["other_jobs"] == [] and p50["context"]["beside_jobs"] is False


def test_needs_exclusive_follows_the_suites():
    from relman.jobs.kinds import needs_exclusive

    assert needs_exclusive("evaluate", {"suites": ["latency"]})
    assert needs_exclusive("evaluate", {"suites": ["quality", "memory"]})
    assert needs_exclusive("evaluate", {})  # default suites include latency
    assert not needs_exclusive("evaluate", {"suites": ["quality", "fidelity"]})
    assert needs_exclusive("optimize", {}) and not needs_exclusive("sleep", {})
