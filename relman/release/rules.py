"""The gate-rule language: tokens, syntax tree and parser (no evaluation, no `eval`).

A rule is one line (see `relman.release.gates` for what each form means):

    accuracy >= production.accuracy - 0.01
    latency_p95_ms <= 1.10 * production
    approvals >= 2
    evaluated on dataset sst2-dev
    accuracy_delta_vs_production.lower >= -0.01     a bound of the stored 95 % interval
    fidelity >= 0.99 when compressed                 only for the versions it applies to

It is its own module because two layers-mates need it: `relman.release.policy` parses every
rule when a policy is set (a typo is caught then, not at promotion) and `relman.release.gates`
parses them again to evaluate them. Both import it; neither imports the other for it.
A malformed rule raises `RuleSyntaxError` with the 1-based column where parsing stopped, so
editors (the GUI's policy editor) can point at it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from relman.errors import ReleaseError

COMPARATORS = ("<=", ">=", "==", "!=", "<", ">")
_TOKEN = re.compile(r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|(?P<op><=|>=|==|!=|<|>|[-+*/()])"
                    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)|(?P<str>\"[^\"]*\"|'[^']*'))")
_EVALUATED_WORDS = re.compile(r"^\s*evaluated\s+on\s+(?:dataset\s+)?(?P<q>\"[^\"]*\"|'[^']*'|\S+)\s*$")
_SCOPES = ("production", "parent")
MAX_NESTING = 32  # parentheses / unary minus: deeper rules are refused, never a RecursionError
MAX_RULE_CHARS = 2000
BOUNDS = ("lower", "upper")
CONDITIONS = ("compressed", "has_parent", "has_production", "classifier", "causal_lm", "embedder")
class RuleSyntaxError(ReleaseError):
    """A malformed rule; `column` (1-based) is where the parser gave up, for editors."""

    def __init__(self, message: str, column: int | None = None) -> None:
        super().__init__(message)
        self.column = column


# -- abstract syntax ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Num:
    value: float


@dataclass(frozen=True)
class Ref:
    scope: str  # "self" | "production" | "parent"
    name: str | None  # None: the rule's own metric
    bound: str | None = None  # "lower" | "upper": that end of the stored 95 % interval


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
    bound: str | None = None
    when: tuple[tuple[bool, str], ...] = ()  # (negated, condition) pairs, all must hold


@dataclass(frozen=True)
class ApprovalsRule:
    op: str
    count: float


@dataclass(frozen=True)
class DatasetRule:
    dataset: str


def _tokens(text: str, positions: list[int] | None = None) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            at = pos + (len(text[pos:]) - len(text[pos:].lstrip()))
            raise RuleSyntaxError(f"rule '{text}': unexpected text at '{text[pos:].strip()}' (column {at + 1})",
                                  at + 1)
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        if positions is not None:
            positions.append(m.start(kind))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos: list[int] = []
        self.toks = _tokens(text, self.pos)
        self.i = 0
        self.depth = 0

    def column(self) -> int:
        return (self.pos[self.i] if self.i < len(self.pos) else len(self.text.rstrip())) + 1

    def error(self, message: str) -> RuleSyntaxError:
        col = self.column()
        return RuleSyntaxError(f"rule '{self.text}': {message} (column {col})", col)

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise self.error("incomplete (expected more after the end)")
        self.i += 1
        return tok

    def fail(self, what: str) -> ReleaseError:
        tok = self.peek()
        at = tok[1] if tok else "the end"
        return self.error(f"expected {what} at '{at}'")

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
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise ReleaseError(f"rule '{self.text[:60]}…': nested more than {MAX_NESTING} deep")
            node = Neg(self.factor())
            self.depth -= 1
            return node
        if kind == "op" and text == "(":
            self.take()
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise ReleaseError(f"rule '{self.text[:60]}…': parentheses nested more than {MAX_NESTING} deep")
            node = self.expr()
            self.depth -= 1
            if self.peek() != ("op", ")"):
                raise self.fail("')'")
            self.take()
            return node
        if kind == "name" and text == "when":
            raise self.fail("a number or a metric")
        if kind == "name":
            scope, _, name = text.partition(".")
            if scope in _SCOPES:
                self.take()
                return Ref(scope, name or None)
            if name and name not in BOUNDS:
                raise self.error(f"'{text}' — only production.<metric>, parent.<metric>, <metric>.lower or "
                                 "<metric>.upper may have a dot")
            if scope in ("approvals", "evaluated_on"):
                raise self.error(f"'{text}' can only stand on the left of a rule")
            self.take()
            return Ref("self", scope, name or None)
        raise self.fail("a number or a metric")

    def conditions(self) -> tuple[tuple[bool, str], ...]:
        """`when COND [and COND ...]`, each COND optionally preceded by `not`."""
        out: list[tuple[bool, str]] = []
        while True:
            negated = False
            if self.peek() == ("name", "not"):
                self.take()
                negated = True
            tok = self.peek()
            if tok is None or tok[0] != "name" or tok[1] not in CONDITIONS:
                raise self.fail(f"a condition ({', '.join(CONDITIONS)})")
            self.take()
            out.append((negated, tok[1]))
            if self.peek() != ("name", "and"):
                return tuple(out)
            self.take()

    def done(self) -> None:
        if self.peek() is not None:
            raise self.fail("the end of the rule")


def _check_visible(text: str) -> None:
    """Refuse characters a reader of the policy cannot see: control and format characters
    (zero-width spaces, bidi overrides), line and paragraph separators, and spaces other than
    the plain space and tab. `evaluated on "dev\u200b"` would otherwise name a dataset that
    looks like `dev` and is not."""
    import unicodedata

    from relman.names import _describe

    for i, ch in enumerate(text):
        cat = unicodedata.category(ch)
        if ch not in " \t" and (cat[0] in "CZ"):
            raise RuleSyntaxError(f"gate rule contains {_describe(ch)} at column {i + 1}, which is not allowed "
                                  "(only visible characters, spaces and tabs)", i + 1)


def parse_rule(text: str) -> MetricRule | ApprovalsRule | DatasetRule:
    """Parse one rule; raises RuleSyntaxError (a ReleaseError) naming the rule, the problem and
    its column."""
    if not isinstance(text, str) or not text.strip():
        raise RuleSyntaxError("empty gate rule", 1)
    if len(text) > MAX_RULE_CHARS:
        raise RuleSyntaxError(f"gate rule '{text[:40]}…' is longer than {MAX_RULE_CHARS} characters", 1)
    _check_visible(text)
    words = _EVALUATED_WORDS.match(text)
    if words:
        return DatasetRule(words.group("q").strip("\"'"))
    p = _Parser(text)
    kind, first = p.take()
    scope, _, bound = first.partition(".")
    if kind != "name" or scope in _SCOPES or (bound and bound not in BOUNDS):
        p.i -= 1
        raise p.error("must start with a metric name (or <metric>.lower / .upper), 'approvals' or "
                      "'evaluated_on'")
    kind, op = p.take()
    if kind != "op" or op not in COMPARATORS:
        p.i -= 1
        raise p.error(f"expected one of {' '.join(COMPARATORS)} after '{first}'")
    if first == "evaluated_on":
        kind, value = p.take()
        if op != "==" or kind not in ("str", "name"):
            raise p.error("write evaluated_on == \"dataset-name\"")
        p.done()
        return DatasetRule(value.strip("\"'"))
    if first == "approvals":
        kind, value = p.take()
        if kind != "num":
            p.i -= 1
            raise p.error("approvals compare with a number, e.g. approvals >= 2")
        p.done()
        return ApprovalsRule(op, float(value))
    expr = p.expr()
    when: tuple[tuple[bool, str], ...] = ()
    if p.peek() == ("name", "when"):
        p.take()
        when = p.conditions()
    p.done()
    return MetricRule(scope, op, expr, bound or None, when)
