"""llama.cpp's K-quant block formats Q4_K and Q6_K, quantised with numpy.

The `gguf` library (0.19) can *de*quantise K-quants but not quantise them, and Q4_K_M needs
both. The byte layouts below are llama.cpp's (`block_q4_K`, `block_q6_K` in ggml-common.h),
read off the library's own dequantisers; `tests/test_gguf.py` checks every block we write by
dequantising it with the library, so a layout mistake cannot pass unnoticed.

The scale choice is the plain one (min/max per 32-value sub-block for Q4_K, the signed
absolute maximum per 16-value sub-block for Q6_K, 6-/8-bit sub-block scales relative to an
FP16 super-block scale), without llama.cpp's iterative least-squares search: the file is the
same format, a little less accurate than llama-quantize's output (measured in the tests'
tolerances).
"""

from __future__ import annotations

import numpy as np

QK_K = 256  # values per super-block
Q4_K_BYTES = 144  # d (f16) + dmin (f16) + 12 bytes of packed 6-bit scales/mins + 128 bytes of nibbles
Q6_K_BYTES = 210  # 128 bytes low nibbles + 64 bytes high 2-bit pairs + 16 int8 scales + d (f16)


def _blocks(rows: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(rows, dtype=np.float32)
    if x.shape[-1] % QK_K:
        raise ValueError(f"K-quants need rows of a multiple of {QK_K} values, not {x.shape[-1]}")
    return x.reshape(-1, QK_K)


def _out_shape(shape: tuple[int, ...], type_size: int) -> tuple[int, ...]:
    return (*shape[:-1], shape[-1] // QK_K * type_size)


def quantize_q4_k(rows: np.ndarray) -> np.ndarray:
    """Q4_K bytes of `rows` (last axis a multiple of 256): value = d*sc*q - dmin*m, q in 0..15."""
    shape = rows.shape
    x = _blocks(rows).reshape(-1, 8, 32)
    n = x.shape[0]
    lo = np.minimum(x.min(axis=-1), 0.0)  # llama.cpp keeps the minimum at or below zero
    hi = x.max(axis=-1)
    scale = (hi - lo) / 15.0  # (n, 8)
    neg_min = -lo
    max_scale = scale.max(axis=-1)
    max_min = neg_min.max(axis=-1)
    d = (max_scale / 63.0).astype(np.float16)
    dmin = (max_min / 63.0).astype(np.float16)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_s = np.where(max_scale > 0, 63.0 / max_scale, 0.0)
        inv_m = np.where(max_min > 0, 63.0 / max_min, 0.0)
    sc = np.clip(np.rint(scale * inv_s[:, None]), 0, 63).astype(np.uint8)
    mn = np.clip(np.rint(neg_min * inv_m[:, None]), 0, 63).astype(np.uint8)
    d_eff = d.astype(np.float32)[:, None] * sc  # the scales as the reader will see them
    m_eff = dmin.astype(np.float32)[:, None] * mn
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(d_eff[..., None] > 0, np.rint((x + m_eff[..., None]) / d_eff[..., None]), 0.0)
    q = np.clip(q, 0, 15).astype(np.uint8)  # (n, 8, 32)
    packed = np.empty((n, 12), dtype=np.uint8)
    packed[:, 0:4] = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    packed[:, 4:8] = mn[:, :4] | ((mn[:, 4:] >> 4) << 6)
    packed[:, 8:12] = (sc[:, 4:] & 0x0F) | ((mn[:, 4:] & 0x0F) << 4)
    qs = (q[:, 0::2, :] | (q[:, 1::2, :] << 4)).reshape(n, 128)  # sub-blocks 2c / 2c+1 share chunk c
    out = np.concatenate([d.reshape(n, 1).view(np.uint8), dmin.reshape(n, 1).view(np.uint8), packed, qs], axis=1)
    return out.reshape(_out_shape(shape, Q4_K_BYTES))


def quantize_q6_k(rows: np.ndarray) -> np.ndarray:
    """Q6_K bytes of `rows` (last axis a multiple of 256): value = d*scale*(q-32), q in 0..63."""
    shape = rows.shape
    x = _blocks(rows).reshape(-1, 16, 16)
    n = x.shape[0]
    at = np.abs(x).argmax(axis=-1)[..., None]
    signed_max = np.take_along_axis(x, at, axis=-1)[..., 0]  # (n, 16)
    scale = signed_max / -32.0  # the extreme value lands on q-32 = -32, the full range
    j = np.abs(scale).argmax(axis=-1)[:, None]
    max_scale = np.take_along_axis(scale, j, axis=-1)[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        iscale = np.where(max_scale != 0, -128.0 / max_scale, 0.0)
        d = np.where(iscale != 0, 1.0 / iscale, 0.0).astype(np.float16)
    ls = np.clip(np.rint(iscale[:, None] * scale), -128, 127).astype(np.int8)
    d_eff = d.astype(np.float32)[:, None] * ls.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(d_eff[..., None] != 0, np.rint(x / d_eff[..., None]), 0.0)
    q = (np.clip(q, -32, 31) + 32).astype(np.uint8).reshape(n, 2, 2, 64)  # [half][low-nibble shift][64]
    ql = ((q[:, :, 0, :] & 0x0F) | ((q[:, :, 1, :] & 0x0F) << 4)).reshape(n, 128)
    hi = (q.reshape(n, 2, 4, 32) >> 4) & 0x03  # [half][2-bit shift][32]
    qh = (hi[:, :, 0] | (hi[:, :, 1] << 2) | (hi[:, :, 2] << 4) | (hi[:, :, 3] << 6)).reshape(n, 64)
    out = np.concatenate([ql, qh, ls.view(np.uint8), d.reshape(n, 1).view(np.uint8)], axis=1)
    return out.reshape(_out_shape(shape, Q6_K_BYTES))
