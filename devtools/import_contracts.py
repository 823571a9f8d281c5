"""An import-linter contract type for start-up cost: `import_time_forbidden`.

import-linter's own `forbidden` contract follows every import grimp finds, including the ones
inside function bodies. relman imports its heavy libraries (torch, transformers, onnxruntime,
onnx) exactly there, on purpose: the CLI and the GUI start without them, and a worker loads them
when a job needs them. What must never happen is that *importing* a start-up module runs an
import of a heavy library. This contract checks exactly that:

- an edge counts only if its `import` statement runs when the importing module is imported:
  at module level or in a class body, also inside `try` / `if` at module level, but not inside
  a function (or lambda) and not under `if TYPE_CHECKING:`;
- importing `a.b.c` also runs `a/__init__` and `a/b/__init__`, so those edges are added;
- from every source module (packages include their submodules) the contract follows these
  edges transitively and reports each chain that reaches a forbidden module.

Options: `source_modules` (module names, packages include their descendants) and
`forbidden_modules` (top-level names of external packages, or internal modules).
"""

from __future__ import annotations

import ast
import importlib.util
from collections import deque
from functools import lru_cache
from pathlib import Path

from grimp import ImportGraph
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


def _runs_at_import(tree: ast.Module) -> set[int]:
    """Line numbers of the import statements that run when the module is imported."""
    lines: set[int] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                lines.add(node.lineno)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue  # runs when called, not when imported
            elif isinstance(node, ast.If) and _is_type_checking(node.test):
                visit(node.orelse)
            elif isinstance(node, ast.ClassDef):
                visit(node.body)
            else:
                for name in ("body", "orelse", "finalbody", "handlers", "cases"):
                    children = getattr(node, name, None) or []
                    for child in children:
                        if isinstance(child, (ast.ExceptHandler, ast.match_case)):
                            visit(child.body)
                    visit([c for c in children if isinstance(c, ast.stmt)])

    visit(tree.body)
    return lines


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


@lru_cache(maxsize=None)
def _package_dir(root: str) -> Path | None:
    spec = importlib.util.find_spec(root)  # a top-level name: found without being imported
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _source_file(module: str) -> Path | None:
    root, *rest = module.split(".")
    base = _package_dir(root)
    if base is None:
        return None
    path = base.joinpath(*rest)
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


class ImportTimeForbiddenContract(Contract):
    type_name = "import_time_forbidden"

    source_modules = fields.ListField(subfield=fields.StringField())
    forbidden_modules = fields.ListField(subfield=fields.StringField())
    broken_contract_guidance = fields.TextField(required=False)

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        edges = self._import_time_edges(graph)
        sources = sorted(m for m in graph.modules if any(_in(m, s) for s in self.source_modules))  # type: ignore[attr-defined]
        forbidden = list(self.forbidden_modules)  # type: ignore[attr-defined]
        chains: list[list[tuple[str, str, int | None]]] = []
        reported: set[tuple[str, str]] = set()
        for source in sources:
            for chain in self._chains_from(source, edges, forbidden):
                key = (chain[0][0], chain[-1][1])
                if key not in reported:
                    reported.add(key)
                    chains.append(chain)
        return ContractCheck(kept=not chains, metadata={"chains": chains})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for chain in check.metadata["chains"]:
            output.print_error(f"importing {chain[0][0]} imports {chain[-1][1]}:")
            output.new_line()
            for importer, imported, line in chain:
                where = f"l.{line}" if line else "package __init__"
                output.print_error(f"-   {importer} -> {imported} ({where})", bold=False)
            output.new_line()
        guidance = self.broken_contract_guidance  # type: ignore[attr-defined]
        if guidance:
            output.print(guidance)

    # -- helpers ----------------------------------------------------------------------------
    def _import_time_edges(self, graph: ImportGraph) -> dict[str, list[tuple[str, int | None]]]:
        edges: dict[str, list[tuple[str, int | None]]] = {}
        for module in sorted(graph.modules):
            path = _source_file(module)
            if path is None:
                continue  # an external package (a leaf here)
            at_import = _runs_at_import(ast.parse(path.read_text(encoding="utf-8"), str(path)))
            out: list[tuple[str, int | None]] = []
            parts = module.split(".")
            for i in range(1, len(parts)):  # the packages above it run first
                out.append((".".join(parts[:i]), None))
            for imported in graph.find_modules_directly_imported_by(module):
                for detail in graph.get_import_details(importer=module, imported=imported):
                    if detail["line_number"] in at_import:
                        out.append((imported, detail["line_number"]))
                        break
            edges[module] = out
        return edges

    @staticmethod
    def _chains_from(source: str, edges: dict[str, list[tuple[str, int | None]]],
                     forbidden: list[str]) -> list[list[tuple[str, str, int | None]]]:
        """Shortest import-time chain from `source` to each forbidden module it reaches."""
        came_from: dict[str, tuple[str, int | None]] = {}
        seen = {source}
        todo = deque([source])
        hits: list[str] = []
        while todo:
            module = todo.popleft()
            for imported, line in edges.get(module, []):
                if imported in seen:
                    continue
                seen.add(imported)
                came_from[imported] = (module, line)
                if any(_in(imported, f) for f in forbidden):
                    hits.append(imported)
                else:
                    todo.append(imported)
        chains = []
        for hit in hits:
            chain = []
            node = hit
            while node != source:
                parent, line = came_from[node]
                chain.append((parent, node, line))
                node = parent
            chains.append(list(reversed(chain)))
        return chains
