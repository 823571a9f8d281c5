"""The record one greedy generation produces, shared by the torch path
(`relman.tasks.generation.generate_greedy`) and the ONNX path
(`relman.tasks.onnx_generation.generate_onnx`), so suites, views and benchmarks read one shape
whatever ran the model. Plain data (JSON-able through `as_dict`), no heavy imports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Generation:
    """One prompt's greedy continuation.

    `token_ids` are the new tokens only (the prompt's are `prompt_tokens` long); `text` is
    their decoding without special tokens. `ttft_s` is the time from the call to the first new
    token (the prompt's forward pass plus one pick); `total_s` the time to the last one; so the
    decode rate is (new_tokens - 1) / (total_s - ttft_s). `engine` says what ran it
    ("torch", "relman-onnx-kv", "relman-onnx-recompute", "onnxruntime-genai")."""

    prompt: str
    text: str
    token_ids: list[int]
    new_tokens: int
    ttft_s: float
    total_s: float
    prompt_tokens: int = 0
    engine: str = ""
    stopped: str = "length"  # "eos" when the model ended it, "newline" (stop_at_newline), "length" at max_new_tokens
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def decode_tokens_per_s(self) -> float | None:
        """Tokens per second after the first one (None with fewer than two new tokens)."""
        if self.new_tokens < 2 or self.total_s <= self.ttft_s:
            return None
        return (self.new_tokens - 1) / (self.total_s - self.ttft_s)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    to_json = as_dict  # the name relman.evaluate.lm_generate uses
