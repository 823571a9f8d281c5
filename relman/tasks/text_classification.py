"""Text classification adapter: tokenise texts, return class logits (N x classes)."""

from __future__ import annotations

from typing import Any

import numpy as np

from relman.data.dataset import Dataset
from relman.tasks.base import Runner

DEFAULT_MAX_LENGTH = 128


def max_length(tokenizer: Any, config: dict[str, Any], seq_len: int | None) -> int:
    """The longest input the model takes: the asked length, capped by the model's positions."""
    limits = [int(x) for x in (config.get("max_position_embeddings"), config.get("n_positions"),
                                getattr(tokenizer, "model_max_length", None)) if x and int(x) < 10**6]
    cap = min(limits) if limits else 512
    return min(int(seq_len), cap) if seq_len else min(DEFAULT_MAX_LENGTH, cap)


def tokenize(tokenizer: Any, config: dict[str, Any], texts: list[str], seq_len: int | None) -> dict[str, np.ndarray]:
    """Pad to the longest text in the batch, or exactly to `seq_len` when one is given (latency
    at a fixed sequence length); always truncate to what the model can take."""
    enc = tokenizer(list(texts), padding="max_length" if seq_len else "longest", truncation=True,
                    max_length=max_length(tokenizer, config, seq_len), return_tensors="np")
    return {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()
            if k in ("input_ids", "attention_mask", "token_type_ids")}


def synthetic_tokens(tokenizer: Any, config: dict[str, Any], batch_size: int, seq_len: int | None,
                     seed: int) -> dict[str, np.ndarray]:
    length = max_length(tokenizer, config, seq_len)
    vocab = int(config.get("vocab_size") or len(tokenizer))
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, size=(batch_size, length), dtype=np.int64)
    out = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    if "token_type_ids" in getattr(tokenizer, "model_input_names", ()):
        out["token_type_ids"] = np.zeros_like(ids)
    return out


class TextClassificationRunner(Runner):
    task = "text-classification"

    def encode(self, ds: Dataset, seq_len: int | None = None) -> dict[str, np.ndarray]:
        return tokenize(self.preprocessor, self.config, ds.texts or [], seq_len)

    def synthetic_inputs(self, batch_size: int, seq_len: int | None, seed: int = 0) -> dict[str, np.ndarray]:
        return synthetic_tokens(self.preprocessor, self.config, batch_size, seq_len, seed)
