"""Scores computed from model outputs, shared by the adapters (numpy / scikit-learn only).

The adapters turn their outputs into task quality and parent fidelity with these, so the
metric suites in relman/evaluate never branch on the task.
"""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def agreement_and_kl(parent_logits: np.ndarray, child_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row top-1 agreement (bool) and KL(parent || child), over the last axis."""
    lp = log_softmax(parent_logits.astype(np.float64))
    lc = log_softmax(child_logits.astype(np.float64))
    kl = np.sum(np.exp(lp) * (lp - lc), axis=-1)
    return parent_logits.argmax(-1) == child_logits.argmax(-1), kl


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, label_names: list[str]) -> dict[str, float]:
    """accuracy, macro-F1 (over the classes present in labels or predictions, as scikit-learn
    does by default) and per class precision / recall / F1 / support."""
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    out = {"accuracy": float(np.mean(y_true == y_pred)),
           "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0))}
    present = sorted(set(np.unique(y_true).tolist()) | set(np.unique(y_pred).tolist()))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=present, zero_division=0)
    for i, label in enumerate(present):
        name = label_names[label] if label < len(label_names) else str(label)
        out[f"precision/{name}"] = float(p[i])
        out[f"recall/{name}"] = float(r[i])
        out[f"f1/{name}"] = float(f[i])
        out[f"support/{name}"] = float(s[i])
    return out
