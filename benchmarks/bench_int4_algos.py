"""INT4 algorithms on the small trained LM: perplexity increase vs FP32, size, time and peak RSS.

Each row is one `relman compress <lm> int4-weight-only -p ...` (the CLI a user runs; its own
process tree, peak RSS from wait4's rusage, as in bench_half_billion.py), then `relman evaluate
-s quality` on held-out text (tkinter's docstrings, never trained on, `heldout_documents()`).
Beside relman's algorithms: ONNX Runtime GenAI's builder run alone (`-p int4`, with
`algo_config=default` and `algo_config=k_quant`), its output imported as an ONNX version and
scored on the same text. gptq and int8_sensitive calibrate on 64 training documents.

    .venv/bin/python benchmarks/bench_int4_algos.py [--workdir DIR] [--readme] [--planted]

`--planted` runs the same rows on the test's planted-outlier twin (tests/test_int4_lm.py), where
the algorithms differ; on the real model they barely do.
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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))

from bench_half_billion import refs, run_step  # noqa: E402  (after the path set-up)

VARIANTS = [  # label, recipe parameters (relman's exporter: the ONNX graph relman writes)
    ("rtn (block 32, symmetric)", ["algo=rtn"]),
    ("rtn asymmetric", ["algo=rtn", "symmetric=false"]),
    ("rtn block 128", ["algo=rtn", "block_size=128"]),
    ("k_quant", ["algo=k_quant"]),
    ("hqq", ["algo=hqq"]),
    ("gptq (64 calibration docs)", ["algo=gptq", "dataset=calib"]),
    ("rtn + lm_head int8", ["algo=rtn", "int8_layers=lm_head"]),
    ("k_quant + 4 most sensitive int8", ["algo=k_quant", "int8_sensitive=4", "dataset=calib"]),
]


def _jsonl(path: Path, docs: list[str], n: int) -> Path:
    path.write_text("\n".join(json.dumps({"text": d[:600]}) for d in docs[:n] if d.strip()) + "\n", encoding="utf-8")
    return path


def _figures(rel: list[str], ref: str, env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run(rel + ["show", ref, "--json"], env=env, capture_output=True, text=True).stdout
    try:
        metrics = json.loads(out).get("metrics") or []
    except ValueError:
        return {}
    return {m["name"]: m["value"] for m in metrics if isinstance(m.get("value"), (int, float))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir")
    ap.add_argument("--readme", action="store_true", help="append the table to benchmarks/README.md")
    ap.add_argument("--planted", action="store_true", help="the planted-outlier twin instead of the trained LM")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    keep = bool(args.workdir)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="relman-bench-int4-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
    py = sys.executable
    cat = work / "catalog"
    rel = [py, "-m", "relman", "--catalog", str(cat)]
    log = work / "steps.log"
    load_start = os.getloadavg()
    try:
        from relman.modelio.trained_lm import (
            heldout_documents,
            trained_lm,
            training_documents,
        )

        model = Path(trained_lm())
        if args.planted:
            from test_int4_lm import plant_outliers

            model = plant_outliers(model, work / "planted")
        weights = sum(p.stat().st_size for p in model.glob("*.safetensors"))
        subprocess.run(rel + ["import", str(model), "-m", "lm", "--task", "causal-lm"], env=env, check=True,
                       capture_output=True)
        for name, docs, n in (("heldout", heldout_documents(), 40), ("calib", training_documents()[::97], 64)):
            subprocess.run(rel + ["dataset", "add", str(_jsonl(work / f"{name}.jsonl", docs, n)), "--name", name,
                                  "--no-labels"], env=env, check=True, capture_output=True)
        rows: list[dict] = []

        def timed(label: str, cmd: list[str]) -> tuple[dict, str | None]:
            before = refs(rel, env)
            r = run_step(label, cmd, env, 10 * 2**30, 40 * 2**30, 900, log)
            made = sorted(refs(rel, env) - before)
            return r, (made[0] if made else None)

        def score(label: str, ref: str | None, r: dict, path: str) -> None:
            if ref is not None:
                subprocess.run(rel + ["evaluate", ref, "-s", "quality", "-d", "heldout", "--device", "cpu",
                                      "--threads", str(args.threads), "--wait"], env=env, capture_output=True)
            rows.append({"label": label, "path": path, "ref": ref, **r,
                         "figures": _figures(rel, ref, env) if ref else {}})
            f = rows[-1]["figures"]
            print(f"{label}: {r['wall_s']:.1f} s, {r['peak_rss'] / 2**20:.0f} MiB, ppl {f.get('perplexity')}",
                  flush=True)

        r, _ = timed("FP32 export (relman, onnx-export)", rel + ["compress", "lm@1.0.0", "onnx-export",
                                                                  "--no-evaluate", "--device", "cpu", "--wait"])
        fp32 = sorted(refs(rel, env) - {"lm@1.0.0"})[0]
        score("FP32 (relman's ONNX export)", fp32, r, "relman")
        for label, params in VARIANTS:
            cmd = rel + ["compress", "lm@1.0.0", "int4-weight-only", "-p", "exporter=relman"]
            for p in params:
                cmd += ["-p", p]
            r, ref = timed(label, cmd + ["--no-evaluate", "--device", "cpu", "--wait"])
            score(label, ref, r, "relman exporter")
        for label, params in (("rtn via relman", ["algo=rtn"]), ("k_quant via relman", ["algo=k_quant"])):
            cmd = rel + ["compress", "lm@1.0.0", "int4-weight-only", "-p", "exporter=genai"]
            for p in params:
                cmd += ["-p", p]
            r, ref = timed(f"{label} (GenAI graph)", cmd + ["--no-evaluate", "--device", "cpu", "--wait"])
            score(label, ref, r, "GenAI builder's FP32 graph")
        for algo in ("default", "k_quant"):
            out = work / f"builder-{algo}"
            r = run_step(f"builder alone, algo_config={algo}",
                         [py, "-m", "onnxruntime_genai.models.builder", "-i", str(model), "-o", str(out), "-p", "int4",
                          "-e", "cpu", "-c", str(work / "genai-cache"), "--extra_options", "hf_token=false",
                          f"algo_config={algo}"], env, 10 * 2**30, 40 * 2**30, 900, log)
            ref = None
            if r["ok"]:
                for f in model.iterdir():
                    if f.name == "config.json" or f.name.startswith("tokenizer"):
                        shutil.copy(f, out / f.name)
                before = refs(rel, env)
                subprocess.run(rel + ["import", str(out), "-m", f"builder-{algo.replace('_', '-')}", "--task",
                                      "causal-lm"], env=env, capture_output=True)
                made = sorted(refs(rel, env) - before)
                ref = made[0] if made else None
            r["weight_bytes"] = sum(p.stat().st_size for p in out.glob("model.onnx*")) if out.exists() else 0
            score(f"builder -p int4, algo_config={algo}", ref, r, "GenAI builder alone")
        load_end = os.getloadavg()
        base = rows[0]["figures"].get("perplexity") or float("nan")
        table = ["| variant | graph | ppl | Δ ppl vs FP32 | weight MiB | wall s | peak RSS MiB |",
                 "|---|---|---|---|---|---|---|"]
        for row in rows:
            f = row["figures"]
            ppl = f.get("perplexity")
            size = f.get("weight_bytes") or row.get("weight_bytes")  # the builder's own: its files
            table.append(f"| {row['label']} | {row['path']} | {ppl:.2f} | {100 * (ppl / base - 1):+.1f} % | "
                         f"{(size or 0) / 2**20:.2f} | {row['wall_s']:.1f} | {row['peak_rss'] / 2**20:.0f} |"
                         if ppl else f"| {row['label']} | {row['path']} | — | — | — | {row['wall_s']:.1f} | "
                                     f"{row['peak_rss'] / 2**20:.0f} |")
        machine = (f"{platform.node() or 'machine'}: {os.cpu_count()} cores shared with other jobs, load average "
                   f"{load_start[0]:.1f} → {load_end[0]:.1f}, {args.threads} threads; model: "
                   f"{'planted-outlier twin of ' if args.planted else ''}the trained LM (relman.modelio.trained_lm, "
                   f"{weights / 2**20:.1f} MiB FP32); perplexity on 40 held-out tkinter docstrings (≤ 600 chars)")
        print("\n" + "\n".join(table) + f"\n\n{machine}")
        if args.readme:
            with open(HERE / "README.md", "a", encoding="utf-8") as f:
                f.write(f"\n### INT4 algorithms on the trained LM{' (planted outliers)' if args.planted else ''} — "
                        f"`bench_int4_algos.py` ({time.strftime('%Y-%m-%d %H:%M')} UTC)\n\n{machine}\n\n"
                        + "\n".join(table) + "\n")
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
