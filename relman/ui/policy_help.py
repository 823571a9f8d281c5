"""The policy editor's syntax help: the grammar of a policy and of a gate rule, with examples.

The editor used to say "see 'relman policy --help'", a dead end in a desktop app. This panel
is built from the same definitions the parser uses (`relman.release.rules`: comparators,
interval bounds, scopes, conditions; `relman.release.policy`: phases and the policy's keys), so
it cannot drift from what is accepted; each example is a rule the parser takes (a test parses
them all). The metrics a rule may name come from the catalog (`metric_names.stored_names`)
and the suites (`declared_families`).
"""

from __future__ import annotations

from typing import Collection

# (rule, what it means): every one is parsed by relman.release.rules.parse_rule in the tests
EXAMPLES: tuple[tuple[str, str], ...] = (
    ("accuracy >= 0.90", "absolute: the version's own accuracy"),
    ("accuracy >= production.accuracy - 0.01", "relative to the production version (or `parent.`)"),
    ("latency_p95_ms <= 1.10 * production", "a bare `production` means the same metric of production"),
    ("size_mb <= 200", "a row figure (size_mb, size_bytes, params, canary_share)"),
    ("approvals >= 2", "valid approvals for the phase"),
    ("evaluated on dataset sst2-dev", "the version has metrics measured on that dataset"),
    ("accuracy_delta_vs_production.lower >= -0.01",
     "with 95 % confidence not worse than production by more than one point"),
    ("accuracy_delta_vs_production.upper >= -0.01", "refuse only when significantly worse by more than one point"),
    ("latency_p50_ratio_vs_production <= 1.10", "paired latency ratio (same job, same inputs)"),
    ("fidelity >= 0.99 when compressed and not causal_lm", "only for the versions the condition holds for"),
)

POLICY_KEYS: tuple[tuple[str, str], ...] = (
    ("transitions", "from-phase → the phases it may move to, e.g. `\"draft\": [\"candidate\", \"rejected\"]`"),
    ("gates", "to-phase → a list of rules (below); every rule must pass to enter the phase"),
    ("approvals", "to-phase → approvals needed (added as the rule `approvals >= N`)"),
    ("previous_production", "what happens to the version a new production replaces: `retire` or `demote`"),
    ("rollback_to", "where a rolled-back production version goes: `retired` or `rejected`"),
    ("verify_artifacts", "phases whose promotion re-hashes the version's files"),
    ("require_signed_approvals", "phases whose approvals count only when signed with a trusted key"),
)


def policy_help_markdown(stored_metrics: Collection[str] = ()) -> str:
    from relman.release.metric_names import ROW_METRICS, declared_families
    from relman.release.policy import PHASES
    from relman.release.rules import BOUNDS, COMPARATORS, CONDITIONS, MAX_RULE_CHARS

    def code(items: Collection[str]) -> str:
        return ", ".join(f"`{x}`" for x in items)

    lines = [
        "## Policy syntax", "",
        "A policy is a JSON object; keys left out take the built-in default (revision 0).", "",
        "| key | meaning |", "|---|---|",
        *[f"| `{k}` | {v} |" for k, v in POLICY_KEYS], "",
        f"Phases: {code(PHASES)}.", "",
        "## Gate rules", "",
        f"One rule per string, at most {MAX_RULE_CHARS} characters; parsed, never evaluated as code.", "",
        "- `METRIC OP EXPRESSION`: EXPRESSION is numbers, `+ - * /`, parentheses and metric references;",
        "  `production.METRIC` / `parent.METRIC` read that version's value, a bare `production` / `parent` "
        "its value of the rule's metric;",
        f"- OP is one of {code(COMPARATORS)};",
        f"- `METRIC.BOUND` ({code(BOUNDS)}) reads an end of the stored 95 % interval "
        "(accuracy, macro_f1, fidelity, the paired `*_delta_vs_parent` / `*_delta_vs_production`, "
        "`latency_p50_ratio_vs_*`);",
        "- `approvals OP N` and `evaluated on dataset NAME` are rules of their own;",
        f"- `RULE when COND [and [not] COND]…` with COND one of {code(CONDITIONS)}: a rule that does not "
        "apply is skipped (shown as skipped, not passed), as is one comparing with a production or parent "
        "version that does not exist;",
        "- a metric with no stored value fails as \"not evaluated\".", "",
        "## Examples", "",
        "| rule | meaning |", "|---|---|",
        *[f"| `{r}` | {m} |" for r, m in EXAMPLES], "",
        "## Metric names", "",
        f"Row figures: {code(ROW_METRICS)}.", "",
        f"Names (or name prefixes) the suites and recipes store: {code(declared_families())}.", "",
    ]
    if stored_metrics:
        lines += [f"In this catalog: {code(sorted(stored_metrics))}.", ""]
    return "\n".join(lines)
