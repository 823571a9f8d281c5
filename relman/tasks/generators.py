"""One greedy "generator" per version, whatever its format, for timing generation side by side.

`open_generator` gives an object with `engine` and `generate(prompt_ids, max_new, ignore_eos)`
-> (new ids, seconds to the first new token, seconds to the last, "eos" | "length"): a torch
model through its own key/value cache (`TorchLoop`), an ONNX graph through relman's loop, a
builder-made folder through onnxruntime-genai (`relman.tasks.onnx_generation`). The latency
suite times a version and its parent with these in interleaved rounds; they reuse a runner's
already loaded model or session where given, so a job holds each model once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol


class Generator(Protocol):
    engine: str

    def generate(self, prompt: list[int], max_new: int, ignore_eos: bool = False) -> tuple[list[int], float, float, str]:
        ...


class TorchLoop:
    """Greedy decoding of a transformers causal LM with its DynamicCache, one token per step
    (what `generate` does, without its per-step bookkeeping, so the first token's time is seen)."""

    engine = "torch"

    def __init__(self, model: Any, device: str, eos: set[int]) -> None:
        import torch

        self.torch, self.model, self.device, self.eos = torch, model.eval(), device, eos

    def generate(self, prompt: list[int], max_new: int, ignore_eos: bool = False) -> tuple[list[int], float, float, str]:
        torch = self.torch
        from transformers import DynamicCache

        new: list[int] = []
        stopped, ttft = "length", 0.0
        with torch.inference_mode():
            ids = torch.tensor([prompt], dtype=torch.long, device=self.device)
            cache = DynamicCache(config=self.model.config)
            t0 = time.perf_counter()
            while len(new) < max_new:
                out = self.model(input_ids=ids, past_key_values=cache, use_cache=True, return_dict=True)
                nxt = int(out.logits[0, -1].argmax())  # .item() waits for the device
                cache = out.past_key_values
                new.append(nxt)
                if len(new) == 1:
                    ttft = time.perf_counter() - t0
                if nxt in self.eos and not ignore_eos:
                    stopped = "eos"
                    break
                ids = torch.tensor([[nxt]], dtype=torch.long, device=self.device)
        return new, ttft, time.perf_counter() - t0, stopped


def open_generator(folder: Path, fmt: str, *, device: str = "cpu", threads: int | None = None,
                   backend: Any = None, engine: str = "auto") -> Generator:
    """A generator for the version in `folder` (format `fmt`); `backend` (a runner's
    TorchBackend / OnnxBackend) lends its loaded model or session."""
    from relman.tasks import onnx_generation as og

    folder = Path(folder)
    eos = og.eos_ids(folder)
    if fmt == "onnx":
        if engine == "genai" or (engine == "auto" and og.is_genai_folder(folder)):
            return og.GenaiGenerator(folder, device, threads)
        return og.OnnxLoop(folder, device, threads, session=getattr(backend, "session", None))
    model = getattr(backend, "model", None)
    if model is None:
        from relman.modelio.loading import load_torch_model

        model = load_torch_model(folder, "causal-lm", device, fmt=fmt)
    return TorchLoop(model, device, eos)


def generate_version(folder: Path, fmt: str, prompts: list[str], *, max_new_tokens: int, device: str = "cpu",
                     threads: int | None = None, ignore_eos: bool = False,
                     on_prompt: Any = None) -> list[Any]:
    """Greedy generations (`relman.tasks.generation_types.Generation`) of the version in
    `folder`, whatever its format: ONNX through `generate_onnx`, torch formats through
    `TorchLoop`, prompts encoded with the version's own tokenizer. `on_prompt(done, total)`
    after each prompt (a job's progress, which is also where a cancel is seen)."""
    from relman.modelio.loading import load_preprocessor
    from relman.tasks.generation_types import Generation
    from relman.tasks.onnx_generation import generate_onnx

    tok = load_preprocessor(Path(folder), "causal-lm")
    if fmt == "onnx":
        return generate_onnx(folder, prompts, max_new_tokens=max_new_tokens, device=device, threads=threads,
                             tokenizer=tok, ignore_eos=ignore_eos, on_prompt=on_prompt)
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    gen = open_generator(folder, fmt, device=device, threads=threads)
    out = []
    for prompt in prompts:
        ids = [int(t) for t in tok(prompt)["input_ids"]]
        new, ttft, total, stopped = gen.generate(ids, max_new_tokens, ignore_eos)
        out.append(Generation(prompt=prompt, text=tok.decode(new, skip_special_tokens=True), token_ids=new,
                              new_tokens=len(new), ttft_s=ttft, total_s=total, prompt_tokens=len(ids),
                              engine=gen.engine, stopped=stopped))
        if on_prompt is not None:
            on_prompt(len(out), len(prompts))
    return out
