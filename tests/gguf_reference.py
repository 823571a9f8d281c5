"""A numpy forward pass of a GGUF Llama / Qwen2 file in llama.cpp's conventions (test helper).

llama-cpp-python has no wheel here and llama.cpp's build does not fit the test machine, so
the tests check the conventions a runtime relies on with this reference instead: weights read
and dequantised by the `gguf` library only, hyper-parameters from the file's metadata, RoPE
rotating adjacent pairs ("norm" mode, why relman permutes q/k rows for llama) or halves
("neox" mode, qwen2), grouped KV heads, RMSNorm, SwiGLU, the output matrix or the tied
embedding. Its logits must match transformers' on the source model; a wrong tensor name,
permutation, head count, rope base or norm epsilon in the file makes them differ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class GGUFReference:
    def __init__(self, path: Path | str) -> None:
        import gguf

        reader = gguf.GGUFReader(str(path))
        self.meta = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.")}
        self.arch = self.meta["general.architecture"]
        a = self.arch
        self.n_layer = int(self.meta[f"{a}.block_count"])
        self.n_head = int(self.meta[f"{a}.attention.head_count"])
        self.n_kv = int(self.meta[f"{a}.attention.head_count_kv"])
        self.eps = float(self.meta[f"{a}.attention.layer_norm_rms_epsilon"])
        self.base = float(self.meta[f"{a}.rope.freq_base"])
        self.rope_dim = int(self.meta[f"{a}.rope.dimension_count"])
        self.w: dict[str, np.ndarray] = {}
        for t in reader.tensors:
            values = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32)
            self.w[t.name] = values.reshape(tuple(int(d) for d in reversed(t.shape)))
        self.neox = self.arch == "qwen2"

    def _norm(self, x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * weight

    def _rope(self, x: np.ndarray) -> np.ndarray:  # x: (T, heads, head_dim)
        T, _, d = x.shape
        inv = self.base ** (-np.arange(0, self.rope_dim, 2, dtype=np.float64) / self.rope_dim)
        ang = np.arange(T)[:, None] * inv[None, :]  # (T, d/2)
        cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        if self.neox:  # pairs (i, i + d/2)
            a, b = x[..., : d // 2], x[..., d // 2:]
            return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1).astype(np.float32)
        a, b = x[..., 0::2], x[..., 1::2]  # adjacent pairs (2i, 2i+1)
        out = np.empty_like(x)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
        return out

    def logits(self, ids: list[int]) -> np.ndarray:
        w = self.w
        x = w["token_embd.weight"][np.asarray(ids)]
        T = len(ids)
        mask = np.triu(np.full((T, T), -np.inf, dtype=np.float32), 1)
        for i in range(self.n_layer):
            p = f"blk.{i}."
            h = self._norm(x, w[p + "attn_norm.weight"])
            q = h @ w[p + "attn_q.weight"].T + w.get(p + "attn_q.bias", 0)
            k = h @ w[p + "attn_k.weight"].T + w.get(p + "attn_k.bias", 0)
            v = h @ w[p + "attn_v.weight"].T + w.get(p + "attn_v.bias", 0)
            d = q.shape[-1] // self.n_head
            q = self._rope(q.reshape(T, self.n_head, d))
            k = self._rope(k.reshape(T, self.n_kv, d))
            v = v.reshape(T, self.n_kv, d)
            rep = self.n_head // self.n_kv
            k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
            att = np.einsum("thd,shd->hts", q, k) / np.sqrt(d) + mask
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            o = np.einsum("hts,shd->thd", att, v).reshape(T, -1)
            x = x + o @ w[p + "attn_output.weight"].T
            h = self._norm(x, w[p + "ffn_norm.weight"])
            g = h @ w[p + "ffn_gate.weight"].T
            x = x + ((g / (1 + np.exp(-g))) * (h @ w[p + "ffn_up.weight"].T)) @ w[p + "ffn_down.weight"].T
        x = self._norm(x, w["output_norm.weight"])
        return x @ w.get("output.weight", w["token_embd.weight"]).T

    def nll(self, ids: list[int]) -> tuple[float, int]:
        """Summed negative log-likelihood of ids[1:] given the prefix, and the token count."""
        lg = self.logits(ids)[:-1].astype(np.float64)
        lg -= lg.max(-1, keepdims=True)
        logp = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
        return float(-logp[np.arange(len(ids) - 1), ids[1:]].sum()), len(ids) - 1

    def greedy(self, ids: list[int], n: int) -> list[int]:
        out = list(ids)
        for _ in range(n):
            out.append(int(self.logits(out)[-1].argmax()))
        return out[len(ids):]
