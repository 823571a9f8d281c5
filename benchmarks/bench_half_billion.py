"""The whole pipeline on a ~0.5 B-parameter causal LM: wall time and peak RSS of every step.

Builds a Qwen2-style LM from a config (Qwen2.5-0.5B's shape: hidden 896, 24 layers, 14 heads /
2 KV heads, FFN 4864, vocabulary 151 936, tied embeddings; random weights, ~1.98 GB of FP32
safetensors in 4 shards) and runs, each step as its own process (the relman CLI where there is
a command, so what is measured is what a user runs):

    build → import → verify → INT4 weight-only with relman's exporter (`-p exporter=relman`)
    → INT4 weight-only with ONNX Runtime GenAI's builder (`relman compress ... int4-weight-only`,
    exporter=auto picks it for Qwen2) → FP16 (`onnx-fp16`) with each exporter → the builder alone (`python -m
    onnxruntime_genai.models.builder -p int4 -e cpu`, to see what relman's checks add) →
    perplexity of the FP32 parent and of both INT4 children on a small text set → paired latency
    of each INT4 child against the FP32 parent (one process, interleaved rounds, ratio with a
    95 % interval) → the GUI opened on the catalog (offscreen; screenshots; must not load a
    model library) → signed bundle export → bundle import into a second catalog

Peak RSS is the process tree's (the CLI and the worker it starts), read from wait4's rusage.
A watchdog samples the tree's RSS every 0.2 s and kills it past --rss-cap (default 10 GiB), and
RLIMIT_AS caps each step's address space (--vm-cap), so the benchmark cannot take a shared
machine down; a step killed that way is a row of the table ("killed at cap"), not a crash.

Targets (issue 19): peak RSS ≤ 2.5× the FP32 weights for export / quantisation; ≤ 256 MiB for
import, verify, bundle export and bundle import.

    .venv/bin/pip install 'torch==2.13.0' -r benchmarks/requirements.txt   # onnxruntime-genai
    .venv/bin/python benchmarks/bench_half_billion.py [--workdir DIR] [--readme] [--skip STEP ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

QWEN2_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rope_theta=1000000.0,
                 rms_norm_eps=1e-6, tie_word_embeddings=True, torch_dtype="float32", bos_token_id=256,
                 eos_token_id=256)

BUILD = r"""
import sys, json, torch
from pathlib import Path
from transformers import Qwen2Config, Qwen2ForCausalLM
from relman.modelio import tiny
folder = Path(sys.argv[1]); cfg = json.loads(sys.argv[2]); layers = int(sys.argv[3])
cfg["num_hidden_layers"] = layers
folder.mkdir(parents=True, exist_ok=True)
tiny.save_byte_tokenizer(folder)  # a byte-level BPE tokenizer (ids < 257, inside the vocabulary)
torch.manual_seed(0)
with torch.device("meta"):
    model = Qwen2ForCausalLM(Qwen2Config(**cfg))
model = model.to_empty(device="cpu")
model.tie_weights()  # to_empty gives every parameter its own storage: re-tie lm_head to the embedding
with torch.no_grad():
    for name, p in model.named_parameters():
        if "norm" in name:
            p.fill_(1.0)
        elif p.ndim == 1:
            p.zero_()
        else:
            p.normal_(0.0, 0.02)
model.eval().save_pretrained(folder, safe_serialization=True, max_shard_size="520MB")
print(json.dumps({"params": sum(p.numel() for p in model.parameters())}))
"""

def tree_rss(pid: int) -> int:
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p] + p.children(recursive=True)
    except psutil.Error:
        return 0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_step(name: str, cmd: list[str], env: dict[str, str], rss_cap: int, vm_cap: int, timeout: float,
             log: Path) -> dict:
    """Run one step; its wall time, peak RSS (wait4 rusage of the tree) and outcome."""
    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (vm_cap, vm_cap))

    t0 = time.perf_counter()
    with open(log, "ab") as out:
        out.write(f"\n=== {name}: {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=limits,
                                start_new_session=True)
        killed = {"why": None, "sampled_peak": 0}
        done = threading.Event()

        def watch() -> None:  # never reaps the child (poll() would, and wait4 below needs it)
            while not done.is_set():
                rss = tree_rss(proc.pid)
                killed["sampled_peak"] = max(killed["sampled_peak"], rss)
                if rss > rss_cap:
                    killed["why"] = f"killed at RSS cap {rss_cap / 2**30:.1f} GiB"
                    os.killpg(proc.pid, 9)
                    return
                if time.perf_counter() - t0 > timeout:
                    killed["why"] = f"killed after {timeout:.0f} s"
                    os.killpg(proc.pid, 9)
                    return
                done.wait(0.2)

        th = threading.Thread(target=watch, daemon=True)
        th.start()
        _, status, ru = os.wait4(proc.pid, 0)
        done.set()
        proc.returncode = os.waitstatus_to_exitcode(status)
        th.join(timeout=1)
    wall = time.perf_counter() - t0
    peak = max(ru.ru_maxrss * 1024, killed["sampled_peak"])
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
    ok = proc.returncode == 0 and not killed["why"]
    return {"step": name, "ok": ok, "wall_s": wall, "peak_rss": peak,
            "note": killed["why"] or ("" if ok else (tail[0][:200] if tail else f"exit {proc.returncode}"))}


GUI = r"""
import json, sys, time
t0 = time.perf_counter()
from pathlib import Path
from relman.ui.app import close_window, open_window, screenshots
app, window = open_window(sys.argv[1], headless=True, run_jobs=False)
ids = [v.id for v in window.snapshot.versions if v.model == "qwen"]
window.set_selection(ids)
app.processEvents()
shown = time.perf_counter() - t0
shots = screenshots(window, Path(sys.argv[2]), ("versions", "compare", "lineage"))
heavy = sorted(m for m in ("torch", "transformers", "onnxruntime", "onnx") if m in sys.modules)
print(json.dumps({"window_s": round(window.startup_s, 2), "shown_s": round(shown, 2), "versions": len(ids),
                  "screenshots": len(shots), "heavy_modules_loaded": heavy}))
