"""relman's INT8 against Optimum's ORTQuantizer default INT8 on the real all-MiniLM-L6-v2, side by
side in one run: same FP32 ONNX graph in, same inputs, same ONNX Runtime session settings and
threads, latency interleaved (rounds that alternate which model goes first), ratios with
bootstrap intervals over rounds.

Goal (issue 19): embedding cosine vs FP32 ≥ 0.995 on 256 sentences (mean-pooled, relman's
feature-extraction runner for every model), batch-1 and batch-32 latency ≤ 1.0× Optimum's,
size ≤ 1.05× Optimum's.

Optimum runs in its own interpreter, because optimum-onnx 0.1 needs transformers < 4.58 and
relman runs on transformers 5: a venv that sees the shared venv's packages (torch, onnxruntime)
through a .pth file but has its own transformers 4.57:

    python -m venv .bench-venv
    echo $PWD/.venv/lib/python3.11/site-packages > .bench-venv/lib/python3.11/site-packages/zz-shared.pth
    .bench-venv/bin/pip install 'torch==2.13.0' -r benchmarks/requirements-optimum.txt
    .venv/bin/pip install --no-deps -r benchmarks/requirements.txt
    .venv/bin/python benchmarks/bench_vs_optimum.py --optimum-python .bench-venv/bin/python [--readme]

Both quantisers start from the same FP32 ONNX export (relman's verified exporter), so the
comparison is of the quantisation, not of two exporters. Optimum's configuration is its
documented default for this CPU: `AutoQuantizationConfig.avx512_vnni(is_static=False,
per_channel=False)` (or `.avx2(...)` on a CPU without VNNI) — dynamic, per tensor, every
operator it quantises.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import bench_compress as base  # noqa: E402  (find_model, sentences, embeddings)

RELMAN_VARIANTS: list[tuple[str, dict]] = [  # optimize's INT8 plan, in its order
    ("relman per-channel dynamic", {"mode": "dynamic", "per_channel": True}),
    ("relman per-channel dynamic, smoothed",
     {"mode": "dynamic", "per_channel": True, "smooth": True, "dataset": "calibration"}),
    ("relman per-channel dynamic, smoothed, 1 most sensitive layer in float",
     {"mode": "dynamic", "per_channel": True, "smooth": True, "dataset": "calibration",
      "keep_sensitive": 1, "sensitivity": "outputs"}),
    ("relman per-channel dynamic, smoothed, ORT fusions",
     {"mode": "dynamic", "per_channel": True, "smooth": True, "dataset": "calibration", "fusion": True}),
    # not in optimize's INT8 plan: static activations skip the per-call range computation, the
    # question is what they cost in fidelity even after smoothing
    ("relman per-channel static (calibrated), smoothed",
     {"mode": "static", "per_channel": True, "smooth": True, "dataset": "calibration"}),
]

OPTIMUM_SCRIPT = r"""
import json, sys, time
from optimum.onnxruntime import ORTQuantizer
from optimum.onnxruntime.configuration import AutoQuantizationConfig
src, dest, vnni = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
q = ORTQuantizer.from_pretrained(src, file_name="model.onnx")
cfg = (AutoQuantizationConfig.avx512_vnni if vnni else AutoQuantizationConfig.avx2)(is_static=False, per_channel=False)
t0 = time.perf_counter()
q.quantize(save_dir=dest, quantization_config=cfg)
import optimum
print(json.dumps({"config": str(cfg), "seconds": time.perf_counter() - t0, "optimum": optimum.__version__ if hasattr(optimum, "__version__") else "?"}))
"""


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file() and p.suffix in (".onnx", ".data"))


def bootstrap_ratio(a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Median of paired per-round ratios a/b with a 95 % bootstrap interval."""
    r = a / b
    rng = np.random.default_rng(seed)
    meds = np.median(rng.choice(r, size=(n, len(r)), replace=True), axis=1)
    return float(np.median(r)), float(np.percentile(meds, 2.5)), float(np.percentile(meds, 97.5))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="all-MiniLM-L6-v2 Hugging Face folder (default: the installed package)")
    ap.add_argument("--optimum-python", default=str(HERE.parent / ".bench-venv" / "bin" / "python"),
                    help="interpreter that can import optimum.onnxruntime")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads for onnxruntime")
    ap.add_argument("--rounds", type=int, default=12, help="interleaved timing rounds")
    ap.add_argument("--calls", type=int, default=8, help="timed calls per model per round (batch 1; batch 32: /4)")
    ap.add_argument("--seq", type=int, default=128, help="sequence length for latency")
    ap.add_argument("--only", nargs="*", help="relman variants to run (substring match)")
    ap.add_argument("--readme", action="store_true", help="append the table to benchmarks/README.md")
    args = ap.parse_args()
    if not Path(args.optimum_python).exists():  # `make bench` runs every script: say what is missing, go on
        print(f"skipped: no Optimum interpreter at {args.optimum_python}; set up .bench-venv as this "
              "script's docstring says, or pass --optimum-python")
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    load_start = os.getloadavg()
    from relman.app.datasets import register_demo_text
    from relman.app.models import import_model
    from relman.catalog import open_catalog
    from relman.compress import job
    from relman.compress.export.onnx_export import copy_side_files
    from relman.compress.registry import all_recipes
    from relman.jobs.context import JobContext
    from relman.tasks import open_runner

    all_recipes()
    tmp = Path(tempfile.mkdtemp(prefix="relman-bench-optimum-"))
    try:
        cat = open_catalog(tmp / "catalog")
        parent = import_model(cat, base.find_model(args.model), "minilm", task="feature-extraction")
        register_demo_text(cat, "calibration", n=128, seed=1)

        def recipe(name: str, params: dict) -> tuple[object, float]:
            ctx = JobContext(cat)
            t0 = time.perf_counter()
            try:
                res = job.run({"recipe": name, "params": params, "parent_version_ids": [parent.id],
                               "evaluate": False}, ctx)
            finally:
                ctx.cleanup()
            return cat.get_version(res["version_id"]), time.perf_counter() - t0

        fp32, _ = recipe("onnx-export", {})
        fp32_dir = cat.materialize(fp32.id, tmp / "fp32")
        models: dict[str, dict] = {"FP32 ONNX (same export)": {"folder": fp32_dir, "took": 0.0, "meta": {}}}
        # Optimum, in its own interpreter, on the same FP32 graph
        vnni = "avx512_vnni" in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else False
        opt_dir = tmp / "optimum"
        t0 = time.perf_counter()
        proc = subprocess.run([args.optimum_python, "-c", OPTIMUM_SCRIPT, str(fp32_dir), str(opt_dir),
                               "1" if vnni else "0"], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": ""})
        if proc.returncode != 0:
            sys.exit(f"Optimum failed:\n{proc.stderr[-3000:]}")
        opt_info = json.loads(proc.stdout.strip().splitlines()[-1])
        produced = sorted(opt_dir.glob("*.onnx"))
        (opt_dir / produced[0].name).rename(opt_dir / "model.onnx") if produced[0].name != "model.onnx" else None
        copy_side_files(fp32_dir, opt_dir)
        label_opt = "Optimum ORTQuantizer default (dynamic, per tensor)"
        models[label_opt] = {"folder": opt_dir, "took": time.perf_counter() - t0, "meta": opt_info}
        print(f"optimum: {opt_info}", flush=True)
        for label, params in RELMAN_VARIANTS:
            if args.only and not any(o.lower() in label.lower() for o in args.only):
                continue
            try:
                v, took = recipe("ort-int8", params)
            except Exception as e:  # a failed variant is a row, not the end of the run
                print(f"{label}: FAILED {type(e).__name__}: {e}", flush=True)
                continue
            models[label] = {"folder": cat.materialize(v.id, tmp / f"v{v.id}"), "took": took,
                             "meta": {k: v.meta.get(k) for k in ("kept_float_nodes", "fusion", "preprocess")}}
            print(f"{label}: built in {took:.0f} s, {v.meta.get('fusion')}", flush=True)
        texts = base.sentences(256)
        runners = {k: open_runner(m["folder"], "onnx", "feature-extraction", "cpu", threads=args.threads)
                   for k, m in models.items()}
        ref = base.embeddings(runners["FP32 ONNX (same export)"], texts)
        for k, r in runners.items():
            emb = base.embeddings(r, texts)
            cos = np.sum(emb * ref, axis=1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(ref, axis=1))
            models[k].update(cos=float(cos.mean()), cos_min=float(cos.min()), size=folder_bytes(models[k]["folder"]))
        # latency: interleaved rounds, order rotated each round, same prepared inputs for all
        names = list(runners)
        prepared = {b: {k: runners[k].prepare_synthetic(b, args.seq, seed=1) for k in names} for b in (1, 32)}
        per_round = {b: {k: [] for k in names} for b in (1, 32)}
        for k in names:  # warm-up
            for b in (1, 32):
                runners[k].backend.run(prepared[b][k].native)
        for rnd in range(args.rounds):
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            for b in (1, 32):
                calls = args.calls if b == 1 else max(2, args.calls // 4)
                for k in order:
                    ts = []
                    for _ in range(calls):
                        t = time.perf_counter_ns()
                        runners[k].backend.run(prepared[b][k].native)
                        ts.append((time.perf_counter_ns() - t) / 1e6)
                    per_round[b][k].append(float(np.median(ts)))
            print(f"round {rnd + 1}/{args.rounds}", flush=True)
        opt_rounds = {b: np.asarray(per_round[b][label_opt]) for b in (1, 32)}
        load_end = os.getloadavg()
        table = ["| model | size MiB | size vs Optimum | cosine vs FP32 mean (min) | b1 ms (median of rounds) | "
                 "b1 vs Optimum [95 % CI] | b32 ms | b32 vs Optimum [95 % CI] | build s |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for k in names:
            m = models[k]
            cells = []
            for b in (1, 32):
                mine = np.asarray(per_round[b][k])
                med, lo, hi = bootstrap_ratio(mine, opt_rounds[b])
                cells += [f"{np.median(mine):.1f}", f"{med:.2f} [{lo:.2f}, {hi:.2f}]"]
            table.append(f"| {k} | {m['size'] / 2**20:.1f} | {m['size'] / models[label_opt]['size']:.3f} | "
                         f"{m['cos']:.4f} ({m['cos_min']:.4f}) | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} | "
                         f"{m['took']:.0f} |")
        import onnxruntime

        machine = (f"{platform.node() or 'machine'}: {os.cpu_count()} cores shared with other jobs, load average "
                   f"{load_start[0]:.1f} at start / {load_end[0]:.1f} at end, {args.threads} ORT threads, "
                   f"onnxruntime {onnxruntime.__version__}, {args.rounds} interleaved rounds × {args.calls} calls "
                   f"(b32: {max(2, args.calls // 4)}), seq {args.seq}; Optimum: {opt_info.get('config')}")
        detail = {k: models[k]["meta"] for k in names}
        print("\n" + "\n".join(table) + f"\n\n{machine}\n\n{json.dumps(detail, default=str)[:3000]}")
        if args.readme:
            with open(HERE / "README.md", "a", encoding="utf-8") as f:
                f.write(f"\n### relman INT8 vs Optimum — `bench_vs_optimum.py` ({time.strftime('%Y-%m-%d %H:%M')} UTC)"
                        f"\n\n{machine}\n\n" + "\n".join(table) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
