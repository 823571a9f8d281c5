"""relman's GGUF files and INT4 children beside llama.cpp's own quantiser, on the trained LM.

Issue 30's benchmark: perplexity increase vs full precision, size and wall time for
- relman's GGUF writer: F16, Q8_0, Q4_0, Q4_K_M (`relman compress REF gguf -p type=...`),
- llama.cpp's own Q4_0 and Q4_K_M, quantised by llama.cpp (`llama_model_quantize`) from
  relman's F16 file — so the two Q4_K_M rows differ only in who quantised,
- relman's ONNX INT4 children (rtn, k_quant, hqq; block 32), scored by relman's own quality suite.

Every GGUF file is scored by llama.cpp itself (llama-cpp-python: logits for every position of
the same token ids, the HF tokenizer's, in windows of WINDOW tokens), against llama.cpp's F16
of the same model; the ONNX children by relman's perplexity against their FP32 parent on the
same documents. Both are relative increases on the same held-out text (docstrings the model
never saw).

llama-cpp-python builds from source (a C++ compiler and cmake; about 15 min on 2 cores), so it
lives in its own venv, given by --llama-python (default /tmp/llvenv/bin/python, made with
`python3 -m venv /tmp/llvenv && /tmp/llvenv/bin/pip install llama-cpp-python numpy`). The
llama.cpp part runs in that interpreter as a subprocess.

    .venv/bin/python benchmarks/bench_gguf_llamacpp.py [--llama-python PATH] [--docs 24]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WINDOW = 256

LLAMA_SIDE = r'''
import json, math, sys, time
import numpy as np
import llama_cpp

job = json.load(open(sys.argv[1]))
out = {}
ftypes = {"Q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0, "Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M}
for name, ftype in ftypes.items():
    dest = job["workdir"] + f"/llamacpp-{name}.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    t0 = time.perf_counter()
    rc = llama_cpp.llama_model_quantize(job["f16"].encode(), dest.encode(), params)
    if rc != 0:
        raise SystemExit(f"llama.cpp could not quantise to {name}: {rc}")
    job["files"][f"llama.cpp {name}"] = dest
    out.setdefault("_quantise_s", {})[f"llama.cpp {name}"] = time.perf_counter() - t0
for label, path in job["files"].items():
    llm = llama_cpp.Llama(model_path=path, n_ctx=job["window"], logits_all=True, verbose=False,
                          n_threads=job["threads"], n_batch=job["window"])
    nll, n = 0.0, 0
    t0 = time.perf_counter()
    for ids in job["windows"]:
        llm.reset()
        llm.eval(ids)
        logits = np.asarray(llm.scores[: len(ids)], dtype=np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        nll -= float(sum(logp[i, ids[i + 1]] for i in range(len(ids) - 1)))
        n += len(ids) - 1
    out[label] = {"ppl": math.exp(nll / n), "tokens": n, "score_s": time.perf_counter() - t0,
                  "bytes": __import__("os").path.getsize(path)}
    del llm
print(json.dumps(out))
'''


def _plant(src: Path, dest: Path) -> Path:
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src)
    channels = torch.arange(5, model.config.hidden_size, 32)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.post_attention_layernorm.weight[channels] /= 100.0
            for lin in (layer.mlp.gate_proj, layer.mlp.up_proj):
                lin.weight[:, channels] *= 100.0
    model.save_pretrained(dest)
    for f in Path(src).iterdir():
        if f.name.startswith("tokenizer") or f.suffix == ".jinja":
            shutil.copy(f, dest / f.name)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llama-python", default="/tmp/llvenv/bin/python")
    ap.add_argument("--docs", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--planted", action="store_true",
                    help="the outlier plant of tests/test_int4_lm.py: 8 MLP input channels per layer x100 (and the "
                         "RMSNorm before them /100), the same function in FP32, hard for per-block 4-bit rounding")
    args = ap.parse_args()

    from transformers import AutoTokenizer

    from relman.app.datasets import register_dataset
    from relman.app.models import import_model
    from relman.catalog import open_catalog
    from relman.compress import job as compress_job
    from relman.evaluate.job import run as evaluate_run
    from relman.jobs.context import JobContext
    from relman.modelio.loading import materialize_version
    from relman.modelio.trained_lm import heldout_documents, trained_lm

    work = Path(tempfile.mkdtemp(prefix="bench-gguf-"))
    src = trained_lm()
    if args.planted:
        src = _plant(src, work / "planted")
    cat = open_catalog(work / "catalog")
    parent = import_model(cat, src, "lm", task="causal-lm")
    docs = [d[:1200] for d in heldout_documents() if d.strip()][: args.docs]
    texts = work / "heldout.jsonl"
    texts.write_text("\n".join(json.dumps({"text": d}) for d in docs) + "\n", encoding="utf-8")
    register_dataset(cat, texts, "heldout", label_col=None)

    def run(kind: str, params: dict) -> dict:
        ctx = JobContext(cat, device="cpu")
        try:
            return (compress_job.run if kind == "compress" else evaluate_run)(params, ctx)
        finally:
            ctx.cleanup()

    rows: list[dict] = []
    files: dict[str, str] = {}
    for t in ("F16", "Q8_0", "Q4_0", "Q4_K_M"):
        t0 = time.perf_counter()
        res = run("compress", {"recipe": "gguf", "params": {"type": t}, "parent_version_ids": [parent.id],
                               "evaluate": False})
        v = cat.get_version(res["version_id"])
        folder = materialize_version(cat, v.id, work / "gguf")
        files[f"relman {t}"] = str(next(folder.glob("*.gguf")))
        rows.append({"variant": f"relman GGUF {t}", "seconds": time.perf_counter() - t0})
    run("evaluate", {"version_id": parent.id, "suites": ["quality"], "dataset": "heldout", "threads": args.threads})
    ppl0 = cat.metric_values(parent.id)["perplexity"]
    onnx_rows = []
    for algo in ("rtn", "k_quant", "hqq"):
        t0 = time.perf_counter()
        res = run("compress", {"recipe": "int4-weight-only", "params": {"algo": algo, "block_size": 32,
                                                                         "exporter": "relman"},
                               "parent_version_ids": [parent.id], "evaluate": False})
        secs = time.perf_counter() - t0
        v = cat.get_version(res["version_id"])
        run("evaluate", {"version_id": v.id, "suites": ["quality"], "dataset": "heldout", "threads": args.threads})
        ppl = cat.metric_values(v.id)["perplexity"]
        onnx_rows.append({"variant": f"relman ONNX INT4 {algo} (block 32)", "ppl": ppl, "increase": ppl / ppl0 - 1,
                          "bytes": v.size_bytes, "seconds": secs})

    tok = AutoTokenizer.from_pretrained(src)
    ids = [i for d in docs for i in tok(d)["input_ids"] + ([tok.eos_token_id] if tok.eos_token_id is not None else [])]
    windows = [ids[a:a + WINDOW] for a in range(0, len(ids) - 1, WINDOW) if len(ids[a:a + WINDOW]) > 1]
    job = work / "job.json"
    job.write_text(json.dumps({"f16": files["relman F16"], "files": files, "windows": windows, "window": WINDOW,
                               "threads": args.threads, "workdir": str(work)}))
    (work / "llama_side.py").write_text(LLAMA_SIDE)
    out = subprocess.run([args.llama_python, str(work / "llama_side.py"), str(job)], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"the llama.cpp side failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
    scored = json.loads(out.stdout.strip().splitlines()[-1])
    quant_s = scored.pop("_quantise_s")
    f16 = scored["relman F16"]["ppl"]
    print(f"held-out text: {len(docs)} documents, {scored['relman F16']['tokens']} scored tokens "
          f"(windows of {WINDOW}); trained LM {src.name}")
    print("| variant | quantised by | perplexity | Δ vs full precision | MB | quantise s |")
    print("|---|---|---|---|---|---|")
    secs = {r["variant"]: r["seconds"] for r in rows}
    for label, r in scored.items():
        who, t = label.split(" ", 1)
        s = secs.get(f"relman GGUF {t}") if who == "relman" else quant_s.get(label)
        print(f"| GGUF {t} | {who} | {r['ppl']:.3f} | {100 * (r['ppl'] / f16 - 1):+.2f} % (vs llama.cpp on F16) | "
              f"{r['bytes'] / 1e6:.2f} | {s:.1f} |")
    print(f"| FP32 (PyTorch) | - | {ppl0:.3f} | (reference for the ONNX rows) | - | - |")
    for r in onnx_rows:
        print(f"| {r['variant']} | relman | {r['ppl']:.3f} | {100 * r['increase']:+.2f} % (vs FP32, relman's suite) | "
              f"{r['bytes'] / 1e6:.2f} | {r['seconds']:.1f} |")
    cat.close()


if __name__ == "__main__":
    main()
