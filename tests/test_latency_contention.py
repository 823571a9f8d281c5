"""Paired latency ratios that hold on an oversubscribed machine (issue 31, item 2).

The planted signal: an ONNX child whose forward runs its parent's whole path twice (same shared
weights, so exactly twice the work). The latency suite must store a child ÷ parent ratio whose
95 % interval reaches 2 — on the machine as it is and beside three CPU hogs on two cores — or,
beside the hogs, refuse with "not measured: machine oversubscribed" and no number. A stored
interval that misses 2 fails. Gates read a refused ratio as not measured, never as a pass, and
an older value never stands in for it.

No absolute time is asserted; the only clock is a generous deadline on each evaluation.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from relman.catalog import Metric

pytestmark = pytest.mark.heavy

PLANTED = 2.0
# a call also pays a fixed cost that the child does not double (the session run, feeding the
# input, the final Sum): measured at 1.96–1.97 here, so the interval must reach 2 ± 5 %
TOLERANCE = 0.05
DEADLINE_S = 120  # per evaluation: a bound on a hung run, not a timing assertion
HOGS = 3


@pytest.fixture
def family(catalog, tmp_path):
    """(catalog, parent version, child version): the child does the parent's work twice."""
    from relman.modelio.tiny import repeated_block_onnx_classifier

    d = tmp_path
    once = repeated_block_onnx_classifier(d / "once", copies=1, repeats=8)
    twice = repeated_block_onnx_classifier(d / "twice", copies=2, repeats=8)
    parent = catalog.add_version("planted", _files(once), format="onnx", task="image-classification")
    child = catalog.add_version("planted", _files(twice), format="onnx", task="image-classification",
                                parents=[(parent.id, None)])
    return catalog, parent, child


def _files(folder):
    return {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}


def _ratio_row(catalog, version_id):
    """The newest latency_p50_ratio_vs_parent row of the version."""
    rows = [m for m in catalog.metrics(version_id, latest=False) if m["name"] == "latency_p50_ratio_vs_parent"]
    return max(rows, key=lambda r: r["id"])


def _evaluate(catalog, version_id) -> dict:
    from relman.evaluate.job import run
    from relman.jobs.context import JobContext

    ctx = JobContext(catalog, device="cpu")
    start = time.monotonic()
    try:
        run({"version_id": version_id, "threads": 1, "suites": ["latency"], "batch_sizes": [32],
             "options": {"min_samples": 200, "warmup": 10, "time_budget_s": 15}}, ctx)
    finally:
        ctx.cleanup()
    assert time.monotonic() - start < DEADLINE_S, "the evaluation ran past its deadline"
    return _ratio_row(catalog, version_id)


def _check(row: dict, *, may_refuse: bool) -> str:
    """'measured' when the stored ratio's interval reaches the planted factor, 'refused' when
    the suite declined (only where allowed); anything else fails."""
    ctx = row["context"]
    assert ctx["reference_p50_ms"] > 0 and ctx["pairs_total"] == ctx["pairs_kept"] + ctx["pairs_rejected"]
    assert "schedstat" in ctx["rejection"] or "thread CPU" in ctx["rejection"], ctx
    if row["value"] is None:
        assert may_refuse, f"no ratio on the machine as it is: {ctx.get('not_measured')}"
        assert ctx["status"] == "not measured: machine oversubscribed", ctx
        assert ctx["not_measured"].startswith("not measured: machine oversubscribed") and "interval" not in ctx
        return "refused"
    lo, hi = ctx["interval"]
    assert lo <= row["value"] <= hi, ctx
    assert lo <= PLANTED * (1 + TOLERANCE) and hi >= PLANTED * (1 - TOLERANCE), \
        f"wrong ratio stored: {row['value']:.3f} [{lo:.3f}, {hi:.3f}], planted {PLANTED} ({ctx})"
    assert ctx["pairs_kept"] >= 30 and "undisturbed pairs" in ctx["method"], ctx
    return "measured"


def _start_hogs(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _stop(hogs: list[subprocess.Popen]) -> None:
    for p in hogs:
        p.kill()
    for p in hogs:
        p.wait(timeout=30)


def test_the_planted_2x_holds_quiet_and_beside_three_cpu_hogs_or_is_refused(family):
    catalog, parent, child = family
    assert _check(_evaluate(catalog, child.id), may_refuse=False) == "measured"
    hogs = _start_hogs(HOGS)
    try:
        outcome = _check(_evaluate(catalog, child.id), may_refuse=True)
    finally:
        _stop(hogs)
    print(f"beside {HOGS} CPU hogs: {outcome}")


def test_a_gate_reads_a_refused_ratio_as_not_measured_and_no_older_value_stands_in(family):
    from relman.release.gates import evaluate_gates
    from relman.release.policy import validate

    catalog, parent, child = family
    rule = "latency_p50_ratio_vs_parent.upper <= 3.0"
    policy = validate({"gates": {"candidate": [rule]}, "approvals": {}, "verify_artifacts": []})
    catalog.add_metrics(child.id, [Metric("latency", "latency_p50_ratio_vs_parent", 2.0,
                                          {"interval": [1.9, 2.1], "reference": parent.ref})])
    assert evaluate_gates(catalog, catalog.get_version(child.id), "candidate", policy=policy).rules[0].status == "pass"
    why = "not measured: machine oversubscribed (3 of 400 interleaved pairs undisturbed)"
    catalog.add_metrics(child.id, [Metric("latency", "latency_p50_ratio_vs_parent", None,
                                          {"status": "not measured: machine oversubscribed", "not_measured": why,
                                           "reference": parent.ref})])
    res = evaluate_gates(catalog, catalog.get_version(child.id), "candidate", policy=policy).rules[0]
    assert res.status == "fail" and why in res.reason and "relman evaluate" in res.reason, res


def test_rounds_that_are_all_disturbed_refuse_a_ratio():
    from relman.evaluate.latency import NOT_MEASURED, interleaved_rounds

    def off_cpu() -> None:  # off the CPU for 2 ms of every call: never undisturbed
        time.sleep(0.002)

    def busy() -> None:
        end = time.perf_counter() + 0.0005
        while time.perf_counter() < end:
            pass

    t = interleaved_rounds([off_cpu, busy], warmup=0, min_samples=10, time_budget_s=0.3, calls_per_round=2,
                           single_thread=True)
    why = t.oversubscribed(1)
    assert t.pairs_kept(1) == 0 and why is not None and why.startswith(NOT_MEASURED), why
