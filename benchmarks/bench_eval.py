"""Evaluation overhead: relman's reported figures vs a raw loop over the same session and inputs.

1. Latency: the p50 that relman's latency suite reports (relman.evaluate.latency via the same
   SuiteEnv the evaluate job builds) vs a plain `time.perf_counter` loop calling the same
   onnxruntime session / the same PyTorch module on the same prepared inputs, with the same
   warm-up and sample count. Rounds alternate (relman, raw, relman, raw, ...) so drift in machine
   load hits both; the figure is the median over rounds. Target: ratio within 1.05.
2. Quality-suite throughput: rows/s of relman's quality suite (tokenise + predict + metrics) vs
   a raw loop that tokenises the same batches and runs the same session. Target: >= 0.9 of raw.

Run: .venv/bin/python benchmarks/bench_eval.py [--hidden 256 --layers 4 --batch 8 --seq 128]
Prints one table; nothing is stored.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def build_models(root: Path, hidden: int, layers: int) -> tuple[Path, Path]:
    from relman.modelio.tiny import tiny_bert_classifier
    from relman.compress.export.onnx_export import export_onnx

    hf = tiny_bert_classifier(root / "bert", hidden=hidden, layers=layers, heads=4, intermediate=hidden * 4)
    return hf, export_onnx(hf, root / "bert-onnx", "text-classification").folder


def raw_latency_ms(call, warmup: int, samples: int) -> np.ndarray:
    for _ in range(warmup):
        call()
    out = np.empty(samples)
    for i in range(samples):
        t0 = time.perf_counter_ns()
        call()
        out[i] = (time.perf_counter_ns() - t0) / 1e6
    return out


def latency_compare(folder: Path, fmt: str, batch: int, seq: int, threads: int, rounds: int, samples: int,
                    device: str) -> dict[str, float]:
    from relman.evaluate import latency
    from relman.evaluate.env import ModelRef, SuiteEnv

    env = SuiteEnv(model=ModelRef(None, folder, fmt, "text-classification"), device=device, threads=threads,
                   options={"warmup": 20, "min_samples": samples, "time_budget_s": 600}, batch_sizes=[batch],
                   seq_lens=[seq])
    runner = env.runner()
    prepared = runner.prepare_synthetic(batch, seq)
    if fmt == "onnx":
        sess, feeds = runner.backend.session, prepared.native
        call = lambda: sess.run(None, feeds)  # noqa: E731
    else:
        import torch

        model, inputs = runner.backend.model, prepared.native

        def call():
            with torch.inference_mode():
                out = model(**inputs).logits
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            return out
    rel, raw = [], []
    for i in range(rounds):  # alternate which goes first, so neither always runs on a warmer machine
        measure_rel = lambda: rel.append({x.name: x.value for x in latency.run(env)}["latency_p50_ms"])  # noqa: E731
        measure_raw = lambda: raw.append(float(np.median(raw_latency_ms(call, 20, samples))))  # noqa: E731
        for measure in ((measure_rel, measure_raw) if i % 2 == 0 else (measure_raw, measure_rel)):
            measure()
    r, w = statistics.median(rel), statistics.median(raw)
    return {"relman_p50_ms": r, "raw_p50_ms": w, "ratio": r / w}


def throughput_compare(folder: Path, fmt: str, n: int, batch: int, threads: int, rounds: int,
                       device: str) -> dict[str, float]:
    from relman.data import demo
    from relman.data.dataset import Dataset
    from relman.evaluate import quality
    from relman.evaluate.env import ModelRef, SuiteEnv

    rows = demo.sentiment_rows(n, seed=0)
    ds = Dataset("bench", "text", texts=[r[0] for r in rows],
                 labels=np.array([demo.SENTIMENT_LABELS.index(r[1]) for r in rows]),
                 label_names=list(demo.SENTIMENT_LABELS))
    env = SuiteEnv(model=ModelRef(None, folder, fmt, "text-classification"), device=device, threads=threads,
                   options={"eval_batch_size": batch, "split": "test"}, batch_sizes=[batch], seq_lens=[128],
                   dataset=ds)
    runner = env.runner()
    tok, backend = runner.preprocessor, runner.backend
    texts = ds.texts

    def raw_pass() -> float:
        t0 = time.perf_counter()
        preds = []
        for i in range(0, len(texts), batch):
            enc = tok(texts[i:i + batch], padding="longest", truncation=True, max_length=128, return_tensors="np")
            if fmt == "onnx":
                feeds = {k: enc[k].astype(np.int64) for k in backend.input_names}
                preds.append(backend.session.run(None, feeds)[0].argmax(1))
            else:
                import torch

                with torch.inference_mode():
                    inputs = {k: torch.from_numpy(enc[k]).to(device) for k in enc.keys()}
                    preds.append(backend.model(**inputs).logits.argmax(1).cpu().numpy())
        np.concatenate(preds)
        return len(texts) / (time.perf_counter() - t0)

    quality.run(env)  # warm-up (tokenizer caches, allocator)
    raw_pass()
    rel, raw = [], []
    for i in range(rounds):
        measure_rel = lambda: rel.append({m.name: m.value for m in quality.run(env)}["eval_throughput_sps"])  # noqa: E731
        for measure in ((measure_rel, lambda: raw.append(raw_pass())) if i % 2 == 0
                        else (lambda: raw.append(raw_pass()), measure_rel)):
            measure()
    r, w = statistics.median(rel), statistics.median(raw)
    return {"relman_sps": r, "raw_sps": w, "ratio": r / w}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--formats", default="onnx,hf", help="Which versions to measure (onnx, hf).")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import onnxruntime
    import torch
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, onnxruntime "
          f"{onnxruntime.__version__}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}, "
          f"threads {args.threads}, device {args.device}")
    print(f"model: BERT classifier hidden {args.hidden}, {args.layers} layers; latency at batch {args.batch}, "
          f"seq {args.seq}, {args.samples} samples x {args.rounds} rounds; throughput over {args.rows} rows, "
          f"batch 32")
    with tempfile.TemporaryDirectory() as tmp:
        hf, onnx_dir = build_models(Path(tmp), args.hidden, args.layers)
        rows = []
        for fmt, folder in (("onnx", onnx_dir), ("hf", hf)):
            if fmt not in args.formats.split(","):
                continue
            lat = latency_compare(folder, fmt, args.batch, args.seq, args.threads, args.rounds, args.samples,
                                  args.device)
            thr = throughput_compare(folder, fmt, args.rows, 32, args.threads, args.rounds, args.device)
            rows.append((fmt, lat, thr))
    print(f"{'format':<7}{'relman p50 ms':>15}{'raw p50 ms':>12}{'ratio':>8}   {'quality sps':>12}{'raw sps':>10}"
          f"{'ratio':>8}")
    for fmt, lat, thr in rows:
        print(f"{fmt:<7}{lat['relman_p50_ms']:>15.3f}{lat['raw_p50_ms']:>12.3f}{lat['ratio']:>8.3f}   "
              f"{thr['relman_sps']:>12.1f}{thr['raw_sps']:>10.1f}{thr['ratio']:>8.3f}")


if __name__ == "__main__":
    main()
