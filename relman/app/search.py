"""Searching versions: `tag:baseline recipe:int8 phase:candidate minilm accuracy>0.9`.

A query is words separated by spaces. `key:value` filters on a field (tag, recipe, phase,
model, format, task; case-insensitive, `*` as a wildcard); `name OP number` compares a
stored metric (OP one of < <= > >= = == !=; a version without that metric does not match);
any other word must appear in the version's text (ref, phase, format, task, recipe, tags).
All terms must hold. A metric no suite declares and no version stores (`acuracy>0.9`) is refused
with a suggestion ("did you mean accuracy?") rather than silently matching nothing. The query is parsed into plain data and compared in Python — nothing
is ever evaluated — so the CLI and the GUI's filter box share one meaning.
"""

from __future__ import annotations

import fnmatch
import operator
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Iterable, Mapping

from relman.errors import RelmanError

FIELDS = ("tag", "recipe", "phase", "model", "format", "task")
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
    "<": operator.lt, ">": operator.gt, "=": operator.eq,
}
# Each part of the number has one way to match (`\d+(?:\.\d*)?`, not `\d+\.?\d*`, whose two digit
# runs split a long number n ways and made a failing match quadratic: 20 000 digits took 15 s).
_METRIC_RE = re.compile(r"([A-Za-z_][\w.\-]*)\s*(<=|>=|==|!=|<|>|=)\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)")
MAX_QUERY_CHARS = 1000  # a query is typed; a longer one is a mistake (or an attack on the parser)
MAX_TERM_CHARS = 200


class SearchError(RelmanError):
    """A search query that cannot be parsed."""


@dataclass(frozen=True)
class MetricCondition:
    metric: str
    op: str
    value: float

    def holds(self, metrics: Mapping[str, float]) -> bool:
        v = metrics.get(self.metric)
        return v is not None and _OPS[self.op](float(v), self.value)

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"


@dataclass
class Query:
    fields: list[tuple[str, str]] = field(default_factory=list)
    metrics: list[MetricCondition] = field(default_factory=list)
    words: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.fields or self.metrics or self.words)


@dataclass
class SearchRow:
    """What a query looks at; built from a catalog version or a GUI row."""

    id: int
    model: str
    version: str
    phase: str
    format: str
    task: str
    recipe: str
    tags: list[str]
    metrics: Mapping[str, float]

    @property
    def text(self) -> str:
        return " ".join([f"{self.model}@{self.version}", self.phase, self.format, self.task, self.recipe,
                         *self.tags]).lower()


def parse_query(text: str | Iterable[str]) -> Query:
    """Parse a query; a malformed term raises `SearchError` with a one-line message. The query
    (at most MAX_QUERY_CHARS) and each term (at most MAX_TERM_CHARS) are bounded before any
    pattern looks at them."""
    length = len(text) if isinstance(text, str) else sum(len(t) + 1 for t in text or ())
    if length > MAX_QUERY_CHARS:
        raise SearchError(f"the query is {length:,} characters long; at most {MAX_QUERY_CHARS:,} are read")
    if isinstance(text, str):
        try:
            tokens = shlex.split(text)
        except ValueError as e:
            raise SearchError(f"cannot read the query ({e})") from None
    else:
        tokens = [t for part in text for t in part.split()] if text else []
    q = Query()
    for tok in tokens:
        if len(tok) > MAX_TERM_CHARS:
            raise SearchError(f"the term '{tok[:20]}…' is {len(tok):,} characters long; at most {MAX_TERM_CHARS} "
                              "are read")
        m = _METRIC_RE.fullmatch(tok)
        if m:
            q.metrics.append(MetricCondition(m.group(1), m.group(2), float(m.group(3))))
            continue
        if any(c in tok for c in "<>=!"):
            raise SearchError(f"'{tok}' is not a metric condition like accuracy>0.9 "
                              "(metric name, one of < <= > >= = != , then a number)")
        key, sep, value = tok.partition(":")
        if sep and key.lower() in FIELDS:
            if not value:
                raise SearchError(f"'{tok}' needs a value after ':' (e.g. {key}:something)")
            q.fields.append((key.lower(), value.lower()))
        elif sep and key and key.isalpha():
            raise SearchError(f"unknown search field '{key}:' (fields: {', '.join(FIELDS)})")
        else:
            q.words.append(tok.lower())
    return q


def _like(value: str, pattern: str) -> bool:
    value = (value or "").lower()
    return fnmatch.fnmatchcase(value, pattern) if any(c in pattern for c in "*?[") else value == pattern


def matches(q: Query, row: SearchRow) -> bool:
    for key, pattern in q.fields:
        if key == "tag":
            if not any(_like(t, pattern) for t in row.tags):
                return False
        elif not _like(str(getattr(row, key) or ""), pattern):
            return False
    if not all(c.holds(row.metrics) for c in q.metrics):
        return False
    text = row.text
    return all(w in text for w in q.words)


def recipe_name(recipe: Mapping[str, Any]) -> str:
    for key in ("name", "recipe", "kind"):
        value = recipe.get(key) if recipe else None
        if isinstance(value, str) and value:
            return value
    return ""


def catalog_rows(catalog: Any) -> list[SearchRow]:
    """Every live version as a SearchRow, in a few queries (newest value of each metric)."""
    from relman.app.tags import all_tags

    tags = all_tags(catalog)
    metrics: dict[int, dict[str, float]] = {}
    for vid, name, value in catalog.conn.execute(
            "SELECT version_id, name, value FROM metrics WHERE value IS NOT NULL ORDER BY id"):
        metrics.setdefault(vid, {})[name] = value
    return [SearchRow(id=v.id, model=v.model, version=v.version, phase=v.phase, format=v.format,
                      task=v.task or "", recipe=recipe_name(v.recipe), tags=tags.get(v.id, []),
                      metrics=metrics.get(v.id, {})) for v in catalog.versions()]


def check_metric_names(q: Query, stored: Collection[str]) -> None:
    """Raise SearchError for the first metric condition naming an unknown metric (one that no
    suite declares and none of `stored` — the metric names of the rows searched — is)."""
    from relman.release.metric_names import unknown_metric_message

    for c in q.metrics:
        message = unknown_metric_message(c.metric, stored)
        if message:
            raise SearchError(f"'{c}': {message}")


def search(catalog: Any, query: str | Iterable[str]) -> list[SearchRow]:
    q = parse_query(query)
    rows = catalog_rows(catalog)
    if q.metrics:
        check_metric_names(q, {name for r in rows for name in r.metrics})
    return [r for r in rows if matches(q, r)]
