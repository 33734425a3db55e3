"""KV-cache quantization: fp8 (e4m3, e5m2), int8 and int4 with per-tensor, per-channel or per-block scales,
and the attention error it causes against the float64 reference.

Symmetric quantization (no zero points): scale = amax / qmax over each scale's group, code = x / scale
rounded to the format (int: round to nearest and clip to +-qmax; fp8: round through ml_dtypes), value =
code x scale with the scale stored in fp16 (rounded here too). qmax: int8 127, int4 7, fp8 e4m3 448,
fp8 e5m2 57344. Groups:
    tensor   one scale for the whole tensor (vLLM's fp8 KV cache with a per-tensor scale)
    channel  one scale per channel over all tokens of a (sequence, KV head) (KIVI's keys, arXiv 2402.02750)
    block    one scale per `group_size` consecutive elements of each token's head vector (KIVI's values,
             QServe, Atom use 32-128)
Bytes read per token and layer follow gpusim.serving.kv_cache (codes packed, fp16 scales).

`quantization_error` feeds dequantized K/V to gpusim.reference.attention_forward (float64, Q exact) and
reports the output's relative error; `kernel_quantization_error` runs the paged decode kernel's quantized
path in the functional interpreter (bf16 tiles after dequantization), so the kernel's own rounding counts.
Random normal K/V are benign; `key_outlier_scale` multiplies a few key channels (real keys have outlier
channels, KIVI Fig. 2), which is where per-channel scales beat per-token ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

from gpusim.errors import InputError
from gpusim.problem import AttentionProblem
from gpusim.reference import attention_forward, random_inputs, relative_error
from gpusim.serving.kv_cache import KV_DTYPE_BITS, KVFormat, KVCacheSize
from gpusim.serving.models import ModelShape

QMAX = {"int8": 127.0, "int4": 7.0, "fp8_e4m3": 448.0, "fp8_e5m2": 57344.0}
_FP8 = {"fp8_e4m3": ml_dtypes.float8_e4m3fn, "fp8_e5m2": ml_dtypes.float8_e5m2}
SCHEMES = ("tensor", "channel", "block")
#: Channels made outliers when key_outlier_scale != 1 (every 16th channel, a fixed choice).
OUTLIER_EVERY = 16


def _dtype(dtype: str) -> str:
    dtype = "fp8_e4m3" if dtype == "fp8" else dtype
    if dtype not in QMAX:
        raise InputError(f"kv quantization dtype {dtype!r}: known fp8_e4m3, fp8_e5m2, int8, int4")
    return dtype


def _fp16(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)


def _amax(x: np.ndarray, scheme: str, group_size: int | None) -> np.ndarray:
    """Per-group absolute maximum, shaped to broadcast against x grouped as [..., tokens, d/G, G]."""
    if scheme == "tensor":
        return np.abs(x).max().reshape((1,) * (x.ndim + 1))
    if scheme == "channel":
        return np.abs(x).max(axis=-2, keepdims=True)[..., None]          # [..., 1, d, 1]
    if scheme == "block":
        d = x.shape[-1]
        g = group_size or d
        if d % g:
            raise InputError(f"kv quantization: group_size={g} must divide head_dim={d}")
        grouped = x.reshape(*x.shape[:-1], d // g, g)
        return np.abs(grouped).max(axis=-1, keepdims=True)               # [..., tokens, d/G, 1]
    raise InputError(f"kv quantization scheme {scheme!r}: known {', '.join(SCHEMES)}")


def quantize(x, dtype: str, *, scheme: str = "block", group_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(codes, scales) of `x` ([..., tokens, head_dim]); codes in the format's own value range as float32,
    scales fp16-rounded: [..., tokens, d/G] for block, [..., 1, d] for channel, shape (1,) for tensor."""
    dtype = _dtype(dtype)
    x = np.asarray(x, dtype=np.float32)
    d = x.shape[-1]
    amax = _amax(x, scheme, group_size)
    scale = _fp16(np.where(amax > 0, amax / QMAX[dtype], 1.0))
    scale = np.where(scale > 0, scale, np.float32(2.0 ** -24))     # an fp16 underflow must not divide by zero
    if scheme == "channel":
        grouped = x[..., None]
    elif scheme == "block":
        g = group_size or d
        grouped = x.reshape(*x.shape[:-1], d // g, g)
    else:
        grouped = x[..., None]
    scaled = grouped / scale
    if dtype in _FP8:
        codes = scaled.astype(_FP8[dtype]).astype(np.float32)
    else:
        codes = np.clip(np.rint(scaled), -QMAX[dtype], QMAX[dtype]).astype(np.float32)
    codes = codes.reshape(x.shape)
    if scheme == "block":
        return codes, scale[..., 0]
    if scheme == "channel":
        return codes, scale[..., 0]
    return codes, scale.reshape(1)


def dequantize(codes, scales, *, scheme: str = "block") -> np.ndarray:
    codes = np.asarray(codes, dtype=np.float32)
    if scheme == "block":
        d, groups = codes.shape[-1], scales.shape[-1]
        return (codes.reshape(*codes.shape[:-1], groups, d // groups) * scales[..., None]).reshape(codes.shape)
    return codes * scales  # channel [..., 1, d] and tensor (1,) broadcast


def fake_quantize(x, dtype: str, *, scheme: str = "block", group_size: int | None = None) -> np.ndarray:
    """x after a quantize / dequantize round trip (16-bit dtypes: just rounded to the format)."""
    if dtype in ("bf16", "fp16"):
        return np.asarray(x, dtype=np.float32).astype(ml_dtypes.bfloat16 if dtype == "bf16" else np.float16).astype(np.float32)
    codes, scales = quantize(x, dtype, scheme=scheme, group_size=group_size)
    return dequantize(codes, scales, scheme=scheme)


@dataclass(frozen=True, kw_only=True)
class QuantErrorRow:
    dtype: str
    scheme: str
    group_size: int | None
    bits: int
    kv_bytes_per_token_per_layer: int
    kv_bytes_read: int           # K and V of the whole problem, with scales
    k_relative_error: float
    output_relative_error: float  # attention output against float64 with exact K/V

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _bytes(problem: AttentionProblem, dtype: str, scheme: str, group: int | None) -> tuple[int, int]:
    shape = ModelShape(name="problem", layers=1, heads=problem.heads, kv_heads=problem.kv_heads,
                       head_dim=problem.head_dim)
    fmt = KVFormat(dtype=dtype, scale="none" if KV_DTYPE_BITS[dtype] == 16 else scheme,
                   group_size=group if scheme == "block" and KV_DTYPE_BITS[dtype] < 16 else None)
    size = KVCacheSize(model=shape, fmt=fmt, batch=problem.batch, seq_len=problem.kv_len)
    return size.bytes_per_token_per_layer, size.total_bytes


def _inputs(problem: AttentionProblem, seed: int, key_outlier_scale: float) -> dict:
    x = random_inputs(problem, seed)
    if key_outlier_scale != 1.0:
        x["K"][..., ::OUTLIER_EVERY] *= key_outlier_scale
    return x


def quantization_error(problem: AttentionProblem, dtype: str, *, scheme: str = "block", group_size: int | None = None,
                       seed: int = 0, key_outlier_scale: float = 1.0) -> QuantErrorRow:
    """Attention output error when K and V are stored as `dtype` (Q and the arithmetic exact, float64)."""
    x = _inputs(problem, seed, key_outlier_scale)
    o_ref, _ = attention_forward(x["Q"], x["K"], x["V"], problem.causal)
    k = fake_quantize(x["K"], dtype, scheme=scheme, group_size=group_size)
    v = fake_quantize(x["V"], dtype, scheme=scheme, group_size=group_size)
    o, _ = attention_forward(x["Q"], k, v, problem.causal)
    sixteen = dtype in ("bf16", "fp16")
    per_token, total = _bytes(problem, dtype, scheme, group_size)
    return QuantErrorRow(dtype=dtype, scheme="none" if sixteen else scheme,
                         group_size=(group_size or problem.head_dim) if scheme == "block" and not sixteen else None,
                         bits=KV_DTYPE_BITS[dtype], kv_bytes_per_token_per_layer=per_token, kv_bytes_read=total,
                         k_relative_error=relative_error(k, x["K"]), output_relative_error=relative_error(o, o_ref))


def quantization_table(problem: AttentionProblem, *, group_size: int = 32, seed: int = 0,
                       key_outlier_scale: float = 1.0) -> list[QuantErrorRow]:
    """bf16, then fp8 e4m3/e5m2, int8 and int4 with per-tensor, per-channel and per-block (G) scales."""
    rows = [quantization_error(problem, "bf16", seed=seed, key_outlier_scale=key_outlier_scale)]
    for dtype in ("fp8_e4m3", "fp8_e5m2", "int8", "int4"):
        for scheme in SCHEMES:
            rows.append(quantization_error(problem, dtype, scheme=scheme, seed=seed,
                                           group_size=group_size if scheme == "block" else None,
                                           key_outlier_scale=key_outlier_scale))
    return rows


def quantized_kernel_inputs(problem: AttentionProblem, inputs: dict, options: dict) -> dict:
    """Inputs of `paged_decoding` with options["kv_dtype"] set: K/V (or their page pools) as codes plus
    K_scale/V_scale block scales of options["kv_group"] (default head_dim) elements."""
    from gpusim.kernels.paged_decoding import paged_inputs

    out = paged_inputs(problem, inputs, options)
    group = options.get("kv_group") or problem.head_dim
    for name in ("K", "V"):
        key = f"{name}_cache" if f"{name}_cache" in out else name
        codes, scales = quantize(out[key], options["kv_dtype"], scheme="block", group_size=group)
        out[key], out[f"{name}_scale"] = codes, scales
    return out


def kernel_quantization_error(problem: AttentionProblem, dtype: str, *, group_size: int | None = None,
                              hardware: str = "h200", options: dict | None = None, seed: int = 0,
                              key_outlier_scale: float = 1.0) -> float:
    """Relative error of the paged decode kernel's output (functional interpreter) with K/V quantized to
    `dtype` (block scales of `group_size`, default head_dim) against float64 attention on exact K/V."""
    from gpusim.simulate import run_functional_check

    opts = dict(options or {})
    opts.update(kv_dtype=_dtype(dtype))
    if group_size is not None:
        opts["kv_group"] = group_size
    x = _inputs(problem, seed, key_outlier_scale)
    o_ref, _ = attention_forward(x["Q"], x["K"], x["V"])
    out = run_functional_check("paged_decoding", problem, hardware, quantized_kernel_inputs(problem, x, opts), opts)
    return relative_error(out["O"], o_ref)
