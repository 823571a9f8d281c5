"""Greedy generation for causal-LM versions: the one function every suite and view calls.

Why one function: the `generate` suite, the gates that read its outputs, the GUI's side-by-side
view and the benchmarks must all produce *the same* continuation for the same prompt, or a
child's "flipped answers" would be an artefact of two decoding loops. So decoding is greedy
(argmax, no sampling, no repetition penalty), one prompt at a time (no padding, so a prompt's
output never depends on its batch neighbours), and stops at EOS, after `max_new_tokens`, or —
with `stop_at_newline` — at the first generated newline (the newline itself is not part of
`text`; its token is counted).

The signature::

    generate_greedy(folder: Path | str, fmt: str, prompts: Sequence[str], *,
                    max_new_tokens: int = 32, stop_at_newline: bool = False,
                    device: str = "cpu", threads: int | None = None,
                    model: Any = None, tokenizer: Any = None) -> list[Generation]

`Generation` (relman.tasks.generation_types, shared with the ONNX path): `prompt`, `text` (the
decoded new tokens, cut at the newline when asked), `token_ids` (the new token ids),
`new_tokens` (their number), `ttft_s` (seconds from the call to the first new token), `total_s`
(seconds for the whole prompt), `prompt_tokens`, `engine`, `stopped`.

Format `onnx` goes to `relman.tasks.onnx_generation.generate_onnx` (relman's KV-cache loop, or
onnxruntime-genai's generator for a builder-made folder), the newline stop applied to its
tokens afterwards. Every other format is loaded with relman's torch loader
(`relman.modelio.loading.load_torch_model`), or the caller passes an already loaded `model` and
`tokenizer` (the suites reuse their runner's). Nothing here touches the network.
"""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from relman.errors import EvaluationError
from relman.tasks.generation_types import Generation  # the one record, torch and ONNX alike

ONNX_MODULE = "relman.tasks.onnx_generation"


def generate_greedy(folder: Path | str, fmt: str, prompts: Sequence[str], *, max_new_tokens: int = 32,
                    stop_at_newline: bool = False, device: str = "cpu", threads: int | None = None,
                    model: Any = None, tokenizer: Any = None) -> list[Generation]:
    """Greedy continuations of `prompts` by the version in `folder` (see the module docstring)."""
    if max_new_tokens < 1:
        raise EvaluationError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if fmt == "onnx":
        try:
            onnx_gen = importlib.import_module(ONNX_MODULE)
        except ModuleNotFoundError as e:
            if e.name != ONNX_MODULE:
                raise
            raise EvaluationError(f"generation for ONNX versions needs {ONNX_MODULE}, which this build lacks") from None
        if tokenizer is None:
            from relman.modelio.loading import load_preprocessor

            tokenizer = load_preprocessor(Path(folder), "causal-lm")
        gens = onnx_gen.generate_onnx(Path(folder), list(prompts), max_new_tokens=max_new_tokens, device=device,
                                      threads=threads, tokenizer=tokenizer)
        return [_cut_at_newline(g, tokenizer) for g in gens] if stop_at_newline else list(gens)
    if model is None or tokenizer is None:
        from relman.modelio.loading import load_preprocessor, load_torch_model

        if threads:
            import torch

            torch.set_num_threads(int(threads))
        model = load_torch_model(Path(folder), "causal-lm", device, fmt=fmt) if model is None else model
        tokenizer = load_preprocessor(Path(folder), "causal-lm") if tokenizer is None else tokenizer
    return [_one(model, tokenizer, p, max_new_tokens, stop_at_newline) for p in prompts]


class _FirstToken:
    """A `generate` streamer that notes when the first new token arrives (the first `put` is the
    prompt itself)."""

    def __init__(self) -> None:
        self.calls = 0
        self.first: float | None = None

    def put(self, value: Any) -> None:
        self.calls += 1
        if self.calls == 2 and self.first is None:
            self.first = time.perf_counter()

    def end(self) -> None:
        pass


def _newline_ids(tokenizer: Any) -> set[int]:
    """Token ids whose text contains a newline (byte-level BPE: 'Ċ'), computed once per tokenizer."""
    cached = getattr(tokenizer, "_relman_newline_ids", None)
    if cached is None:
        cached = set()
        vocab = tokenizer.get_vocab()
        for piece, idx in vocab.items():
            if "\n" in piece or "Ċ" in piece or "<0x0A>" in piece:
                cached.add(int(idx))
        with contextlib.suppress(Exception):  # a tokenizer that refuses attributes: recompute next time
            tokenizer._relman_newline_ids = cached
    return cached


def _cut_at_newline(g: Generation, tokenizer: Any) -> Generation:
    """An ONNX generation stopped where the torch path's newline criterion stops (greedy: the
    tokens before it are the same whether or not decoding went on); `total_s` keeps the time of
    the longer run."""
    newline = _newline_ids(tokenizer)
    cut = next((i for i, t in enumerate(g.token_ids) if t in newline), None)
    if cut is None:
        return g
    kept = g.token_ids[: cut + 1]
    eos = tokenizer.eos_token_id
    text = tokenizer.decode([t for t in kept if t != eos], skip_special_tokens=True).split("\n", 1)[0]
    return replace(g, text=text, token_ids=kept, new_tokens=len(kept), stopped="newline")


def _one(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int, stop_at_newline: bool) -> Generation:
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    newline = _newline_ids(tokenizer) if stop_at_newline else set()

    class _StopAtNewline(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            last = int(input_ids[0, -1])
            return torch.tensor([last in newline], device=input_ids.device)

    device = next(model.parameters()).device
    enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    enc.pop("token_type_ids", None)
    enc = {k: v.to(device) for k, v in enc.items()}
    n_prompt = int(enc["input_ids"].shape[1])
    if n_prompt == 0:
        raise EvaluationError("cannot generate from an empty prompt")
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else getattr(model.config, "eos_token_id", None)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    streamer = _FirstToken()
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                             eos_token_id=eos, pad_token_id=pad, streamer=streamer,
                             stopping_criteria=StoppingCriteriaList([_StopAtNewline()]) if newline else None)
    total = time.perf_counter() - t0
    new = [int(t) for t in out[0, n_prompt:].tolist()]
    # generate may pad after EOS in a batch; with one prompt it stops at EOS, which we drop from the text
    shown = [t for t in new if t != eos] if eos is not None else new
    text = tokenizer.decode(shown, skip_special_tokens=True)
    if stop_at_newline and "\n" in text:
        text = text.split("\n", 1)[0]
    ttft = (streamer.first - t0) if streamer.first is not None else total
    stopped = "eos" if eos is not None and new and new[-1] == eos else "newline" if newline and new and \
        new[-1] in newline else "length"
    return Generation(prompt=prompt, text=text, token_ids=new, new_tokens=len(new), ttft_s=ttft, total_s=total,
                      prompt_tokens=n_prompt, engine="torch", stopped=stopped)
