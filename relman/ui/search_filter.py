"""The versions filter box speaks the search language of `relman search` (no Qt here).

`tag:fast accuracy>0.9 minilm` filters exactly as the CLI does; while the text is not (yet)
a valid query — say `accuracy>` half typed — the box falls back to plain word matching and
reports why, instead of emptying the table.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from relman.app.search import SearchError, SearchRow, matches, parse_query


def as_search_row(v: Any) -> SearchRow:
    return SearchRow(id=v.id, model=v.model, version=v.version, phase=v.phase, format=v.format, task=v.task or "",
                     recipe=v.recipe_name, tags=list(getattr(v, "tags", [])), metrics=v.metrics)


def row_matcher(text: str, haystacks: Mapping[int, str]) -> tuple[Callable[[Any], bool], str]:
    """(predicate over VersionRow, error text or '')."""
    words = text.lower().split()
    try:
        q = parse_query(text)
    except SearchError as e:
        return (lambda v: all(w in haystacks.get(v.id, "") for w in words)), str(e)
    if not (q.fields or q.metrics):  # plain words: the cheap haystack test
        return (lambda v: all(w in haystacks.get(v.id, "") for w in q.words)), ""
    return (lambda v: matches(q, as_search_row(v))), ""
