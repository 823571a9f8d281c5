"""The per-weight INT4 algorithms of `int4-weight-only` (`algo=rtn|k_quant|hqq|gptq`), each a
function of one FP32 weight [K, N] (and, for GPTQ, the Hessian of that weight's input), so the
streaming quantiser (relman.compress.quantize.int4_stream) can still hold one weight at a time.

All four return the bytes ONNX Runtime's `MatMulNBits` reads (blocks of `block` weights along K,
the input dimension; nibbles packed low first), and use onnxruntime's own implementations (GPTQ excepted), so a child equals what
`MatMulNBitsQuantizer` with the matching config would write for that weight:
- rtn: `quantize_matmul_4bits` / `_8bits` (the kernel behind the default config), symmetric
  (zero point 8 implied) or asymmetric (a 4-bit zero point per block).
- k_quant: llama.cpp's K-quant scale search (`quant_tensor_k_quant_cpu`, what
  `KQuantWeightOnlyQuantConfig` runs): per block, 20 candidate scales weighted towards the large
  weights, least-squares scale and minimum; always asymmetric.
- hqq: half-quadratic quantisation (`HQQWeightOnlyQuantizer.quantize_internal`, PyTorch): a
  proximal solver tunes each block's zero point to minimise an lp error (p = 0.7) of the rounded
  weight; asymmetric, and its zero points are floats (so a tied embedding cannot share them:
  GatherBlockQuantized takes integer zero points only).
- gptq: GPTQ, the algorithm `GPTQWeightOnlyQuantConfig` names: columns are rounded one by one
  along K and each one's error is pushed onto the not yet rounded ones through the inverse
  Hessian H = 2/n sum x x^T of the layer's calibration inputs. Written here (see `gptq`) because
  onnxruntime's version re-rounds its result.
`bits=8` (mixed-precision layers) is always RTN with ORT's 8-bit kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

ALGOS = ("rtn", "k_quant", "hqq", "gptq")
ASYMMETRIC_ONLY = ("k_quant", "hqq")  # their scale searches fit a minimum; `symmetric` does not apply


@dataclass
class PackedWeight:
    """One weight as MatMulNBits inputs: B [N, k_blocks, block*bits/8] uint8, scales [N, k_blocks]
    float32, zero points (None: symmetric; uint8 packed [N, ceil(k_blocks*bits/8)]; or float32
    [N, k_blocks] for HQQ)."""

    packed: np.ndarray
    scales: np.ndarray
    zeros: np.ndarray | None
    bits: int
    block: int

    @property
    def integer_zeros(self) -> bool:
        return self.zeros is None or self.zeros.dtype == np.uint8


def _blocks(k: int, block: int) -> int:
    return (k + block - 1) // block


def _pad(w: np.ndarray, block: int) -> np.ndarray:
    k = w.shape[0]
    kp = _blocks(k, block) * block
    return np.pad(w, ((0, kp - k), (0, 0))) if kp != k else w


def pack_levels(q: np.ndarray, bits: int, block: int) -> np.ndarray:
    """Integer levels [N, K_padded] (0..2^bits-1) -> MatMulNBits' B [N, k_blocks, block*bits/8]."""
    n, kp = q.shape
    q = q.astype(np.uint8)
    if bits == 4:
        q = q[:, ::2] | (q[:, 1::2] << 4)
    return np.ascontiguousarray(q.reshape(n, kp // block, block * bits // 8))


def pack_zero_points(z: np.ndarray, bits: int) -> np.ndarray:
    """uint8 zero points [N, k_blocks] -> MatMulNBits' packed [N, ceil(k_blocks*bits/8)]."""
    z = z.astype(np.uint8)
    if bits == 8:
        return np.ascontiguousarray(z)
    if z.shape[1] % 2:
        z = np.pad(z, ((0, 0), (0, 1)), constant_values=8)
    return np.ascontiguousarray(z[:, ::2] | (z[:, 1::2] << 4))


def rtn(w: np.ndarray, block: int, symmetric: bool, bits: int = 4) -> PackedWeight:
    """Round to nearest with onnxruntime's blockwise kernel (bytes equal MatMulNBitsQuantizer's)."""
    from onnxruntime.capi._pybind_state import (
        quantize_matmul_4bits,
        quantize_matmul_8bits,
    )

    k, n = w.shape
    w = _pad(np.ascontiguousarray(w, dtype=np.float32), block)
    kb = _blocks(k, block)
    packed = np.zeros((n, kb, block * bits // 8), dtype=np.uint8)
    scales = np.zeros((n, kb), dtype=np.float32)
    zeros = np.zeros((n, (kb * bits + 7) // 8), dtype=np.uint8)
    kernel = quantize_matmul_8bits if bits == 8 else quantize_matmul_4bits
    kernel(packed, w, scales, zeros, block, n, k, symmetric)
    return PackedWeight(packed, scales, None if symmetric else zeros, bits, block)


def k_quant(w: np.ndarray, block: int) -> PackedWeight:
    from onnxruntime.quantization.neural_compressor.weight_only import (
        quant_tensor_k_quant_cpu,
    )

    k, n = w.shape
    wt = np.ascontiguousarray(_pad(w.astype(np.float32), block).T)  # [N, Kp]
    q, scale, zp = quant_tensor_k_quant_cpu(wt, 4, block)  # per block rows: [N*kb, block], [N*kb, 1]
    kb = _blocks(k, block)
    return PackedWeight(pack_levels(q.reshape(n, kb * block), 4, block),
                        scale.reshape(n, kb).astype(np.float32), pack_zero_points(zp.reshape(n, kb), 4), 4, block)


def hqq(w: np.ndarray, block: int) -> PackedWeight:
    import torch
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        HQQWeightOnlyQuantConfig,
        HQQWeightOnlyQuantizer,
    )

    k, n = w.shape
    quantizer = HQQWeightOnlyQuantizer(HQQWeightOnlyQuantConfig(block_size=block, bits=4))
    with torch.no_grad():
        q, scale, zero = quantizer.quantize_internal(torch.from_numpy(np.ascontiguousarray(w.T, dtype=np.float32)),
                                                     bits=4, group_size=block)
    kb = _blocks(k, block)
    return PackedWeight(pack_levels(q.numpy().reshape(n, kb * block), 4, block),
                        scale.numpy().reshape(n, kb).astype(np.float32),
                        zero.numpy().reshape(n, kb).astype(np.float32), 4, block)


def gptq(w: np.ndarray, hessian: np.ndarray, block: int, symmetric: bool, *, percdamp: float = 0.01,
         lazy: int = 128) -> PackedWeight:
    """GPTQ (Frantar et al. 2022) on one weight [K, N]: the reference algorithm (lazy batches of
    columns, damped inverse-Hessian Cholesky, a group's scale taken from its error-updated
    weights when the sweep reaches it), written here so the levels, scales and zero points it
    rounded to are the ones stored. (onnxruntime's `gptq` returns the rounded weights in float and
    re-quantises them with fresh min/max scales, which re-rounds them: on a random 96x40 layer
    calibrated on 5 inputs its error on those inputs was 0.095 against RTN's 0.087; this one's 0.015.)"""
    k, n = w.shape
    maxq = 15
    W = np.array(w, dtype=np.float64).T  # [N, K]: rows are output channels, the sweep runs over K
    H = np.array(hessian, dtype=np.float64)
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H[np.diag_indices(k)] += percdamp * float(np.mean(np.diag(H)))
    Hinv = np.linalg.cholesky(np.linalg.inv(H)).T  # upper triangular
    kb = _blocks(k, block)
    levels = np.zeros((n, kb * block), dtype=np.uint8)
    scales = np.zeros((n, kb), dtype=np.float64)
    zeros = np.zeros((n, kb), dtype=np.float64)
    lazy = block * max(1, -(-lazy // block))  # a group never straddles two lazy batches
    for i1 in range(0, k, lazy):
        i2 = min(i1 + lazy, k)
        W1 = W[:, i1:i2].copy()
        err1 = np.zeros_like(W1)
        hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if col % block == 0:
                g = W1[:, i:i + block]
                if symmetric:  # onnxruntime's symmetric grid: the largest |w| lands exactly on level -8
                    scale = g[np.arange(n), np.abs(g).argmax(axis=1)] / -8.0
                    zero = np.full(n, 8.0)
                else:
                    lo, hi = np.minimum(g.min(axis=1), 0.0), np.maximum(g.max(axis=1), 0.0)
                    scale = (hi - lo) / maxq
                    scale[scale == 0] = 1.0
                    zero = np.clip(np.round(-lo / scale), 0, maxq)
                scale[scale == 0] = 1.0
                scales[:, col // block], zeros[:, col // block] = scale, zero
            q = np.clip(np.round(W1[:, i] / scale) + zero, 0, maxq)
            levels[:, col] = q
            err = (W1[:, i] - (q - zero) * scale) / hinv1[i, i]
            W1[:, i:] -= np.outer(err, hinv1[i, i:])
            err1[:, i] = err
        W[:, i2:] -= err1 @ Hinv[i1:i2, i2:]
    if kb * block > k:  # padding rows hold the zero level (they dequantise to 0)
        levels[:, k:] = zeros[:, -1:].astype(np.uint8)
    return PackedWeight(pack_levels(levels, 4, block), scales.astype(np.float32),
                        None if symmetric else pack_zero_points(zeros, 4), 4, block)


def quantize_weight(w: np.ndarray, algo: str, block: int, symmetric: bool, *, bits: int = 4,
                    hessian: np.ndarray | None = None) -> PackedWeight:
    """One FP32 weight [K, N] as MatMulNBits inputs, with `algo` (8 bits: always RTN)."""
    if bits == 8 or algo == "rtn":
        return rtn(w, block, symmetric, bits)
    if algo == "k_quant":
        return k_quant(w, block)
    if algo == "hqq":
        return hqq(w, block)
    if algo == "gptq":
        if hessian is None:
            raise ValueError("gptq needs the Hessian of the layer's calibration inputs")
        return gptq(w, hessian, block, symmetric)
    raise ValueError(f"unknown INT4 algorithm {algo!r} (known: {', '.join(ALGOS)})")


def unpack_levels(pw: PackedWeight) -> np.ndarray:
    """MatMulNBits' B -> integer levels [N, K_padded]."""
    n = pw.packed.shape[0]
    b = pw.packed.reshape(n, -1)
    if pw.bits == 8:
        return b.astype(np.int32)
    out = np.empty((n, b.shape[1] * 2), dtype=np.int32)
    out[:, ::2], out[:, 1::2] = b & 0x0F, b >> 4
    return out


def zero_levels(pw: PackedWeight) -> np.ndarray:
    """Zero points per block [N, k_blocks] as floats (the implied middle level when symmetric)."""
    n, kb = pw.scales.shape
    if pw.zeros is None:
        return np.full((n, kb), 2 ** (pw.bits - 1), dtype=np.float64)
    if pw.zeros.dtype != np.uint8:
        return pw.zeros.astype(np.float64)
    if pw.bits == 8:
        return pw.zeros.astype(np.float64)
    z = np.empty((n, pw.zeros.shape[1] * 2), dtype=np.float64)
    z[:, ::2], z[:, 1::2] = pw.zeros & 0x0F, pw.zeros >> 4
    return z[:, :kb]


def dequantize(pw: PackedWeight, k: int) -> np.ndarray:
    """The FP32 weight [K, N] MatMulNBits computes with (for sensitivity analysis and tests)."""
    n, kb = pw.scales.shape
    q = unpack_levels(pw).reshape(n, kb, pw.block).astype(np.float64)
    w = (q - zero_levels(pw)[..., None]) * pw.scales.astype(np.float64)[..., None]
    return np.ascontiguousarray(w.reshape(n, kb * pw.block)[:, :k].T.astype(np.float32))


def fake_quant(algo: str, block: int, symmetric: bool) -> Any:
    """A weight_fn for relman.compress.quantize.sensitivity: the weight as stored (its input axis
    given) replaced by its dequantised 4-bit round trip. GPTQ's needs calibration inputs per layer,
    so its ranking uses RTN (the error GPTQ starts from)."""
    algo = "rtn" if algo == "gptq" else algo

    def weight_fn(w: np.ndarray, in_axis: int) -> np.ndarray:
        kn = w if in_axis == 0 else w.T
        deq = dequantize(quantize_weight(np.ascontiguousarray(kn), algo, block, symmetric), kn.shape[0])
        return deq if in_axis == 0 else np.ascontiguousarray(deq.T)

    return weight_fn
