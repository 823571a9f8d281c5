"""The versions filter box speaks the search language of `relman search` (no Qt here).

`tag:fast accuracy>0.9 minilm` filters exactly as the CLI does; while the text is not (yet)
a valid query — say `accuracy>` half typed — the box falls back to plain word matching and
reports why, instead of emptying the table. A metric nobody stores (`acuracy>0.9`) is such a
reason too ("unknown metric 'acuracy' (did you mean accuracy?)"), as in the CLI.
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Mapping

from relman.app.search import SearchError, SearchRow, check_metric_names, matches, parse_query


def as_search_row(v: Any) -> SearchRow:
    return SearchRow(id=v.id, model=v.model, version=v.version, phase=v.phase, format=v.format, task=v.task or "",
                     recipe=v.recipe_name, tags=list(getattr(v, "tags", [])), metrics=v.metrics)


def row_matcher(text: str, haystacks: Mapping[int, str],
                stored_metrics: Collection[str] = ()) -> tuple[Callable[[Any], bool], str]:
    """(predicate over VersionRow, error text or ''); `stored_metrics`: the metric names of the
    rows being filtered, which conditions may name besides those the suites declare."""
    words = text.lower().split()
    try:
        q = parse_query(text)
        check_metric_names(q, stored_metrics)
    except SearchError as e:
        return (lambda v: all(w in haystacks.get(v.id, "") for w in words)), str(e)
    if not (q.fields or q.metrics):  # plain words: the cheap haystack test
        return (lambda v: all(w in haystacks.get(v.id, "") for w in q.words)), ""
    return (lambda v: matches(q, as_search_row(v))), ""
