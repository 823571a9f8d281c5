"""Causal language modelling adapter: next-token logits (N x T x vocab) and per-token losses.

`token_losses` gives the negative log-likelihood of each next token (N x T-1), NaN where the
target or its context is padding, so perplexity = exp(nanmean) over a whole dataset."""

from __future__ import annotations

from typing import Callable

import numpy as np

from relman.data.dataset import Dataset
from relman.tasks.base import Batch, Runner
from relman.tasks.scores import agreement_and_kl, log_softmax
from relman.tasks.text_classification import synthetic_tokens, tokenize

__all__ = ["CausalLMRunner", "log_softmax"]


class CausalLMRunner(Runner):
    task = "causal-lm"

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
        """NLL = logsumexp(logits) - logit[target], one sequence at a time in float64: a float64
        log-softmax of a whole batch over a 150k vocabulary is several GB (it was 4x the weights
        of a 0.5 B LM in benchmarks/bench_half_billion.py); a row is T x vocab."""
        ids = batch.host["input_ids"]
        nll = np.empty(ids[:, 1:].shape, dtype=np.float64)
        for i in range(len(ids)):
            z = logits[i, :-1].astype(np.float64)
            z -= z.max(axis=-1, keepdims=True)
            target = z[np.arange(len(z)), ids[i, 1:]]
            np.exp(z, out=z)
            nll[i] = np.log(z.sum(axis=-1)) - target
        return np.where(self.target_mask(batch), nll, np.nan)

    def quality(self, ds: Dataset, batch_size: int,
                on_batch: Callable[[int, int], None] | None = None) -> dict[str, float]:
        """`perplexity` = exp(mean next-token NLL over all non-padding tokens), `loss` (that
        mean, nats/token) and `tokens` (how many were scored). No labels needed."""
        nll_sum, count, done = 0.0, 0, 0
        for batch in self.batches(ds, batch_size):
            losses = self.token_losses(batch, self.predict(batch))
            nll_sum += float(np.nansum(losses))
            count += int(np.sum(~np.isnan(losses)))
            done += batch.size
            if on_batch is not None:
                on_batch(done, len(ds))
        mean = nll_sum / max(count, 1)
        return {"perplexity": float(np.exp(mean)), "loss": mean, "tokens": float(count)}

    def fidelity(self, batch: Batch, out: np.ndarray, parent_out: np.ndarray) -> dict[str, np.ndarray]:
        """Agreement and KL per next-token position, over real (non-padding) tokens only."""
        mask = self.target_mask(batch)
        agree, kl = agreement_and_kl(parent_out[:, :-1], out[:, :-1])
        return {"agreement": agree[mask], "kl_div": kl[mask]}
