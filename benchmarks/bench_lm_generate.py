"""Generation speed: relman's ONNX generation against onnxruntime-genai's own generator.

1. The trained LM (`relman.modelio.trained_lm`, 4.2 M params) made an INT4 child by ONNX Runtime
   GenAI's builder (`-p int4 -e cpu`, what `int4-weight-only` with exporter=auto runs), then
   greedy generation of the same prompts, same threads, in one process, interleaved rounds
   (each step runs every engine once on one prompt, the order rotating):
   - **relman**: `relman.tasks.onnx_generation.generate_onnx` (engine auto: the folder has
     genai_config.json, so onnxruntime-genai's generator behind relman's API: HF tokenizer,
     token ids in, the Generation record out);
   - **og**: onnxruntime-genai's own API written out here as its examples do (og.Tokenizer,
     og.Generator, generate_next_token);
   - **relman loop**: relman's own KV loop over the same builder graph (`engine="relman"`),
     plain onnxruntime sessions, no GenAI runtime.
   Every generation is `--tokens` long (EOS ignored), so tokens/s compare like for like.
   Figure: tokens/s (new tokens / whole call) per engine, medians over calls, and
   relman / og per round with a 95 % bootstrap interval (goal ≥ 0.9).
2. A 0.5 B-class Qwen2 (Qwen2.5-0.5B's shape, random weights; benchmarks/bench_half_billion.py's
   build), INT4 by the builder, generates too: time to first token, tokens/s, peak RSS.

    .venv/bin/python benchmarks/bench_lm_generate.py [--threads 1] [--tokens 32] [--rounds 5] [--skip-half]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


class _Ctx:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)

    def check_cancelled(self) -> None:
        pass


def build_int4(src: Path, out: Path) -> float:
    from relman.compress.export.genai_export import run_builder

    if (out / "genai_config.json").is_file():
        return 0.0
    t0 = time.perf_counter()
    run_builder(src, out, "int4", {}, _Ctx(out.parent / f"{out.name}-work"))
    return time.perf_counter() - t0


class OgDirect:
    """onnxruntime-genai used directly, as its examples do."""

    engine = "og"

    def __init__(self, folder: Path, threads: int) -> None:
        import onnxruntime_genai as og

        self.og = og
        config = og.Config(str(folder))
        config.clear_providers()
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {
            "intra_op_num_threads": threads, "inter_op_num_threads": 1}}}}))
        self.model = og.Model(config)
        self.tokenizer = og.Tokenizer(self.model)

    def run(self, prompt: str, tokens: int) -> tuple[int, float, float]:
        og = self.og
        t0 = time.perf_counter()
        ids = self.tokenizer.encode(prompt)
        params = og.GeneratorParams(self.model)
        params.set_search_options(do_sample=False, max_length=len(ids) + tokens, min_length=len(ids) + tokens)
        gen = og.Generator(self.model, params)
        gen.append_tokens(ids)
        n, first = 0, 0.0
        while not gen.is_done():
            gen.generate_next_token()
            gen.get_next_tokens()
            n += 1
            if n == 1:
                first = time.perf_counter() - t0
        return n, first, time.perf_counter() - t0


class Relman:
    def __init__(self, folder: Path, threads: int, engine: str) -> None:
        from relman.tasks.onnx_generation import GenaiGenerator, OnnxLoop, load_tokenizer

        self.folder, self.engine = folder, f"relman-{engine}"
        self.tok = load_tokenizer(folder)
        self.gen = GenaiGenerator(folder, "cpu", threads) if engine == "genai" else OnnxLoop(folder, "cpu", threads)

    def run(self, prompt: str, tokens: int) -> tuple[int, float, float]:
        from relman.tasks.onnx_generation import generate_onnx

        t0 = time.perf_counter()
        g = generate_onnx(self.folder, [prompt], max_new_tokens=tokens, tokenizer=self.tok, ignore_eos=True,
                          generator=self.gen)[0]
        return g.new_tokens, g.ttft_s, time.perf_counter() - t0


def paired(engines: list, prompts: list[str], tokens: int, rounds: int) -> dict:
    for e in engines:  # warm-up
        e.run(prompts[0], tokens)
    tps = {e.engine: [] for e in engines}
    ttft = {e.engine: [] for e in engines}
    per_round: dict[str, list[list[float]]] = {e.engine: [] for e in engines}
    step = 0
    for _ in range(rounds):
        for e in engines:
            per_round[e.engine].append([])
        for p in prompts:
            for j in range(len(engines)):
                e = engines[(step + j) % len(engines)]
                n, first, total = e.run(p, tokens)
                assert n == tokens, (e.engine, n)
                tps[e.engine].append(n / total)
                ttft[e.engine].append(first * 1000)
                per_round[e.engine][-1].append(n / total)
            step += 1
    return {"tps": tps, "ttft": ttft, "rounds": per_round}


def ratio(rounds: dict, a: str, b: str) -> dict:
    from relman.evaluate.stats import bootstrap_median_ratio

    r = np.median(np.asarray(rounds[a]), axis=1) / np.median(np.asarray(rounds[b]), axis=1)
    return bootstrap_median_ratio(r)


def machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
            f"Python {platform.python_version()}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--skip-half", action="store_true")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-lm-gen-"))
    work.mkdir(parents=True, exist_ok=True)
    from relman.modelio.trained_lm import planted_facts, trained_lm

    print(f"machine: {machine()}; threads {args.threads}; {args.tokens} new tokens per call", flush=True)
    src = trained_lm()
    folder = work / "trained-lm-int4"
    secs = build_int4(src, folder)
    print(f"trained LM -> INT4 by the builder: {secs:.1f} s", flush=True)
    prompts = [f"Q: {q}\nA:" for q, _ in planted_facts()[:4]] + ["Return a new", "If the argument"]
    engines = [Relman(folder, args.threads, "genai"), OgDirect(folder, args.threads), Relman(folder, args.threads, "relman")]
    res = paired(engines, prompts, args.tokens, args.rounds)
    for name in res["tps"]:
        print(f"  {name:16s} tokens/s median {np.median(res['tps'][name]):8.1f}   ttft p50 "
              f"{np.median(res['ttft'][name]):6.2f} ms   ({len(res['tps'][name])} calls)")
    for a in ("relman-genai", "relman-relman"):
        r = ratio(res["rounds"], a, "og")
        print(f"  {a} / og tokens/s: {r['value']:.3f} [{r['lower']:.3f}, {r['upper']:.3f}] over {r['rounds']} rounds")
    print(f"  load after: {os.getloadavg()[0]:.1f}", flush=True)
    if args.skip_half:
        return
    from bench_half_billion import BUILD, QWEN2_05B

    half = work / "qwen2-0.5b"
    if not (half / "config.json").is_file():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", BUILD, str(half), json.dumps(QWEN2_05B), "24"], check=True,
                       cwd=HERE.parent, env={**os.environ, "PYTHONPATH": str(HERE.parent)})
        print(f"0.5 B Qwen2 built: {time.perf_counter() - t0:.1f} s", flush=True)
    h4 = work / "qwen2-0.5b-int4"
    secs = build_int4(half, h4)
    print(f"0.5 B -> INT4 by the builder: {secs:.1f} s", flush=True)
    half_prompts = ["Hello there, this is a prompt of a few words.", "Another prompt."]
    half_engines = [Relman(h4, args.threads, "genai"), OgDirect(h4, args.threads), Relman(h4, args.threads, "relman")]
    res = paired(half_engines, half_prompts, 16, 2)
    for name in res["tps"]:
        print(f"  0.5B {name:16s} tokens/s median {np.median(res['tps'][name]):8.1f}   ttft p50 "
              f"{np.median(res['ttft'][name]):7.1f} ms")
    r = ratio(res["rounds"], "relman-genai", "og")
    print(f"  0.5B relman-genai / og tokens/s: {r['value']:.3f} [{r['lower']:.3f}, {r['upper']:.3f}]")
    print(f"  peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; "
          f"load {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