close_window(app, window)
"""


def refs(base: list[str], env: dict[str, str]) -> set[str]:
    """Every version ref in the catalog (`relman ls --json`)."""
    out = subprocess.run(base + ["ls", "--json"], env=env, capture_output=True, text=True).stdout
    try:
        return {f"{v['model']}@{v['version']}" for v in json.loads(out)}
    except (ValueError, KeyError, TypeError):
        return set()


def metric_lines(work: Path) -> str:
    """Perplexity, latency and size of the parent and each INT4 child, from `relman show --json`."""
    out = []
    for p in sorted(work.glob("figures-*.json")):
        try:
            data = json.loads(p.read_text())
        except ValueError:
            continue
        metrics = data.get("metrics") or []
        picked = {}
        for m in metrics:
            if m.get("name") in ("perplexity", "latency_p50_ms", "latency_p50_ratio_vs_parent", "size_bytes",
                                 "weight_bytes", "top1_agreement_vs_parent"):
                ctx = m.get("context") or {}
                picked[m["name"]] = m.get("value") if "interval" not in ctx else [m.get("value"), ctx["interval"]]
        out.append(f"{data.get('ref', p.name)}: {json.dumps(picked)}")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", help="where the model, catalogs and outputs go (default: a temp folder, removed)")
    ap.add_argument("--layers", type=int, default=24, help="decoder layers (24 = ~0.5 B parameters)")
    ap.add_argument("--smoke", action="store_true", help="a tiny model of the same family (checks the script)")
    ap.add_argument("--rss-cap", type=float, default=10.0, help="GiB: a step whose process tree exceeds it is killed")
    ap.add_argument("--vm-cap", type=float, default=40.0, help="GiB of address space per process (RLIMIT_AS)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per step at most")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip", nargs="*", default=[], help="steps to skip (substring of the step name, e.g. GenAI relman)")
    ap.add_argument("--readme", action="store_true", help="append the table to benchmarks/README.md")
    args = ap.parse_args()
    keep = bool(args.workdir)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="relman-bench-05b-"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "steps.log"
    model_dir, cat1, cat2 = work / "qwen2-05b", work / "catalog", work / "catalog-imported"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RELMAN_KEYS_DIR": str(work / "keys"),
           "OMP_NUM_THREADS": str(args.threads), "QT_QPA_PLATFORM": "offscreen"}
    py = sys.executable
    rel = [py, "-m", "relman", "--catalog"]
    rss_cap, vm_cap = int(args.rss_cap * 2**30), int(args.vm_cap * 2**30)
    load_start = os.getloadavg()
    rows: list[dict] = []

    def step(name: str, cmd: list[str], timeout: float | None = None) -> dict:
        if any(s.lower() in name.lower() for s in args.skip):
            return {"ok": False}
        r = run_step(name, cmd, env, rss_cap, vm_cap, timeout or args.timeout, log)
        rows.append(r)
        print(f"{name}: {'ok' if r['ok'] else 'FAILED'} {r['wall_s']:.1f} s, peak RSS {r['peak_rss'] / 2**20:.0f} MiB "
              f"{r['note']}", flush=True)
        return r

    try:
        if not (model_dir / "config.json").is_file():
            shutil.rmtree(model_dir, ignore_errors=True)
            cfg = dict(QWEN2_05B, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                       vocab_size=1024) if args.smoke else QWEN2_05B
            step("build (random weights, sharded safetensors)",
                 [py, "-c", BUILD, str(model_dir), json.dumps(cfg), str(args.layers)])
        weights = sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))
        shards = len(list(model_dir.glob("*.safetensors")))
        texts = work / "texts.txt"  # 16 different generated sentences (relman.data.demo.lm_text), one a line
        step("import", rel + [str(cat1), "import", str(model_dir), "-m", "qwen", "--task", "causal-lm"])
        step("verify", rel + [str(cat1), "verify"])
        subprocess.run([py, "-c", f"from relman.data.demo import lm_text; lm_text({str(texts)!r}, n=16)"], env=env,
                       check=True)
        step("dataset add", rel + [str(cat1), "dataset", "add", str(texts), "--name", "texts", "--no-labels"])
        children: dict[str, str] = {}  # label -> ref of the INT4 child that step made
        for label, exporter in (("relman exporter", "relman"), ("GenAI builder via relman", "auto")):
            before = refs(rel + [str(cat1)], env)
            r = step(f"INT4 weight-only ({label})",
                     rel + [str(cat1), "compress", "qwen@1.0.0", "int4-weight-only", "-p", f"exporter={exporter}",
                            "--no-evaluate", "--device", "cpu", "--wait"])
            made = sorted(refs(rel + [str(cat1)], env) - before)
            if r.get("ok") and made:
                children[label] = made[0]
        for label, exporter in (("GenAI builder via relman", "auto"), ("relman exporter", "relman")):
            step(f"FP16 ({label})",
                 rel + [str(cat1), "compress", "qwen@1.0.0", "onnx-fp16", "-p", f"exporter={exporter}",
                        "--no-evaluate", "--device", "cpu", "--wait"])
        genai_out = work / "genai-int4"
        step("INT4, GenAI builder alone (python -m onnxruntime_genai.models.builder)",
             [py, "-m", "onnxruntime_genai.models.builder", "-i", str(model_dir), "-o", str(genai_out),
              "-p", "int4", "-e", "cpu", "-c", str(work / "genai-cache"), "--extra_options", "hf_token=false"])
        for label, ref in [("FP32", "qwen@1.0.0")] + list(children.items()):
            step(f"perplexity ({label}, 16 texts)",
                 rel + [str(cat1), "evaluate", ref, "-s", "quality", "-d", "texts", "--device", "cpu",
                        "--threads", str(args.threads), "--wait"])
        for label, ref in children.items():  # paired with the FP32 parent in the same process
            step(f"paired latency ({label} vs FP32, b1 s128)",
                 rel + [str(cat1), "evaluate", ref, "-s", "latency", "-b", "1", "--seq-len", "128", "--device", "cpu",
                        "--threads", str(args.threads), "-o", "warmup=2", "-o", "min_samples=24",
                        "-o", "time_budget_s=150", "--wait"])
        shots = work / "gui"
        step("GUI opened on the catalog (offscreen, screenshots)", [py, "-c", GUI, str(cat1), str(shots)])
        for _label, ref in [("FP32", "qwen@1.0.0")] + list(children.items()):
            (work / f"figures-{ref}.json").write_text(subprocess.run(
                rel + [str(cat1), "show", ref, "--json"], env=env, capture_output=True, text=True).stdout)
        step("keys create", rel + [str(cat1), "keys", "create", "bench"])
        bundle = work / "qwen.relman"
        step("bundle export (signed)", rel + [str(cat1), "export", "qwen@1.0.0", "-o", str(bundle)])
        step("bundle import", rel + [str(cat2), "import-bundle", str(bundle)])
        genai_bytes = sum(p.stat().st_size for p in genai_out.rglob("*") if p.is_file()) if genai_out.exists() else 0
        load_end = os.getloadavg()
        targets = {"import": 256 * 2**20, "verify": 256 * 2**20, "bundle export (signed)": 256 * 2**20,
                   "bundle import": 256 * 2**20, "INT4 weight-only (relman exporter)": 2.5 * weights,
                   "INT4 weight-only (GenAI builder via relman)": 2.5 * weights,
                   "FP16 (GenAI builder via relman)": 2.5 * weights, "FP16 (relman exporter)": 2.5 * weights,
                   "INT4, GenAI builder alone (python -m onnxruntime_genai.models.builder)": 2.5 * weights}
        table = ["| step | ok | wall s | peak RSS MiB | × FP32 weights | target | note |",
                 "|---|---|---|---|---|---|---|"]
        for r in rows:
            t = targets.get(r["step"])
            verdict = "" if t is None else (f"≤ {t / 2**20:.0f} MiB: " + ("met" if r["peak_rss"] <= t else "**over**"))
            table.append(f"| {r['step']} | {'yes' if r['ok'] else 'no'} | {r['wall_s']:.1f} | "
                         f"{r['peak_rss'] / 2**20:.0f} | {r['peak_rss'] / max(weights, 1):.2f} | {verdict} | "
                         f"{r['note']} |")
        machine = (f"{platform.node() or 'machine'}: {os.cpu_count()} cores shared with other jobs, load average "
                   f"{load_start[0]:.1f} → {load_end[0]:.1f}, {args.threads} threads; model: Qwen2-style, "
                   f"{args.layers} layers, {weights / 1e9:.2f} GB FP32 safetensors in {shards} shards; GenAI INT4 "
                   f"output {genai_bytes / 2**20:.0f} MiB")
        print("\n" + "\n".join(table) + f"\n\n{machine}\n\n{metric_lines(work)}")
        if args.readme:
            with open(HERE / "README.md", "a", encoding="utf-8") as f:
                f.write(f"\n### Half-billion-parameter pipeline — `bench_half_billion.py` "
                        f"({time.strftime('%Y-%m-%d %H:%M')} UTC)\n\n{machine}\n\n" + "\n".join(table) + "\n")
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
