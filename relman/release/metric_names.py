"""Which metric names exist, so a typo (`acuracy >= 0.9`) is refused with a suggestion instead
of becoming a rule that can never pass or a search that silently finds nothing.

A name is known when a suite declares its family (`relman.evaluate.registry` MetricSpec
prefixes: `accuracy` covers `accuracy_delta_vs_production`, `latency_` every latency figure) or
a recipe declares for its child (`relman.compress.registry.RECIPE_METRICS`: privacy_epsilon),
when the catalog stores a metric of that name (training losses, metrics of suites a plugin
added), or when the gates read it from the version row (`size_mb`, `canary_share`, ...).
Suggestions are difflib's close matches over those names. Light: no heavy imports; the policy
checks (`relman policy set`, the GUI's policy editor) and the search language (CLI and the
versions filter) all use this one module, so they agree.
"""

from __future__ import annotations

import difflib
from typing import Any, Collection, Iterable, Iterator

# Read from the version row by the gates when no metric of that name is stored (relman.release.gates).
ROW_METRICS = ("size_mb", "size_bytes", "params", "canary_share")


def declared_families() -> list[str]:
    """Every metric-name prefix a registered suite declares, and those recipes store about
    their child (`relman.compress.registry.RECIPE_METRICS`: privacy_epsilon, sparsity...)."""
    from relman.compress.registry import RECIPE_METRICS
    from relman.evaluate.registry import SUITES

    specs = [spec for suite in SUITES.values() for spec in suite.metrics] + list(RECIPE_METRICS)
    return sorted({spec.prefix for spec in specs})


def stored_names(catalog: Any) -> set[str]:
    """The distinct metric names stored in the catalog (one indexed scan)."""
    return {r[0] for r in catalog.conn.execute("SELECT DISTINCT name FROM metrics")}


def is_known(name: str, stored: Collection[str] = ()) -> bool:
    return name in stored or name in ROW_METRICS or any(name.startswith(p) for p in declared_families())


def unknown_metric_message(name: str, stored: Collection[str] = ()) -> str | None:
    """None when `name` is known; else "unknown metric 'acuracy' (did you mean accuracy?)"."""
    if is_known(name, stored):
        return None
    families = declared_families()
    family = next((p for p in families if p[:-1] == name and p[-1] in "_/"), None)
    if family:  # `f1` for the per-class family `f1/<class>`
        return f"unknown metric '{name}' (that family is named {family}<…>, e.g. {family}{_example(family, stored)})"
    words = {p.rstrip("_/") for p in families} | set(stored) | set(ROW_METRICS)
    close = difflib.get_close_matches(name, sorted(w for w in words if w), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else "no suite stores it and the catalog has none"
    return f"unknown metric '{name}' ({hint})"


def _example(family: str, stored: Collection[str]) -> str:
    """The rest of a stored name of `family` ('positive' for f1/positive), else a placeholder."""
    return next((n[len(family):] for n in sorted(stored) if n.startswith(family)), "NAME")


def rule_metric_names(rule: Any) -> Iterator[str]:
    """The metric names a parsed rule (relman.release.rules) reads: its own and every
    `production.<m>` / `parent.<m>` / bare metric in its expression."""
    from relman.release.rules import BinOp, MetricRule, Neg, Ref

    if not isinstance(rule, MetricRule):
        return
    yield rule.metric
    stack = [rule.expr]
    while stack:
        node = stack.pop()
        if isinstance(node, BinOp):
            stack.extend((node.right, node.left))
        elif isinstance(node, Neg):
            stack.append(node.operand)
        elif isinstance(node, Ref) and node.name:
            yield node.name


def check_rules(rules: Iterable[str], stored: Collection[str], source: str = "policy") -> None:
    """Raise a ReleaseError naming the first rule that reads an unknown metric, in the form
    `validate_text` places in the editor: "rule '<text>': unknown metric ... (column N)"."""
    from relman.release.rules import RuleSyntaxError, parse_rule

    for text in rules:
        for name in rule_metric_names(parse_rule(text)):
            message = unknown_metric_message(name, stored)
            if message:
                column = _column_of(text, name)
                raise RuleSyntaxError(f"{source}: rule '{text}': {message} (column {column})", column)


def check_policy(body: Any, stored: Collection[str], source: str = "policy") -> None:
    """Every gate rule of a validated policy body reads only known metrics."""
    for phase, rules in (body.get("gates") or {}).items():
        check_rules(rules, stored, f"{source}: gates.{phase}")


def _column_of(text: str, name: str) -> int:
    """1-based column of `name` as a whole word in `text` (1 when not found)."""
    import re

    m = re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)|(?<=\.){re.escape(name)}(?!\w)", text)
    return m.start() + 1 if m else 1
