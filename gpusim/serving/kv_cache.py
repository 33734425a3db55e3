"""KV-cache sizing: bytes per token, per layer and for a batch, in bf16/fp16, fp8, int8 and int4.

Every layer keeps a K and a V vector of `head_dim` elements per KV head per token, so in a 16-bit format

    bytes per token per layer = 2 (K and V) x kv_heads x head_dim x 2 bytes
    bytes per token           = layers x bytes per token per layer

(Llama 3 8B, bf16: 2 x 8 x 128 x 2 = 4096 bytes per layer, x 32 layers = 131072 bytes per token).

Quantized formats store `bits` per element, packed (int4: two per byte), plus their scales, symmetric
(no zero points), scales in fp16 (2 bytes) except per-tensor scales (fp32):

    scale "tensor":  one fp32 scale for K and one for V per layer:          layers x 2 x 4 bytes in all
    scale "channel": one fp16 scale per channel of each KV head, K and V,   per sequence and layer:
                     2 x kv_heads x head_dim x 2 bytes per sequence per layer (KIVI-style keys, arXiv 2402.02750)
    scale "block":   one fp16 scale per G consecutive elements of a head vector, per token:
                     2 x kv_heads x ceil(head_dim / G) x 2 bytes per token per layer

    bytes per token per layer = 2 x kv_heads x ceil(head_dim x bits / 8)  [+ block scales]
    total bytes = batch x seq_len x bytes per token + batch x per-sequence bytes + fixed bytes

(Llama 3 8B, int4 with G = 32: 2 x 8 x (64 + 4 x 2) = 1152 bytes per token per layer.)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from gpusim.errors import InputError
from gpusim.problem import require_positive_ints
from gpusim.serving.models import ModelShape, get_model

#: Bits per stored element of each KV-cache dtype ("fp8" is e4m3, the format vLLM and TensorRT-LLM default to).
KV_DTYPE_BITS = {"bf16": 16, "fp16": 16, "fp8": 8, "fp8_e4m3": 8, "fp8_e5m2": 8, "int8": 8, "int4": 4}
SCALE_KINDS = ("none", "tensor", "channel", "block")
#: Default scale scheme per dtype: 16-bit formats need none; fp8 uses one per-tensor scale (vLLM's
#: kv_cache_dtype=fp8); int8 one scale per token and head (block of head_dim elements); int4 groups of 32
#: (KIVI, QServe use 32-128).
DEFAULT_SCALE = {"bf16": ("none", None), "fp16": ("none", None), "fp8": ("tensor", None),
                 "fp8_e4m3": ("tensor", None), "fp8_e5m2": ("tensor", None), "int8": ("block", None),
                 "int4": ("block", 32)}
SCALE_BYTES = 2          # fp16 scales (channel, block)
TENSOR_SCALE_BYTES = 4   # fp32 per-tensor scales


@dataclass(frozen=True, kw_only=True)
class KVFormat:
    """How one K or V element is stored: dtype and scale scheme (group_size for "block"; None = head_dim)."""

    dtype: str = "bf16"
    scale: str | None = None
    group_size: int | None = None

    def __post_init__(self) -> None:
        if self.dtype not in KV_DTYPE_BITS:
            raise InputError(f"kv dtype {self.dtype!r}: known {', '.join(KV_DTYPE_BITS)}")
        scale, group = DEFAULT_SCALE[self.dtype]
        if self.scale is None:
            object.__setattr__(self, "scale", scale)
            if self.group_size is None:
                object.__setattr__(self, "group_size", group)
        if self.scale not in SCALE_KINDS:
            raise InputError(f"kv scale {self.scale!r}: known {', '.join(SCALE_KINDS)}")
        if self.bits == 16 and self.scale != "none":
            raise InputError(f"kv dtype {self.dtype} is stored unscaled; scale must be none, not {self.scale!r}")
        if self.bits < 16 and self.scale == "none":
            raise InputError(f"kv dtype {self.dtype} needs a scale (tensor, channel or block)")
        if self.group_size is not None:
            require_positive_ints("kv format", group_size=self.group_size)
            if self.scale != "block":
                raise InputError(f"kv group_size={self.group_size} applies only to scale=block, not {self.scale}")

    @property
    def bits(self) -> int:
        return KV_DTYPE_BITS[self.dtype]

    def describe(self) -> str:
        if self.scale == "none":
            return self.dtype
        if self.scale == "block":
            return f"{self.dtype} (block scales, G={self.group_size or 'head_dim'})"
        return f"{self.dtype} ({self.scale} scales)"


@dataclass(frozen=True, kw_only=True)
class KVCacheSize:
    """KV-cache bytes of `batch` sequences of `seq_len` tokens of `model` stored as `fmt`."""

    model: ModelShape
    fmt: KVFormat
    batch: int = 1
    seq_len: int = 1

    def __post_init__(self) -> None:
        require_positive_ints("kv-cache", batch=self.batch, seq_len=self.seq_len)

    # ------------------------------------------------------------- per token
    @property
    def group_size(self) -> int | None:
        if self.fmt.scale != "block":
            return None
        return min(self.fmt.group_size or self.model.head_dim, self.model.head_dim)

    @property
    def data_bytes_per_token_per_layer(self) -> int:
        """2 x kv_heads x ceil(head_dim x bits / 8): the K and V elements themselves."""
        return 2 * self.model.kv_heads * math.ceil(self.model.head_dim * self.fmt.bits / 8)

    @property
    def scale_bytes_per_token_per_layer(self) -> int:
        """Block scales: 2 x kv_heads x ceil(head_dim / G) x 2 bytes; other schemes have none per token."""
        if self.fmt.scale != "block":
            return 0
        return 2 * self.model.kv_heads * math.ceil(self.model.head_dim / self.group_size) * SCALE_BYTES

    @property
    def bytes_per_token_per_layer(self) -> int:
        return self.data_bytes_per_token_per_layer + self.scale_bytes_per_token_per_layer

    @property
    def bytes_per_token(self) -> int:
        """Every layer counts."""
        return self.model.layers * self.bytes_per_token_per_layer

    # ------------------------------------------------------------- per sequence and fixed
    @property
    def bytes_per_sequence_overhead(self) -> int:
        """Per-channel scales: 2 x kv_heads x head_dim fp16 scales per layer for each sequence."""
        if self.fmt.scale != "channel":
            return 0
        return self.model.layers * 2 * self.model.kv_heads * self.model.head_dim * SCALE_BYTES

    @property
    def fixed_bytes(self) -> int:
        """Per-tensor scales: one fp32 for K and one for V per layer."""
        return self.model.layers * 2 * TENSOR_SCALE_BYTES if self.fmt.scale == "tensor" else 0

    @property
    def bytes_per_sequence(self) -> int:
        return self.seq_len * self.bytes_per_token + self.bytes_per_sequence_overhead

    @property
    def total_bytes(self) -> int:
        return self.batch * self.bytes_per_sequence + self.fixed_bytes

    @property
    def total_gib(self) -> float:
        return self.total_bytes / 2**30

    @property
    def formula(self) -> str:
        m = self.model
        per = f"2 x {m.kv_heads} x ceil({m.head_dim} x {self.fmt.bits} / 8)"
        if self.fmt.scale == "block":
            per += f" + 2 x {m.kv_heads} x ceil({m.head_dim} / {self.group_size}) x {SCALE_BYTES}"
        return f"{m.layers} layers x ({per}) = {self.bytes_per_token} bytes per token"

    def to_dict(self) -> dict:
        return {
            "model": self.model.name, "layers": self.model.layers, "heads": self.model.heads,
            "kv_heads": self.model.kv_heads, "head_dim": self.model.head_dim,
            "attention": self.model.attention_kind, "batch": self.batch, "seq_len": self.seq_len,
            "dtype": self.fmt.dtype, "bits": self.fmt.bits, "scale": self.fmt.scale, "group_size": self.group_size,
            "bytes_per_token_per_layer": self.bytes_per_token_per_layer,
            "data_bytes_per_token_per_layer": self.data_bytes_per_token_per_layer,
            "scale_bytes_per_token_per_layer": self.scale_bytes_per_token_per_layer,
            "bytes_per_token": self.bytes_per_token,
            "bytes_per_sequence_overhead": self.bytes_per_sequence_overhead,
            "fixed_bytes": self.fixed_bytes, "bytes_per_sequence": self.bytes_per_sequence,
            "total_bytes": self.total_bytes, "total_gib": self.total_gib, "formula": self.formula,
        }


def _model(model: ModelShape | str) -> ModelShape:
    return get_model(model) if isinstance(model, str) else model


def kv_cache_size(model: ModelShape | str, *, batch: int = 1, seq_len: int = 1, dtype: str = "bf16",
                  scale: str | None = None, group_size: int | None = None) -> KVCacheSize:
    """KV-cache bytes of `batch` x `seq_len` tokens; `model` is a ModelShape or a preset name."""
    return KVCacheSize(model=_model(model), fmt=KVFormat(dtype=dtype, scale=scale, group_size=group_size),
                       batch=batch, seq_len=seq_len)


def dtype_table(model: ModelShape | str, *, batch: int = 1, seq_len: int = 1) -> list[KVCacheSize]:
    """One row per KV dtype with its default scales (bf16, fp16, fp8, int8, int4)."""
    return [kv_cache_size(model, batch=batch, seq_len=seq_len, dtype=dt)
            for dt in ("bf16", "fp16", "fp8", "int8", "int4")]


@dataclass(frozen=True, kw_only=True)
class AttentionVariantRow:
    """One attention variant of a model: same layers, query heads, head dim and hidden size."""

    kind: str
    kv_heads: int
    size: KVCacheSize
    ratio_to_mha: float
    kv_projection_params_per_layer: int | None  # W_K and W_V: 2 x hidden x kv_heads x head_dim

    def to_dict(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if k != "size"}
        data.update(bytes_per_token=self.size.bytes_per_token, total_bytes=self.size.total_bytes)
        return data


def attention_variants(model: ModelShape | str = "llama3-8b", *, gqa_kv_heads: int | None = None, batch: int = 1,
                       seq_len: int = 1, dtype: str = "bf16") -> list[AttentionVariantRow]:
    """MHA, GQA and MQA at equal size: the model's layers, query heads and head dim, with kv_heads = heads,
    `gqa_kv_heads` (default: the model's own if it is GQA, else heads / 8) and 1. The KV bytes scale as
    kv_heads / heads: for 32 query heads, MQA is 1/32 of MHA and GQA-8 is 1/4. Only the K and V projections
    change size (reported), so the models are of equal size up to 2 x hidden x (heads - kv_heads) x head_dim
    parameters per layer."""
    base = _model(model)
    if gqa_kv_heads is None:
        gqa_kv_heads = base.kv_heads if 1 < base.kv_heads < base.heads else max(1, base.heads // 8)
    require_positive_ints("attention variants", gqa_kv_heads=gqa_kv_heads)
    if base.heads % gqa_kv_heads:
        raise InputError(f"attention variants: gqa_kv_heads={gqa_kv_heads} does not divide heads={base.heads}")
    rows, mha_bytes = [], None
    for kind, hk in (("MHA", base.heads), ("GQA", gqa_kv_heads), ("MQA", 1)):
        shape = base.with_kv_heads(hk, name=f"{base.name} as {kind}")
        size = KVCacheSize(model=shape, fmt=KVFormat(dtype=dtype), batch=batch, seq_len=seq_len)
        mha_bytes = mha_bytes or size.bytes_per_token
        proj = 2 * base.hidden_size * hk * base.head_dim if base.hidden_size else None
        rows.append(AttentionVariantRow(kind=kind, kv_heads=hk, size=size,
                                        ratio_to_mha=size.bytes_per_token / mha_bytes,
                                        kv_projection_params_per_layer=proj))
    return rows


def max_tokens_in(budget_bytes: int, model: ModelShape | str, dtype: str = "bf16", scale: str | None = None,
                  group_size: int | None = None) -> int:
    """How many tokens of KV cache fit in `budget_bytes` (per-token bytes only)."""
    per = kv_cache_size(model, dtype=dtype, scale=scale, group_size=group_size).bytes_per_token
    return int(budget_bytes // per)
