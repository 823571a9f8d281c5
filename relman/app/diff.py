"""Compare two versions' weights and architecture (`relman diff A B`, the Diff view).

`diff_versions` lays both versions out (hard links, as the suites do) and compares them
tensor by tensor (relman.modelio.weight_diff). The CLI calls it in its own process; the GUI
queues it as a job (`queue_diff`, kind "diff_versions") because it reads every weight file, and
shows the job's result. Nothing is stored besides the job row: a diff is a look, not evidence.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from relman.catalog import Catalog


def diff_versions(catalog: "Catalog", ref_a: str | int, ref_b: str | int, *, workdir: Path | None = None,
                  on_tensor: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """{"a", "b", "formats", "summary", "tensors" (most different first), "config"}."""
    from relman.modelio.loading import materialize_version
    from relman.modelio.weight_diff import diff_folders

    a, b = _version(catalog, ref_a), _version(catalog, ref_b)
    with tempfile.TemporaryDirectory(prefix="relman-diff-", dir=workdir) as tmp:
        fa = materialize_version(catalog, a.id, Path(tmp))
        fb = materialize_version(catalog, b.id, Path(tmp))
        result = diff_folders(fa, a.format, fb, b.format, on_tensor=on_tensor).as_dict()
    return {"a": a.ref, "b": b.ref, "a_id": a.id, "b_id": b.id, **result}


def _version(catalog: "Catalog", ref: str | int) -> Any:
    return catalog.get_version(ref) if isinstance(ref, int) else catalog.resolve(ref)


def queue_diff(catalog: "Catalog", ref_a: str | int, ref_b: str | int, *, actor: str | None = None) -> int:
    """Check both refs, then queue one "diff_versions" job; returns its id."""
    from relman.jobs.queue import enqueue

    a, b = _version(catalog, ref_a), _version(catalog, ref_b)
    return enqueue(catalog, "diff_versions", {"a": a.id, "b": b.id}, device="cpu", actor=actor)


def diff_job(params: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Kind "diff_versions": {"a": version id, "b": version id} -> diff_versions' result."""
    def step(done: int, total: int) -> None:
        ctx.progress(done / max(total, 1), f"{done}/{total} tensors")

    return diff_versions(ctx.catalog, int(params["a"]), int(params["b"]), workdir=Path(ctx.workdir), on_tensor=step)


def result_of(catalog: "Catalog", job_id: int) -> dict[str, Any] | None:
    row = catalog.conn.execute("SELECT result FROM jobs WHERE id = ?", [job_id]).fetchone()
    if row is None or not row[0]:
        return None
    return json.loads(row[0]) if isinstance(row[0], str) else row[0]


def render(result: dict[str, Any], top: int | None = 20) -> str:
    """The CLI's text: a summary line, the architecture changes, then the most changed tensors."""
    from relman.names import terminal_safe

    s = result["summary"]
    lines = [f"{result['a']} ({result['formats'][0]}) -> {result['b']} ({result['formats'][1]}): "
             f"{s['changed']} tensors changed, {s['unchanged']} unchanged, {s['reshaped']} reshaped, "
             f"{s['retyped']} retyped, {s['only_a']} only in {result['a']}, {s['only_b']} only in {result['b']}; "
             f"{s['config_changes']} config changes"]
    for c in result["config"]:
        lines.append(f"  config {terminal_safe(c['key'])}: {json.dumps(c['a'])} -> {json.dumps(c['b'])}")
    shown = [t for t in result["tensors"] if t["status"] != "unchanged"]
    for t in shown[:top] if top else shown:
        if t["status"] in ("reshaped", "only_a", "only_b"):
            detail = f"shape {t['shape_a']} -> {t['shape_b']}"
        else:
            detail = (f"rel. change {t['relative_norm']:.4g}, cosine {t['cosine']:.4f}, "
                      f"zeros {t['sparsity_a']:.1%} -> {t['sparsity_b']:.1%}")
            if t["status"] == "retyped":
                detail = f"dtype {t['dtype_a']} -> {t['dtype_b']}, " + detail
        n = 1
        for d in (t["shape_b"] or t["shape_a"] or []):
            n *= int(d)
        lines.append(f"  {t['status']:9} {terminal_safe(t['name'])} ({n:,} values): {detail}")
    if top and len(shown) > top:
        lines.append(f"  ... {len(shown) - top} more (--top 0 for all)")
    return "\n".join(lines)
