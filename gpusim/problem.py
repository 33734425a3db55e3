"""Problem types: what a kernel is asked to compute. Frozen, keyword-only, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass

from gpusim.errors import InputError
from gpusim.hardware import DTYPE_BYTES

PASSES = ("fwd", "bwd", "fwd_bwd")
ATTENTION_DTYPES = ("bf16", "fp16", "fp8")


def require_positive_ints(owner: str, **values) -> None:
    """InputError unless every value is a positive whole number (message names owner and field)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{owner} field {name}={value!r}: must be a whole number")
        if value <= 0:
            raise InputError(f"{owner} field {name}={value}: must be positive")


@dataclass(frozen=True, kw_only=True)
class AttentionProblem:
    """softmax(Q K^T * scale [+ causal mask]) V for `batch` sequences.

    Q is [batch, heads, seq_len, head_dim]; K and V are [batch, kv_heads, kv_len, head_dim]. With
    kv_heads < heads (GQA; MQA when kv_heads == 1) query head h reads KV head h // (heads // kv_heads).
    Causal masking aligns the last query with the last key (bottom-right), so a decode step
    (seq_len = 1) sees every key.
    """

    batch: int
    heads: int
    seq_len: int
    head_dim: int
    kv_heads: int | None = None
    kv_len: int | None = None
    causal: bool = False
    dtype: str = "bf16"
    pass_: str = "fwd"

    def __post_init__(self) -> None:
        if self.kv_heads is None:
            object.__setattr__(self, "kv_heads", self.heads)
        if self.kv_len is None:
            object.__setattr__(self, "kv_len", self.seq_len)
        require_positive_ints("problem", batch=self.batch, heads=self.heads, seq_len=self.seq_len,
                  head_dim=self.head_dim, kv_heads=self.kv_heads, kv_len=self.kv_len)
        if self.heads % self.kv_heads:
            raise InputError(f"problem field kv_heads={self.kv_heads}: heads={self.heads} is not a multiple of it")
        if self.dtype not in ATTENTION_DTYPES:
            raise InputError(f"problem field dtype={self.dtype!r}: known {', '.join(ATTENTION_DTYPES)}")
        if self.pass_ not in PASSES:
            raise InputError(f"problem field pass={self.pass_!r}: known {', '.join(PASSES)}")
        if self.causal and self.seq_len > self.kv_len:
            raise InputError(f"problem: causal attention needs seq_len ({self.seq_len}) <= kv_len ({self.kv_len})")

    # ---------------------------------------------------------------- derived
    @property
    def group_size(self) -> int:
        """Query heads per KV head (1 for MHA)."""
        return self.heads // self.kv_heads

    @property
    def element_bytes(self) -> float:
        return DTYPE_BYTES[self.dtype]

    @property
    def scale(self) -> float:
        return self.head_dim ** -0.5

    def visible_pairs(self) -> int:
        """(query, key) pairs that are not masked, per (batch, head)."""
        n, l = self.seq_len, self.kv_len
        if not self.causal:
            return n * l
        offset = l - n  # query i sees keys 0 .. i + offset
        return n * (offset + 1) + n * (n - 1) // 2

    @property
    def fwd_flops(self) -> int:
        """Matrix-product FLOPs of the forward pass (QK^T and PV), counting only unmasked pairs."""
        return 4 * self.batch * self.heads * self.head_dim * self.visible_pairs()

    @property
    def flops(self) -> int:
        """FLOPs of the requested pass; backward counts 2.5x forward (the FlashAttention-2 convention)."""
        return {"fwd": self.fwd_flops, "bwd": int(2.5 * self.fwd_flops), "fwd_bwd": int(3.5 * self.fwd_flops)}[self.pass_]

    @property
    def q_bytes(self) -> int:
        return int(self.batch * self.heads * self.seq_len * self.head_dim * self.element_bytes)

    @property
    def kv_bytes(self) -> int:
        """Bytes of K plus V."""
        return int(2 * self.batch * self.kv_heads * self.kv_len * self.head_dim * self.element_bytes)

    @property
    def compulsory_bytes(self) -> int:
        """Read Q, K, V and write O once each (forward); the floor of any exact algorithm's HBM traffic."""
        fwd = 2 * self.q_bytes + self.kv_bytes
        if self.pass_ == "fwd":
            return fwd
        bwd = 3 * self.q_bytes + 2 * self.kv_bytes + self.q_bytes + self.kv_bytes  # Q,O,dO,K,V in; dQ,dK,dV out
        return bwd if self.pass_ == "bwd" else fwd + bwd

    def describe(self) -> str:
        gqa = f" kvh={self.kv_heads}" if self.kv_heads != self.heads else ""
        kv = f" L={self.kv_len}" if self.kv_len != self.seq_len else ""
        return (f"B={self.batch} H={self.heads}{gqa} N={self.seq_len}{kv} d={self.head_dim}"
                f"{' causal' if self.causal else ''} {self.dtype} {self.pass_}")


@dataclass(frozen=True, kw_only=True)
class CopyProblem:
    """Stream `bytes` from one buffer to another using `sms` SMs (None = all of them)."""

    bytes: int
    sms: int | None = None

    def __post_init__(self) -> None:
        require_positive_ints("copy", bytes=self.bytes)
        if self.sms is not None:
            require_positive_ints("copy", sms=self.sms)

    @property
    def flops(self) -> int:
        return 0

    def describe(self) -> str:
        return f"copy {self.bytes} B" + (f" on {self.sms} SMs" if self.sms else "")


@dataclass(frozen=True, kw_only=True)
class GemmProblem:
    """C[m, n] = A[m, k] @ B[k, n]."""

    m: int
    n: int
    k: int
    dtype: str = "bf16"

    def __post_init__(self) -> None:
        require_positive_ints("gemm", m=self.m, n=self.n, k=self.k)
        if self.dtype not in ("bf16", "fp16", "fp8"):
            raise InputError(f"gemm field dtype={self.dtype!r}: known bf16, fp16, fp8")

    @property
    def flops(self) -> int:
        return 2 * self.m * self.n * self.k

    def describe(self) -> str:
        return f"gemm {self.m}x{self.n}x{self.k} {self.dtype}"
