"""The gate-rule language: tokens, syntax tree and parser (no evaluation, no `eval`).

A rule is one line (see `relman.release.gates` for what each form means):

    accuracy >= production.accuracy - 0.01
    latency_p95_ms <= 1.10 * production
    approvals >= 2
    evaluated on dataset sst2-dev

It is its own module because two layers-mates need it: `relman.release.policy` parses every
rule when a policy is set (a typo is caught then, not at promotion) and `relman.release.gates`
parses them again to evaluate them. Both import it; neither imports the other for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from relman.errors import ReleaseError

COMPARATORS = ("<=", ">=", "==", "!=", "<", ">")
_TOKEN = re.compile(r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|(?P<op><=|>=|==|!=|<|>|[-+*/()])"
                    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)|(?P<str>\"[^\"]*\"|'[^']*'))")
_EVALUATED_WORDS = re.compile(r"^\s*evaluated\s+on\s+(?:dataset\s+)?(?P<q>\"[^\"]*\"|'[^']*'|\S+)\s*$")
_SCOPES = ("production", "parent")


# -- abstract syntax ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Num:
    value: float


@dataclass(frozen=True)
class Ref:
    scope: str  # "self" | "production" | "parent"
    name: str | None  # None: the rule's own metric


@dataclass(frozen=True)
class BinOp:
    op: str
    left: Any
    right: Any


@dataclass(frozen=True)
class Neg:
    operand: Any


@dataclass(frozen=True)
class MetricRule:
    metric: str
    op: str
    expr: Any


@dataclass(frozen=True)
class ApprovalsRule:
    op: str
    count: float


@dataclass(frozen=True)
class DatasetRule:
    dataset: str


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ReleaseError(f"rule '{text}': unexpected text at '{text[pos:].strip()}'")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise ReleaseError(f"rule '{self.text}': incomplete (expected more after the end)")
        self.i += 1
        return tok

    def fail(self, what: str) -> ReleaseError:
        tok = self.peek()
        at = tok[1] if tok else "the end"
        return ReleaseError(f"rule '{self.text}': expected {what} at '{at}'")

    def expr(self) -> Any:
        node = self.term()
        while (tok := self.peek()) and tok[1] in ("+", "-") and tok[0] == "op":
            self.take()
            node = BinOp(tok[1], node, self.term())
        return node

    def term(self) -> Any:
        node = self.factor()
        while (tok := self.peek()) and tok[1] in ("*", "/") and tok[0] == "op":
            self.take()
            node = BinOp(tok[1], node, self.factor())
        return node

    def factor(self) -> Any:
        tok = self.peek()
        if tok is None:
            raise self.fail("a number or a metric")
        kind, text = tok
        if kind == "num":
            self.take()
            return Num(float(text))
        if kind == "op" and text == "-":
            self.take()
            return Neg(self.factor())
        if kind == "op" and text == "(":
            self.take()
            node = self.expr()
            if self.peek() != ("op", ")"):
                raise self.fail("')'")
            self.take()
            return node
        if kind == "name":
            self.take()
            scope, _, name = text.partition(".")
            if scope in _SCOPES:
                return Ref(scope, name or None)
            if name:
                raise ReleaseError(f"rule '{self.text}': '{text}' — only production.<metric> or parent.<metric> "
                                   "may have a dot")
            if text in ("approvals", "evaluated_on"):
                raise ReleaseError(f"rule '{self.text}': '{text}' can only stand on the left of a rule")
            return Ref("self", text)
        raise self.fail("a number or a metric")

    def done(self) -> None:
        if self.peek() is not None:
            raise self.fail("the end of the rule")


def parse_rule(text: str) -> MetricRule | ApprovalsRule | DatasetRule:
    """Parse one rule; raises ReleaseError naming the rule and the problem."""
    if not isinstance(text, str) or not text.strip():
        raise ReleaseError("empty gate rule")
    words = _EVALUATED_WORDS.match(text)
    if words:
        return DatasetRule(words.group("q").strip("\"'"))
    p = _Parser(text)
    kind, first = p.take()
    if kind != "name" or "." in first:
        raise ReleaseError(f"rule '{text}': must start with a metric name, 'approvals' or 'evaluated_on'")
    kind, op = p.take()
    if kind != "op" or op not in COMPARATORS:
        raise ReleaseError(f"rule '{text}': expected one of {' '.join(COMPARATORS)} after '{first}'")
    if first == "evaluated_on":
        kind, value = p.take()
        if op != "==" or kind not in ("str", "name"):
            raise ReleaseError(f"rule '{text}': write evaluated_on == \"dataset-name\"")
        p.done()
        return DatasetRule(value.strip("\"'"))
    if first == "approvals":
        kind, value = p.take()
        if kind != "num":
            raise ReleaseError(f"rule '{text}': approvals compare with a number, e.g. approvals >= 2")
        p.done()
        return ApprovalsRule(op, float(value))
    expr = p.expr()
    p.done()
    return MetricRule(first, op, expr)
