"""Greedy generation for ONNX causal-LM versions, with a real key/value cache.

Three engines, chosen per folder (`engine="auto"`):

- **onnxruntime-genai** for a folder ONNX Runtime GenAI's builder made (it has
  `genai_config.json`): `og.Model` / `og.Generator`, the runtime the graph was written for
  (fused GroupQueryAttention over its own cache buffers). Threads go in through a config
  overlay, so a comparison with relman's loop runs on the same threads.
- **relman-onnx-kv**: relman's own loop for any graph with `past_key_values.*` inputs and
  `present.*` outputs (relman's exporter with `with_past`, which the `onnx-export` recipe does
  for causal LMs by default; also the builder's graphs). The prompt runs once with an empty
  past; each later step feeds only the new token, its position and the previous step's
  `present.*` as the past.
- **relman-onnx-recompute**: graphs without a cache (relman's exports made before the cache,
  INT4 / FP16 children derived from them): each step runs the whole sequence again. Correct
  but quadratic; the record's `engine` says so, so a slow figure is never mistaken for the
  cached loop's.

Every prompt runs alone (batch 1): no padding, so the tokens are exactly the torch model's
greedy ones, and each prompt's time to first token is its own. Prompts are encoded with the
folder's Hugging Face tokenizer, as the torch path does, so token ids compare one to one.
Returns `relman.tasks.generation_types.Generation` records.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from relman.errors import EvaluationError
from relman.tasks.backends import cache_dims, empty_cache, is_cache_input
from relman.tasks.generation_types import Generation

ENGINES = ("auto", "genai", "relman")
GENAI_CONFIG = "genai_config.json"


def is_genai_folder(folder: Path) -> bool:
    """A folder ONNX Runtime GenAI's builder wrote (its generator can run it)."""
    return (Path(folder) / GENAI_CONFIG).is_file()


def eos_ids(folder: Path) -> set[int]:
    """The token ids that end a generation: generation_config.json, else config.json, else
    genai_config.json's."""
    folder = Path(folder)
    for name, path in (("generation_config.json", ()), ("config.json", ()), (GENAI_CONFIG, ("model",))):
        f = folder / name
        if not f.is_file():
            continue
        data: Any = json.loads(f.read_text(encoding="utf-8"))
        for key in path:
            data = data.get(key, {})
        eos = data.get("eos_token_id")
        if eos is not None:
            return {int(e) for e in (eos if isinstance(eos, list) else [eos])}
    return set()


def load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise EvaluationError(f"{folder}: no tokenizer to encode the prompts with ({str(e).splitlines()[0][:160]})") \
            from e


def generate_onnx(folder: Path, prompts: Sequence[str], *, max_new_tokens: int, engine: str = "auto",
                  device: str = "cpu", threads: int | None = None, tokenizer: Any = None,
                  on_prompt: Callable[[int, int], None] | None = None, ignore_eos: bool = False,
                  generator: Any = None) -> list[Generation]:
    """Greedy continuations of `prompts` by the ONNX causal LM in `folder` (see the module
    docstring for the engines). `max_new_tokens` bounds each; a generation also ends at an EOS
    token (which is kept in `token_ids`, as transformers' `generate` keeps it) unless
    `ignore_eos` (timing: every generation `max_new_tokens` long). `generator` reuses an open
    `OnnxLoop` / `GenaiGenerator` (one model load for many calls)."""
    if engine not in ENGINES:
        raise EvaluationError(f"engine must be one of {', '.join(ENGINES)}, not '{engine}'")
    if max_new_tokens < 1:
        raise EvaluationError("max_new_tokens must be at least 1")
    folder = Path(folder)
    tok = tokenizer if tokenizer is not None else load_tokenizer(folder)
    use_genai = engine == "genai" or (engine == "auto" and is_genai_folder(folder))
    gen = generator if generator is not None else \
        GenaiGenerator(folder, device, threads) if use_genai else OnnxLoop(folder, device, threads)
    out = []
    for i, prompt in enumerate(prompts):
        ids = [int(t) for t in tok(prompt)["input_ids"]]
        if not ids:
            raise EvaluationError(f"prompt {i} encodes to no tokens")
        new, ttft, total, stopped = gen.generate(ids, max_new_tokens, ignore_eos)
        out.append(Generation(prompt=prompt, text=tok.decode(new, skip_special_tokens=True), token_ids=new,
                              new_tokens=len(new), ttft_s=ttft, total_s=total, prompt_tokens=len(ids),
                              engine=gen.engine, stopped=stopped))
        if on_prompt is not None:
            on_prompt(i + 1, len(prompts))
    return out


