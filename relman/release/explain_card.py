"""The model card's explainability section, from stored explain metrics and attributions only
(the card never computes an attribution)."""

from __future__ import annotations

from typing import Any

EXAMPLES_SHOWN = 3
_NAMES = ("explain_agreement_vs_parent", "explain_topk_overlap_vs_parent", "explain_prediction_agreement_vs_parent",
          "explain_comprehensiveness", "explain_sufficiency", "explain_randomisation_agreement")


def explainability_lines(catalog: Any, v: Any, metrics: list[dict[str, Any]]) -> list[str]:
    from relman.errors import RelmanError
    from relman.evaluate.explain import METHOD_TITLES
    from relman.evaluate.explain import artifact as art

    lines = ["## Explainability", ""]
    found = {m["name"]: m for m in metrics if m["suite"] == "explain" and m["name"] in _NAMES}
    rows = catalog.evaluation_artifacts(v.id, "attributions")
    if not found and not rows:
        return lines + [f"_Not explained yet: `relman evaluate {v.ref} --suite explain --dataset NAME`._", ""]
    any_m = next(iter(found.values()), None)
    method = (any_m["context"].get("method") if any_m else None) or (rows[-1]["method"] if rows else None)
    lines.append(f"Method: {METHOD_TITLES.get(method or '', method or 'unknown')}"
                 + (f", {any_m['context'].get('examples')} seeded examples" if any_m else "") + ".")
    rand = found.get("explain_randomisation_agreement")
    if rand:
        why = rand["context"].get("untrustworthy")
        if why:
            lines += ["", f"> **Warning — untrustworthy explanations:** {why}. The explain metrics of this run "
                          "do not pass gates.", ""]
        lines.append(f"Model-randomisation check (Adebayo et al., 2018): agreement with a re-initialised copy of "
                     f"{rand['context'].get('randomised')} {_fmt(rand)} (lower is better; threshold "
                     f"{rand['context'].get('threshold')}).")
    parent = found.get("explain_agreement_vs_parent")
    if parent:
        lines.append(f"Agreement with the parent {parent['context'].get('parent')}: Spearman rho of attributions "
                     f"({parent['context'].get('measure', 'magnitude-all')} measure) {_fmt(parent)}, top-5 overlap {_fmt(found.get('explain_topk_overlap_vs_parent'))}, "
                     f"same prediction on {_fmt(found.get('explain_prediction_agreement_vs_parent'))} of the examples.")
    if "explain_comprehensiveness" in found:
        lines.append(f"Faithfulness (AOPC): comprehensiveness {_fmt(found['explain_comprehensiveness'])} (higher is "
                     f"better), sufficiency {_fmt(found.get('explain_sufficiency'))} (lower is better).")
    lines.append("")
    if rows:
        try:
            doc = art.load(catalog, rows[-1])
        except RelmanError as e:
            return lines + [f"_Stored attributions unreadable: {e}_", ""]
        lines += [f"Example attributions ({doc['method']}, dataset {doc.get('dataset')}; strongest features, "
                  "signed score):", ""]
        lines += ["    " + art.render_text(e) for e in doc["examples"][:EXAMPLES_SHOWN]]
        lines.append("")
    return lines


def _fmt(m: dict[str, Any] | None) -> str:
    if not m or m.get("value") is None:
        return "n/a"
    ci = m["context"].get("ci95")
    return f"{m['value']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
