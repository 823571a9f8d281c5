"""Causal language modelling adapter: next-token logits (N x T x vocab) and per-token losses.

`token_losses` gives the negative log-likelihood of each next token (N x T-1), NaN where the
target or its context is padding, so perplexity = exp(nanmean) over a whole dataset."""

from __future__ import annotations

import numpy as np

from relman.data.dataset import Dataset
from relman.tasks.base import Batch, Runner
from relman.tasks.text_classification import synthetic_tokens, tokenize


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


class CausalLMRunner(Runner):
    task = "causal-lm"
    kinds = ("lm", "text")

    def encode(self, ds: Dataset, seq_len: int | None = None) -> dict[str, np.ndarray]:
        tok = self.preprocessor
        tok.padding_side = "right"
        enc = tokenize(tok, self.config, ds.texts or [], seq_len)
        enc.pop("token_type_ids", None)
        return enc

    def synthetic_inputs(self, batch_size: int, seq_len: int | None, seed: int = 0) -> dict[str, np.ndarray]:
        out = synthetic_tokens(self.preprocessor, self.config, batch_size, seq_len, seed)
        out.pop("token_type_ids", None)
        return out

    @staticmethod
    def target_mask(batch: Batch) -> np.ndarray:
        """Which next-token positions count: both the context token and the target are real."""
        mask = batch.host["attention_mask"].astype(bool)
        return mask[:, 1:] & mask[:, :-1]

    def token_losses(self, batch: Batch, logits: np.ndarray) -> np.ndarray:
        ids = batch.host["input_ids"]
        logp = log_softmax(logits[:, :-1].astype(np.float64))
        nll = -np.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0]
        return np.where(self.target_mask(batch), nll, np.nan)
