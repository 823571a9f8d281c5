"""Token classification (named entities) adapter: a BIO tag for every word of a sentence.

Words are tokenised as pre-split words (`is_split_into_words`), so each word may become several
sub-tokens; the word's tag is read from its FIRST sub-token, the usual convention for
BERT-style taggers. `word_index` (kept with the batch's host arrays, never fed to the model)
records which word each first sub-token starts, -1 elsewhere (special tokens, padding, later
sub-tokens). A word cut off by the model's length limit is predicted `O`, so truncation costs
recall instead of silently shrinking the test set.

Quality is entity-level precision / recall / F1 (`relman.tasks.entity_f1`, seqeval's default
rules) plus `token_accuracy` over words; fidelity is the agreement (and KL) of the per-word
tag distributions with the parent's. PyTorch and ONNX versions go through this same code.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from relman.data.dataset import Dataset
from relman.errors import EvaluationError
from relman.tasks.base import Batch, Runner
from relman.tasks.entity_f1 import entity_scores
from relman.tasks.scores import agreement_and_kl
from relman.tasks.text_classification import max_length, synthetic_tokens


class TokenClassificationRunner(Runner):
    task = "token-classification"

    @staticmethod
    def words_of(ds: Dataset) -> list[list[str]]:
        """The words of each row: the dataset's own tokens, or its texts split at whitespace."""
        if ds.words is not None:
            return ds.words
        return [t.split() or [t] for t in ds.texts or []]

    def encode(self, ds: Dataset, seq_len: int | None = None) -> dict[str, np.ndarray]:
        tok = self.preprocessor
        if not getattr(tok, "is_fast", False):
            raise EvaluationError(f"{self.folder.name}: token classification needs a fast tokenizer (it maps "
                                  "sub-tokens back to words); this model ships a slow one")
        words = self.words_of(ds)
        enc = tok(words, is_split_into_words=True, padding="max_length" if seq_len else "longest", truncation=True,
                  max_length=max_length(tok, self.config, seq_len), return_tensors="np")
        out = {k: np.asarray(enc[k], dtype=np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")
               if k in enc}
        first = np.full(out["input_ids"].shape, -1, dtype=np.int64)
        for i in range(len(words)):
            previous = None
            for t, w in enumerate(enc.word_ids(i)):
                if w is not None and w != previous:
                    first[i, t] = w
                previous = w
        out["word_index"] = first
        return out

    def synthetic_inputs(self, batch_size: int, seq_len: int | None, seed: int = 0) -> dict[str, np.ndarray]:
        return synthetic_tokens(self.preprocessor, self.config, batch_size, seq_len, seed)

    # -- words <-> tags ----------------------------------------------------------------------------
    def word_predictions(self, batch: Batch, logits: np.ndarray, n_words: list[int]) -> list[np.ndarray]:
        """For each row, the model's class index for every word (-1: the word was truncated)."""
        index = batch.host["word_index"]
        best = logits.argmax(axis=-1)
        out = []
        for i, n in enumerate(n_words):
            pred = np.full(n, -1, dtype=np.int64)
            at = np.flatnonzero(index[i] >= 0)
            pred[index[i, at]] = best[i, at]
            out.append(pred)
        return out

    def predicted_tag_names(self, ds: Dataset) -> list[str]:
        """The tag each model output index stands for; a clear error for dataset tags the model
        lacks. A model whose labels are the generic LABEL_i is read by position."""
        model_names = self.label_names
        if all(n == f"LABEL_{i}" for i, n in enumerate(model_names)):
            if len(ds.label_names) > len(model_names):
                raise EvaluationError(f"dataset '{ds.name}' has {len(ds.label_names)} tags but the model predicts "
                                      f"only {len(model_names)}")
            return [str(n) for n in ds.label_names] + model_names[len(ds.label_names):]
        used = {ds.label_names[int(t)] for tags in ds.tags or [] for t in np.unique(tags)}
        missing = sorted(used - set(model_names))
        if missing:
            raise EvaluationError(f"dataset '{ds.name}' has tags the model does not know: {', '.join(missing[:5])} "
                                  f"(model labels: {', '.join(model_names[:10])})")
        return model_names

    # -- scores ------------------------------------------------------------------------------------
    def quality(self, ds: Dataset, batch_size: int,
                on_batch: Callable[[int, int], None] | None = None) -> dict[str, float]:
        """Entity precision / recall / F1 (micro, and per entity type) and word-level tag accuracy."""
        if ds.tags is None:
            raise EvaluationError(f"dataset '{ds.name}' has no token tags (register a CoNLL file), so entity F1 "
                                  "cannot be scored")
        names = self.predicted_tag_names(ds)
        outside = "O" if "O" in names else names[0]
        gold: list[list[str]] = []
        predicted: list[list[str]] = []
        for start in range(0, len(ds), batch_size):
            rows = ds.take(np.arange(start, min(start + batch_size, len(ds))))
            batch = self.prepare(rows)
            per_word = self.word_predictions(batch, self.predict(batch), [len(t) for t in rows.tags or []])
            for tags, pred in zip(rows.tags or [], per_word):
                gold.append([str(ds.label_names[int(t)]) for t in tags])
                predicted.append([names[int(k)] if k >= 0 else outside for k in pred])
            if on_batch is not None:
                on_batch(min(start + batch_size, len(ds)), len(ds))
        n_words = sum(len(g) for g in gold)
        correct = sum(a == b for g, p in zip(gold, predicted) for a, b in zip(g, p))
        return {**entity_scores(gold, predicted), "token_accuracy": correct / max(n_words, 1),
                "words": float(n_words)}

    def fidelity(self, batch: Batch, out: np.ndarray, parent_out: np.ndarray) -> dict[str, np.ndarray]:
        """Agreement and KL of the tag distributions at each word (its first sub-token)."""
        words = batch.host["word_index"] >= 0
        agree, kl = agreement_and_kl(parent_out, out)
        return {"agreement": agree[words], "kl_div": kl[words]}
