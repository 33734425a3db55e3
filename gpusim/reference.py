"""Float64 reference attention (forward and backward) that every kernel's functional run is checked against.

Layout [batch, heads, seq, head_dim]; K/V have kv_heads heads and query head h reads KV head
h // (heads // kv_heads). Causal masking is bottom-right aligned: query i sees keys j <= i + (kv_len - seq_len).
Rows with no visible key produce zeros (and a log-sum-exp of -inf).
"""

from __future__ import annotations

import numpy as np

from gpusim.problem import AttentionProblem


def random_inputs(problem: AttentionProblem, seed: int = 0, with_grad: bool = False) -> dict[str, np.ndarray]:
    """Random normal Q, K, V (and dO for backward) in float32, shaped for `problem`."""
    rng = np.random.default_rng(seed)
    b, h, hk, n, l, d = (problem.batch, problem.heads, problem.kv_heads, problem.seq_len, problem.kv_len,
                         problem.head_dim)
    data = {"Q": rng.standard_normal((b, h, n, d)), "K": rng.standard_normal((b, hk, l, d)),
            "V": rng.standard_normal((b, hk, l, d))}
    if with_grad:
        data["dO"] = rng.standard_normal((b, h, n, d))
    return {k: v.astype(np.float32) for k, v in data.items()}


def causal_mask(seq_len: int, kv_len: int) -> np.ndarray:
    """True where query i may see key j."""
    offset = kv_len - seq_len
    return np.arange(kv_len)[None, :] <= np.arange(seq_len)[:, None] + offset


def _expand_kv(x: np.ndarray, heads: int) -> np.ndarray:
    return np.repeat(x, heads // x.shape[1], axis=1)


def attention_forward(q, k, v, causal: bool = False, scale: float | None = None):
    """Returns (O, LSE) in float64; LSE is the natural-log log-sum-exp of the scaled scores per row."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    heads, d = q.shape[1], q.shape[-1]
    scale = d ** -0.5 if scale is None else scale
    k, v = _expand_kv(k, heads), _expand_kv(v, heads)
    s = np.einsum("bhnd,bhld->bhnl", q, k) * scale
    if causal:
        s = np.where(causal_mask(q.shape[2], k.shape[2]), s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    safe_m = np.where(np.isfinite(m), m, 0.0)
    p = np.exp(s - safe_m)
    denom = p.sum(axis=-1, keepdims=True)
    o = np.einsum("bhnl,bhld->bhnd", np.divide(p, denom, out=np.zeros_like(p), where=denom > 0), v)
    with np.errstate(divide="ignore"):
        lse = (np.log(denom) + safe_m)[..., 0]
    return o, lse


def attention_backward(q, k, v, d_out, causal: bool = False, scale: float | None = None):
    """Returns (dQ, dK, dV) in float64, with dK/dV summed over the query heads of each KV group."""
    q, k, v, d_out = (np.asarray(x, dtype=np.float64) for x in (q, k, v, d_out))
    heads, kv_heads, d = q.shape[1], k.shape[1], q.shape[-1]
    scale = d ** -0.5 if scale is None else scale
    ke, ve = _expand_kv(k, heads), _expand_kv(v, heads)
    o, lse = attention_forward(q, k, v, causal, scale)
    s = np.einsum("bhnd,bhld->bhnl", q, ke) * scale
    p = np.exp(s - np.where(np.isfinite(lse), lse, 0.0)[..., None])
    if causal:
        p = np.where(causal_mask(q.shape[2], k.shape[2]), p, 0.0)
    dv = np.einsum("bhnl,bhnd->bhld", p, d_out)
    dp = np.einsum("bhnd,bhld->bhnl", d_out, ve)
    delta = (d_out * o).sum(axis=-1, keepdims=True)
    ds = p * (dp - delta)
    dq = np.einsum("bhnl,bhld->bhnd", ds, ke) * scale
    dk = np.einsum("bhnl,bhnd->bhld", ds, q) * scale
    group = heads // kv_heads
    fold = lambda x: x.reshape(x.shape[0], kv_heads, group, *x.shape[2:]).sum(axis=2)  # noqa: E731
    return dq, fold(dk), fold(dv)


def relative_error(actual, expected) -> float:
    """||actual - expected|| / ||expected|| (Frobenius), the accuracy measure used in tests."""
    expected = np.asarray(expected, dtype=np.float64)
    diff = np.asarray(actual, dtype=np.float64) - expected
    norm = np.linalg.norm(expected)
    return float(np.linalg.norm(diff) / norm) if norm else float(np.linalg.norm(diff))


def attention_errors(problem: AttentionProblem, outputs: dict, inputs: dict) -> dict[str, float]:
    """relative_error of a kernel's outputs against the float64 reference: O and LSE for a forward pass,
    dQ, dK and dV for a backward one (both for fwd_bwd)."""
    errors = {}
    if problem.pass_ != "bwd":
        o, lse = attention_forward(inputs["Q"], inputs["K"], inputs["V"], problem.causal)
        errors.update(O=relative_error(outputs["O"], o), LSE=relative_error(outputs["LSE"], lse))
    if problem.pass_ != "fwd":
        grads = attention_backward(inputs["Q"], inputs["K"], inputs["V"], inputs["dO"], problem.causal)
        errors.update({name: relative_error(outputs[name], ref) for name, ref in zip(("dQ", "dK", "dV"), grads)})
    return errors

