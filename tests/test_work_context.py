"""The work context is small, and the catalog an explicit, declared need (relman.context).

A work function typed `ctx: WorkContext` gets progress, cancellation, device, work folder, a
registered dataset and a log — nothing else; one that reads or writes the catalog declares it by typing
`ctx: CatalogWork`. mypy checks that only for the modules on its ratchet, so this test reads
every module of relman: in a function whose parameter is annotated `WorkContext`, each
attribute used of that parameter must be a member of the protocol. A planted function that
reaches for `ctx.catalog` shows the check can fail."""

from __future__ import annotations

import ast
from pathlib import Path

from relman.context import CatalogWork, WorkContext

RELMAN = Path(__file__).resolve().parent.parent / "relman"


def _members(protocol: type) -> set[str]:
    names: set[str] = set()
    for klass in protocol.__mro__:
        if klass is object or klass.__name__ in ("Protocol", "Generic"):
            continue
        names |= {n for n in vars(klass) if not n.startswith("_")}
        names |= set(getattr(klass, "__annotations__", {}))
    return names


def _annotation_name(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.strip().rpartition(".")[2]
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def overreach(source: str, protocol: str = "WorkContext") -> list[str]:
    """`name.attr` uses, in functions with a parameter `name: <protocol>`, of attributes the
    protocol does not have ("function: attr", line order)."""
    allowed = _members(WorkContext)
    found: list[str] = []
    for fn in ast.walk(ast.parse(source)):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        args = fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs
        typed = {a.arg for a in args if _annotation_name(a.annotation) == protocol}
        for node in ast.walk(fn):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in typed \
                    and node.attr not in allowed:
                found.append(f"{fn.name}: {node.value.id}.{node.attr} (line {node.lineno})")
    return found


def test_the_work_context_is_small_and_the_catalog_protocol_extends_it():
    small = _members(WorkContext)
    assert small == {"device", "workdir", "cancelled", "check_cancelled", "progress", "point", "log", "log_json",
                     "dataset"}
    assert small < _members(CatalogWork)
    assert {"catalog", "job_id", "actor", "owner", "committed_result", "queue_job"} <= _members(CatalogWork) - small


def test_the_check_finds_a_planted_reach_for_the_catalog():
    planted = ("def run(params, ctx: 'WorkContext'):\n"
               "    ctx.progress(0.5)\n"
               "    return ctx.catalog.versions()\n")
    assert overreach(planted) == ["run: ctx.catalog (line 3)"]
    assert overreach(planted.replace("'WorkContext'", "'CatalogWork'")) == []


def test_no_work_function_typed_against_work_context_reaches_for_more():
    bad = {}
    for path in sorted(RELMAN.rglob("*.py")):
        found = overreach(path.read_text(encoding="utf-8"))
        if found:
            bad[str(path.relative_to(RELMAN.parent))] = found
    assert bad == {}, "type these `ctx: CatalogWork` (they use the catalog) or drop the use:\n" + "\n".join(
        f"{p}: {f}" for p, fs in bad.items() for f in fs)
