"""Feature extraction adapter: sentence embeddings = attention-masked mean of the last hidden
state, L2-normalised (the sentence-transformers convention), computed in numpy so PyTorch and
ONNX versions are pooled by identical code."""

from __future__ import annotations

import numpy as np

from relman.data.dataset import Dataset
from relman.tasks.base import Batch, Runner
from relman.tasks.text_classification import synthetic_tokens, tokenize


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask.astype(np.float32)[..., None]
    summed = (hidden * m).sum(axis=1)
    pooled = summed / np.clip(m.sum(axis=1), 1e-9, None)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return pooled / np.clip(norms, 1e-12, None)


class FeatureExtractionRunner(Runner):
    task = "feature-extraction"

    def encode(self, ds: Dataset, seq_len: int | None = None) -> dict[str, np.ndarray]:
        return tokenize(self.preprocessor, self.config, ds.texts or [], seq_len)

    def synthetic_inputs(self, batch_size: int, seq_len: int | None, seed: int = 0) -> dict[str, np.ndarray]:
        return synthetic_tokens(self.preprocessor, self.config, batch_size, seq_len, seed)

    def predict(self, batch: Batch) -> np.ndarray:
        """Normalised sentence embeddings (N x hidden)."""
        return mean_pool(self.backend.run(batch.native), batch.host["attention_mask"])

    def fidelity(self, batch: Batch, out: np.ndarray, parent_out: np.ndarray) -> dict[str, np.ndarray]:
        """Cosine similarity of each row's (normalised) embedding with the parent's."""
        return {"cosine": np.sum(out * parent_out, axis=1)}

    def summarise_fidelity(self, parts: dict[str, np.ndarray]) -> dict[str, float]:
        """`cosine` (the mean) and `cosine_min` (the worst row)."""
        c = parts["cosine"]
        return {"cosine": float(c.mean()), "cosine_min": float(c.min())}
