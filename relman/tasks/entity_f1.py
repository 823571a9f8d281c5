"""Entity-level precision / recall / F1 over BIO (IOB2) tag sequences, as seqeval computes them.

Named-entity quality is scored on whole entities, not tokens: a predicted entity counts only
when its type, first and last token all match a gold entity. Entities are read from the tags
the way conlleval and seqeval's default mode read them, so the figures are comparable with
published ones:

- `B-X` starts an entity of type X; `I-X` continues one of type X;
- an `I-X` that follows `O`, the end of the sentence or an entity of another type starts a
  new entity (lenient: a model that never emits `B-` is not scored zero);
- an entity ends before `O`, before any `B-`, before an `I-` of another type, at the end.

Micro averages over all entities give `entity_precision`, `entity_recall`, `entity_f1`; the
same per entity type give `precision/X`, `recall/X`, `f1/X` and `support/X` (gold entities).
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

Entity = tuple[str, int, int]  # (type, first token, last token), inclusive


def entities(tags: Sequence[str]) -> list[Entity]:
    """The entities of one sentence's tags (see the module docstring for the rules)."""
    out: list[Entity] = []
    start, kind = -1, ""
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, t = tag.partition("-")
        ends = start >= 0 and (prefix in ("O", "B") or (prefix == "I" and t != kind))
        if ends:
            out.append((kind, start, i - 1))
            start, kind = -1, ""
        if prefix == "B" or (prefix == "I" and start < 0):
            start, kind = i, t
    return out


def _prf(tp: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def entity_scores(gold: Iterable[Sequence[str]], predicted: Iterable[Sequence[str]]) -> dict[str, float]:
    """Micro entity precision/recall/F1 and per-type figures over sentences of tag names
    (gold and predicted sentences pair up and must be equally long)."""
    tp: Counter[str] = Counter()
    n_pred: Counter[str] = Counter()
    n_gold: Counter[str] = Counter()
    for i, (g, p) in enumerate(zip(gold, predicted, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted")
        ge, pe = set(entities(g)), set(entities(p))
        for kind, _, _ in ge:
            n_gold[kind] += 1
        for kind, _, _ in pe:
            n_pred[kind] += 1
        for kind, _, _ in ge & pe:
            tp[kind] += 1
    precision, recall, f1 = _prf(sum(tp.values()), sum(n_pred.values()), sum(n_gold.values()))
    out = {"entity_precision": precision, "entity_recall": recall, "entity_f1": f1,
           "entities": float(sum(n_gold.values()))}
    for kind in sorted(set(n_gold) | set(n_pred)):
        p, r, f = _prf(tp[kind], n_pred[kind], n_gold[kind])
        out.update({f"precision/{kind}": p, f"recall/{kind}": r, f"f1/{kind}": f,
                    f"support/{kind}": float(n_gold[kind])})
    return out
