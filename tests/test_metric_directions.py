"""A metric's suite and direction are declared once, with the suite that measures it, and read
everywhere (gate hints, the GUI's Pareto fronts and deltas)."""

from __future__ import annotations

import pytest

from relman.compress.registry import metric_direction
from relman.evaluate import registry
from relman.evaluate.registry import MetricSpec, Suite


def test_declared_directions_of_the_built_in_suites() -> None:
    cases = {
        "latency_p95_ms": ("latency", False), "throughput_sps": ("latency", True),
        "latency_p50_ratio_vs_parent": ("latency", False), "peak_rss_mb": ("memory", False),
        "size_mb": ("size", False), "params": ("size", False), "accuracy": ("quality", True),
        "accuracy_delta_vs_production": ("quality", True), "loss_delta_vs_parent": ("quality", False),
        "perplexity": ("quality", False), "agreement_vs_parent": ("fidelity", True),
        "kl_div_vs_parent": ("fidelity", False),  # the name heuristic had this one upside down
        "demographic_parity_diff": ("fairness", False), "equalized_odds_diff": ("fairness", False),
        "selection_rate/a": ("fairness", None), "robustness_drop": ("robustness", False),
        "robust_accuracy_min": ("robustness", True), "explain_agreement_vs_parent": ("explain", True),
        "explain_sufficiency": ("explain", False), "eval_samples": ("quality", None),
    }
    for name, (suite, direction) in cases.items():
        assert registry.suite_for_metric(name) == suite, name
        assert registry.higher_is_better(name) is direction, name
    assert registry.suite_for_metric("canary_share") is None
    # recipes' own metrics are declared beside the recipes
    assert metric_direction("privacy_epsilon") is False and metric_direction("sparsity") is True
    assert metric_direction("top1_agreement_vs_parent") is True and metric_direction("nonsense") is None


def test_a_new_metric_is_declared_once_and_read_everywhere() -> None:
    name = "zz_widget_score"
    assert registry.suite_for_metric(name) is None and metric_direction(name) is None
    registry.register(Suite("zz-widgets", "Widgets", "relman.targets:resolve",
                            metrics=(MetricSpec("zz_widget_", False),)))
    try:
        assert registry.suite_for_metric(name) == "zz-widgets"
        assert registry.higher_is_better(name) is False and metric_direction(name) is False
        pytest.importorskip("PySide6")  # the GUI's reading (its module imports no Qt itself)
        from relman.ui.snapshot import lower_is_better

        assert lower_is_better(name)
    finally:
        del registry.SUITES["zz-widgets"]
