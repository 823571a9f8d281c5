"""The in-memory dataset every task adapter and metric suite consumes.

Readers turn files into a `Dataset`; the catalog stores the files (content-hashed) and the
column mapping, so a registered dataset loads back identically in any worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

Kind = Literal["text", "image", "lm", "tokens", "mcq", "qa", "sft"]
SPLITS = ("train", "validation", "test")


@dataclass
class Dataset:
    name: str
    kind: Kind
    sha256: str = ""
    id: int | None = None
    texts: list[str] | None = None          # kind text / lm / tokens (tokens: the words joined by spaces) / sft
    images: np.ndarray | None = None        # kind image: uint8, N x H x W x C
    labels: np.ndarray | None = None        # int64 indices into label_names, or None (unlabelled)
    label_names: list[str] = field(default_factory=list)
    groups: np.ndarray | None = None        # object array of group names (fairness), or None
    words: list[list[str]] | None = None    # kind tokens: each row's words
    tags: list[np.ndarray] | None = None    # kind tokens: int64 per word, indices into label_names
    split: np.ndarray | None = None         # object array of 'train' / 'validation' / 'test', or None
    # kind mcq: {"context", "choices", "gold"} per row; kind qa: {"prompt", "answers"} per row
    # (language-model items: texts holds the context / prompt, so text checks still apply)
    items: list[dict[str, Any]] | None = None
    completions: list[str] | None = None    # kind sft, prompt/completion rows: texts are the prompts
    messages: list[list[dict[str, str]]] | None = None  # kind sft, chat rows: each row's {role, content} turns
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        if self.texts is not None:
            return len(self.texts)
        if self.images is not None:
            return int(self.images.shape[0])
        return 0

    @property
    def has_labels(self) -> bool:
        return self.labels is not None or self.tags is not None

    @property
    def has_groups(self) -> bool:
        return self.groups is not None

    def take(self, index: np.ndarray | list[int]) -> "Dataset":
        """Rows at `index` (a new Dataset sharing names, labels and metadata)."""
        idx = np.asarray(index, dtype=np.int64)
        return replace(
            self,
            texts=[self.texts[i] for i in idx] if self.texts is not None else None,
            images=self.images[idx] if self.images is not None else None,
            labels=self.labels[idx] if self.labels is not None else None,
            groups=self.groups[idx] if self.groups is not None else None,
            words=[self.words[i] for i in idx] if self.words is not None else None,
            tags=[self.tags[i] for i in idx] if self.tags is not None else None,
            split=self.split[idx] if self.split is not None else None,
            items=[self.items[i] for i in idx] if self.items is not None else None,
            completions=[self.completions[i] for i in idx] if self.completions is not None else None,
            messages=[self.messages[i] for i in idx] if self.messages is not None else None,
        )

    def subset(self, split: str | None) -> "Dataset":
        """One split; with no split column the whole dataset stands for every split."""
        if split is None or self.split is None:
            return self
        return self.take(np.flatnonzero(self.split == split))

    def head(self, n: int) -> "Dataset":
        return self.take(np.arange(min(n, len(self))))