class OnnxLoop:
    """relman's greedy loop over an onnxruntime session (cached when the graph has a cache)."""

    def __init__(self, folder: Path, device: str = "cpu", threads: int | None = None, session: Any = None) -> None:
        from relman.modelio.loading import onnx_session

        self.session = session if session is not None else onnx_session(folder, device=device, threads=threads)
        self.eos = eos_ids(folder)
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.types = {n: _numpy_type(i.type) for n, i in inputs.items()}
        self.past = [n for n in inputs if is_cache_input(n)]
        outputs = [o.name for o in self.session.get_outputs()]
        self.logits = "logits" if "logits" in outputs else outputs[0]
        self.present = [_present_name(n, outputs) for n in self.past]
        if self.past and None in self.present:
            missing = [p for p, q in zip(self.past, self.present) if q is None]
            raise EvaluationError(f"{folder}: the graph takes {missing[0]} but returns no present output for it")
        self.past_shapes = {n: list(inputs[n].shape) for n in self.past}
        self.dims = cache_dims(folder) if self.past else {}
        unknown = set(inputs) - {"input_ids", "attention_mask", "position_ids"} - set(self.past)
        if unknown:
            raise EvaluationError(f"{folder}: the graph expects inputs {', '.join(sorted(unknown))}, which "
                                  "greedy generation cannot provide")
        self.engine = "relman-onnx-kv" if self.past else "relman-onnx-recompute"

    def _feeds(self, ids: list[int], total: int, past: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t = self.types
        feeds = {"input_ids": np.asarray([ids], dtype=t["input_ids"])}
        if "attention_mask" in t:
            feeds["attention_mask"] = np.ones((1, total), dtype=t["attention_mask"])
        if "position_ids" in t:
            feeds["position_ids"] = np.arange(total - len(ids), total, dtype=t["position_ids"])[None, :]
        feeds.update(past)
        return feeds

    def generate(self, prompt: list[int], max_new: int, ignore_eos: bool = False) -> tuple[list[int], float, float, str]:
        """(new token ids, seconds to the first, seconds to the last, "eos" | "length");
        `ignore_eos` runs to `max_new` (timing: every call the same length)."""
        run, logits_name = self.session.run, self.logits
        wanted = [logits_name] + [p for p in self.present if p]
        past = {n: empty_cache(self.past_shapes[n], 1, self.types[n], self.dims) for n in self.past}
        seq = list(prompt)
        step_ids = list(prompt)
        new: list[int] = []
        t0 = time.perf_counter()
        ttft = 0.0
        stopped = "length"
        while len(new) < max_new:
            outs = run(wanted, self._feeds(step_ids, len(seq), past))
            nxt = int(np.argmax(outs[0][0, -1]))
            new.append(nxt)
            seq.append(nxt)
            if len(new) == 1:
                ttft = time.perf_counter() - t0
            if nxt in self.eos and not ignore_eos:
                stopped = "eos"
                break
            if self.past:
                past = dict(zip(self.past, outs[1:]))
                step_ids = [nxt]
            else:
                step_ids = list(seq)
        return new, ttft, time.perf_counter() - t0, stopped


class GenaiGenerator:
    """onnxruntime-genai's own generator over a builder-made folder, greedy."""

    engine = "onnxruntime-genai"

    def __init__(self, folder: Path, device: str = "cpu", threads: int | None = None) -> None:
        try:
            import onnxruntime_genai as og
        except ImportError as e:
            raise EvaluationError("onnxruntime-genai is not installed here, so this builder-made version "
                                  "cannot run through its generator (pip install onnxruntime-genai)") from e
        if not is_genai_folder(folder):
            raise EvaluationError(f"{folder} has no {GENAI_CONFIG}: ONNX Runtime GenAI's generator cannot run it")
        self.og = og
        config = og.Config(str(folder))
        config.clear_providers()
        if device.startswith("cuda"):
            config.append_provider("cuda")
        if threads:
            config.overlay(json.dumps({"model": {"decoder": {"session_options": {
                "intra_op_num_threads": int(threads), "inter_op_num_threads": 1}}}}))
        self.model = og.Model(config)
        self.eos = eos_ids(folder)

    def generate(self, prompt: list[int], max_new: int, ignore_eos: bool = False) -> tuple[list[int], float, float, str]:
        og = self.og
        params = og.GeneratorParams(self.model)
        length = len(prompt) + max_new
        options: dict[str, Any] = {"do_sample": False, "max_length": length, "batch_size": 1}
        if ignore_eos:
            options["min_length"] = length
        params.set_search_options(**options)
        new: list[int] = []
        t0 = time.perf_counter()
        ttft = 0.0
        stopped = "length"
        gen = og.Generator(self.model, params)
        gen.append_tokens(np.asarray([prompt], dtype=np.int32))
        while not gen.is_done() and len(new) < max_new:
            gen.generate_next_token()
            nxt = int(gen.get_next_tokens()[0])
            new.append(nxt)
            if len(new) == 1:
                ttft = time.perf_counter() - t0
            if nxt in self.eos and not ignore_eos:
                stopped = "eos"
                break
        total = time.perf_counter() - t0
        del gen
        return new, ttft, total, stopped


def _present_name(past: str, outputs: list[str]) -> str | None:
    """The output that carries `past`'s next value: present.<i>.key for past_key_values.<i>.key
    (relman's, Optimum's and the builder's convention), present_<...> for past_<...>."""
    for old, new in (("past_key_values", "present"), ("past.", "present."), ("past_", "present_")):
        if past.startswith(old):
            name = new + past[len(old):]
            if name in outputs:
                return name
    return None


_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32,
          "tensor(float16)": np.float16, "tensor(double)": np.float64, "tensor(bool)": np.bool_}


def _numpy_type(ort_type: str) -> Any:
    return _TYPES.get(ort_type, np.float32)
