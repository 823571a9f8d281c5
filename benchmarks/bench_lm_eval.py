"""relman's `mc` suite vs lm-evaluation-harness on the same model and the same items.

Both read the very same lm-eval task YAML files (local JSON data): the 24 planted colour facts
(tests/data/lm_eval/colours.yaml) and 60 "next word of a training docstring" items written here
(docstrings.yaml). relman scores them with its `mc` suite (a real catalog, the evaluate job's
body in this process); lm-eval (`lm_eval` on PyPI, installed into a separate venv — never a
dependency of relman) runs its HF backend on the trained LM's folder in a subprocess with
HF_DATASETS_OFFLINE / HF_HUB_OFFLINE set. Goal: acc and acc_norm within 0.5 points.

Setup (once):
    python -m venv /tmp/lmeval-venv
    /tmp/lmeval-venv/bin/pip install torch==2.13.0     # first, so pip never picks another torch
    /tmp/lmeval-venv/bin/pip install lm_eval transformers==<relman's>
Run: .venv/bin/python benchmarks/bench_lm_eval.py [--lm-eval-python /tmp/lmeval-venv/bin/python]
Prints one table (and --json FILE writes the figures); nothing is stored outside a temp folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DOCS_YAML = """task: relman_docstrings
dataset_path: json
dataset_kwargs:
  data_files:
    test: docstrings.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "{{context}}"
doc_to_choice: "{{choices}}"
doc_to_target: label
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def write_tasks(folder: Path) -> dict[str, Path]:
    from relman.modelio import trained_lm as tlm

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "tests/data/lm_eval/colours.yaml", folder / "colours.yaml")
    shutil.copy(REPO / "tests/data/lm_eval/colours.jsonl", folder / "colours.jsonl")
    docs = [d for d in tlm.training_documents() if len(d.split()) >= 40 and "Q: " not in d and d.isascii()]
    picked = random.Random(3).sample(docs, 60)
    cut = [(" ".join(w[:10]), w[10]) for w in (d.split() for d in picked)]
    rng = random.Random(1)
    rows = []
    for i, (ctx, cont) in enumerate(cut):
        others = rng.sample([c for j, (_, c) in enumerate(cut) if j != i], 3)
        gold = rng.randrange(4)
        rows.append({"context": ctx, "choices": others[:gold] + [cont] + others[gold:], "label": gold})
    (folder / "docstrings.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "docstrings.yaml").write_text(DOCS_YAML)
    return {"planted_colours": folder / "colours.yaml", "relman_docstrings": folder / "docstrings.yaml"}


def relman_scores(model: Path, tasks: dict[str, Path], root: Path) -> dict[str, dict[str, float]]:
    from relman.app.datasets import register_dataset
    from relman.app.models import import_model
    from relman.catalog import open_catalog
    from relman.evaluate.job import run
    from relman.jobs.context import JobContext

    cat = open_catalog(root / "catalog")
    v = import_model(cat, model, "lm")
    out = {}
    for task, yaml in tasks.items():
        register_dataset(cat, yaml, task.replace("_", "-"))
        ctx = JobContext(cat, device="cpu")
        t0 = time.perf_counter()
        try:
            run({"version_id": v.id, "suites": ["mc"], "dataset": task.replace("_", "-"), "threads": 1}, ctx)
        finally:
            ctx.cleanup()
        m = {r["name"]: r["value"] for r in cat.metrics(v.id)}
        out[task] = {"acc": m["mc_acc"], "acc_norm": m["mc_acc_norm"], "n": m["mc_items"],
                     "seconds": time.perf_counter() - t0}
    return out


def lm_eval_scores(python: str, model: Path, tasks: dict[str, Path], out_dir: Path) -> dict[str, dict[str, float]]:
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_DATASETS_CACHE=str(out_dir / "hf-datasets"), OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    t0 = time.perf_counter()
    cmd = [python, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={model},dtype=float32",
           "--tasks", ",".join(tasks), "--include_path", str(next(iter(tasks.values())).parent), "--device", "cpu",
           "--batch_size", "8", "--output_path", str(out_dir / "lm-eval-out")]
    # lm-eval (HF datasets) resolves relative data_files against the working directory; relman
    # against the YAML's folder: run it from there so both read the same files
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, cwd=next(iter(tasks.values())).parent)
    if r.returncode != 0:
        raise SystemExit(f"lm-eval failed ({r.returncode}):\n{r.stderr[-3000:]}")
    seconds = time.perf_counter() - t0
    found = sorted((out_dir / "lm-eval-out").rglob("results_*.json"))
    results = json.loads(found[-1].read_text())["results"]
    return {t: {"acc": results[t]["acc,none"], "acc_norm": results[t]["acc_norm,none"], "seconds": seconds}
            for t in tasks}


def lm_eval_version(python: str) -> str:
    r = subprocess.run([python, "-c", "import importlib.metadata as m; print(m.version('lm_eval'))"],
                       capture_output=True, text=True, check=False)
    return r.stdout.strip() or "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lm-eval-python", default="/tmp/lmeval-venv/bin/python")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not Path(args.lm_eval_python).exists():
        raise SystemExit(f"{args.lm_eval_python} not found: install lm_eval into a separate venv (see the docstring)")
    from relman.modelio.trained_lm import trained_lm

    model = trained_lm()
    with tempfile.TemporaryDirectory(prefix="bench-lm-eval-") as tmp:
        root = Path(tmp)
        tasks = write_tasks(root / "tasks")
        ours = relman_scores(model, tasks, root)
        theirs = lm_eval_scores(args.lm_eval_python, model, tasks, root)
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    figures = {"machine": f"{platform.node()} {os.cpu_count()} cores, load {load:.1f}", "python": platform.python_version(),
               "lm_eval": lm_eval_version(args.lm_eval_python), "tasks": {}}
    print(f"{'task':<20} {'n':>3} {'relman acc':>10} {'lm-eval acc':>11} {'Δ pts':>6} "
          f"{'relman norm':>11} {'lm-eval norm':>12} {'Δ pts':>6}")
    for t in tasks:
        a, b = ours[t], theirs[t]
        d_acc, d_norm = 100 * (a["acc"] - b["acc"]), 100 * (a["acc_norm"] - b["acc_norm"])
        figures["tasks"][t] = {"relman": a, "lm_eval": b, "delta_acc_points": d_acc, "delta_acc_norm_points": d_norm}
        print(f"{t:<20} {int(a['n']):>3} {a['acc']:>10.4f} {b['acc']:>11.4f} {d_acc:>6.2f} "
              f"{a['acc_norm']:>11.4f} {b['acc_norm']:>12.4f} {d_norm:>6.2f}")
    print(figures["machine"], "lm_eval", figures["lm_eval"])
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
